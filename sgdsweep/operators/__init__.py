"""Density operators: linear maps that carry a probability density on a grid forward
in time (Fokker–Planck generators in 1-D and 2-D, SGD's own one-step transfer
operator, the Gaussian step kernel), their stationary laws, relaxation times and
mean first-passage times.

Public entry points (1-D):

* :func:`~sgdsweep.operators.transfer.sgd_transfer` — SGD's transfer operator;
* :func:`~sgdsweep.operators.transfer.gauss_step` — the Gaussian step kernel (EM at dt = η);
* :class:`~sgdsweep.operators.transfer.TransferOperator` — evolve, stationary, relaxation, escape;
* :mod:`~sgdsweep.operators.markov` — the same solves for any column-stochastic sparse matrix.
"""

from sgdsweep.operators.markov import Relaxation
from sgdsweep.operators.transfer import Escape, TransferOperator, gauss_step, sgd_transfer

__all__ = ["Escape", "Relaxation", "TransferOperator", "gauss_step", "sgd_transfer"]
