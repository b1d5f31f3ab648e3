"""Models with many parameters on real data: per-sample losses l_i(θ) = loss(f_θ(x_i), y_i)
of linear, logistic and one-hidden-layer models, datasets, reference minima and the exact
moment references of SGD on least squares."""
