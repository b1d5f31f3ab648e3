"""Density operators: linear maps that carry a probability density on a grid forward
in time (Fokker–Planck generators in 1-D and 2-D, SGD's own one-step transfer
operator, the Gaussian step kernel), their stationary laws, relaxation times and
mean first-passage times."""
