"""Landscapes: per-sample losses (terms, tilted, callables), the density grid, initial laws, minibatch
noise and its diagnostics, basins."""
