"""Clusters: an embedded LocalCluster, an existing scheduler, SLURM/PBS via dask-jobqueue."""
