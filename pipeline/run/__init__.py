"""Running a sweep: mapping ``run_cell`` over the grid with Dask, writing cells, store faults."""
