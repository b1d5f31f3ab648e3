"""What every one-step transfer operator offers, whatever its dimension.

:class:`~sgdsweep.transfer.transfer1d.TransferOperator1D` and
:class:`~sgdsweep.transfer.transfer2d.TransferOperator2D` both satisfy :class:`OneStepOperator`:
a column-stochastic ``matrix`` over the flattened cells of ``grids``, densities of shape
``shape`` per unit θ (1-D) or area (2-D), time t = η·step.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    import scipy.sparse as sp

    from sgdsweep.landscapes.grid import Grid1D
    from sgdsweep.transfer.markov import Relaxation


class OneStepOperator(Protocol):
    """One SGD step (or its Gaussian model) as a Markov matrix on a product of grids."""

    matrix: sp.csc_matrix
    lr: float
    minibatches: int
    diffusion_ratio: float

    @property
    def grids(self) -> tuple[Grid1D, ...]: ...

    @property
    def shape(self) -> tuple[int, ...]: ...

    @property
    def cell_volume(self) -> float: ...

    @property
    def refine(self) -> int:
        """How many times finer than the density grid the operator's grid is (per axis)."""

    def initial_masses(self, init: Any) -> np.ndarray: ...

    def coarsen(self, density: np.ndarray) -> np.ndarray:
        """Densities on the operator's grid averaged onto the density grid."""

    def evolve(self, m0: np.ndarray, steps: Any) -> np.ndarray: ...

    def stationary(self, m0: np.ndarray | None = None) -> np.ndarray: ...

    def relaxation(self) -> Relaxation: ...
