"""Reading sweeps: ``open_sweep``, the ``ds.sgd`` accessor, distances, figures and the interactive
explorer."""
