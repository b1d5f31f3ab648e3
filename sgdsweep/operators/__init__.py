"""Density operators: linear maps that carry a probability density on a grid forward
in time (Fokker–Planck generators in 1-D and 2-D, SGD's own one-step transfer
operator, the Gaussian step kernel), their stationary laws, relaxation times and
mean first-passage times.

Public entry points (1-D):

* :func:`~sgdsweep.operators.transfer.sgd_transfer` — SGD's transfer operator;
* :func:`~sgdsweep.operators.transfer.gauss_step` — the Gaussian step kernel (EM at dt = η);
* :class:`~sgdsweep.operators.transfer.TransferOperator` — evolve, stationary, relaxation, escape;
* :func:`~sgdsweep.operators.transfer2d.sgd_transfer_2d` — the 2-D operator (bilinear split);
* :mod:`~sgdsweep.operators.markov` — the same solves for any column-stochastic sparse matrix.
"""

from sgdsweep.operators.markov import Relaxation
from sgdsweep.operators.transfer import Escape, TransferOperator, gauss_step, sgd_transfer
from sgdsweep.operators.transfer2d import TransferOperator2D, sgd_transfer_2d

__all__ = ["Escape", "Relaxation", "TransferOperator", "TransferOperator2D", "gauss_step", "sgd_transfer",
           "sgd_transfer_2d"]
