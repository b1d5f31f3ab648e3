"""The sweep store: template, regions, integrity checks, the lock and where the store lives."""
