"""What every Fokker–Planck operator offers, whatever its dimension, and its stationary law.

:class:`~sgdsweep.fokker_planck.fp1d.FokkerPlanck1D` and
:class:`~sgdsweep.fokker_planck.fp2d.FokkerPlanck2D` both satisfy :class:`FokkerPlanckOperator`,
so callers that evolve, solve or measure a density need not ask which one they hold.
Densities are cell averages of shape ``shape`` (one axis per grid), Σ p·cell_volume = 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    import scipy.sparse as sp

    from sgdsweep.landscapes.grid import Grid1D
    from sgdsweep.transfer.markov import Relaxation


@dataclass(frozen=True)
class Stationary:
    """Stationary density on the operator's cells (shape ``shape``), Σ p·cell_volume = 1.

    ``degenerate`` is True when the density collapses below the grid resolution (typically
    where D → 0) or the generator's null space is not one-dimensional; ``message`` says
    what happened. ``min_density`` is its most negative value (0 when p ≥ 0; < 0 only
    where the operator is not monotone); ``residual`` = ‖M p‖₁ / (‖M‖₁ ‖p‖₁).
    """

    density: np.ndarray
    degenerate: bool
    min_density: float = 0.0
    residual: float = 0.0
    message: str = ""


@dataclass(frozen=True)
class Monotonicity:
    """Where the scheme may lose positivity (measured, never corrected).

    ``faces_violating`` / ``faces`` count interior faces whose cross diffusion breaks the
    scheme's monotonicity bound; ``negative_offdiag`` counts off-diagonal entries of the
    generator below zero, ``min_offdiag`` is the most negative one (1/time; 0 when none).
    ``monotone`` is True when the generator is an M-matrix.
    """

    faces: int
    faces_violating: int
    negative_offdiag: int
    min_offdiag: float

    @property
    def fraction_violating(self) -> float:
        return self.faces_violating / self.faces if self.faces else 0.0

    @property
    def monotone(self) -> bool:
        return self.negative_offdiag == 0


class FokkerPlanckOperator(Protocol):
    """A finite-volume Fokker–Planck operator dp/dt = M p on a product of grids (Itô units:
    time t = η·step)."""

    grids: tuple[Grid1D, ...]
    shape: tuple[int, ...]
    monotonicity: Monotonicity

    @property
    def cell_volume(self) -> float: ...

    @property
    def generator(self) -> sp.csc_matrix:
        """M as a sparse (N × N) matrix over the flattened cells (columns sum to 0)."""

    def stationary(self) -> Stationary: ...

    def evolve(self, p0: Any, times: Any, dt: float) -> np.ndarray:
        """Implicit-Euler densities (S, *shape) at ``times`` from ``p0`` at t = 0."""

    def current(self, p: np.ndarray) -> Any:
        """The scheme's own face fluxes of density ``p``."""

    def centre_current(self, p: np.ndarray) -> np.ndarray:
        """The current at the cell centres: (…, *shape) in 1-D, (…, *shape, 2) in 2-D."""

    def relaxation(self) -> Relaxation:
        """The slowest decay towards the stationary law (rate 1/time, time)."""
