"""The store's on-disk shard format (encoder and reader), shared by the writers and the readers."""
