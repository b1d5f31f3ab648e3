"""What the methods of one cell share, computed once per cell.

:class:`CellContext` wraps a validated :class:`~sgdsweep.cell.config.CellConfig` with
everything a fill function needs beyond it: the density grid and the landscape on it,
the basins, the escape threshold, the temperature, the refined Fokker–Planck grid with
one operator per (convention, drift-only) shared by the stationary references, the FP
methods and the exact escape time, and the initial law (one ensemble of initial
positions for every Monte Carlo method: common random numbers between methods).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property
from typing import Any

import numpy as np

from sgdsweep.cell.config import CellConfig
from sgdsweep.errors import ConfigError
from sgdsweep.fokker_planck.fp1d import FokkerPlanck1D
from sgdsweep.fokker_planck.fp2d import FokkerPlanck2D
from sgdsweep.fokker_planck.operator import FokkerPlanckOperator
from sgdsweep.landscapes.basins import Basins, escape_threshold, find_basins, named_basins
from sgdsweep.landscapes.grid import Grid1D
from sgdsweep.landscapes.noise import diffusion
from sgdsweep.methods.registry import get_method


class CellContext:
    """Shared, lazily computed pieces of one cell (see the module docstring)."""

    def __init__(self, cell: CellConfig):
        self.cell = cell
        self._operators: dict[tuple, FokkerPlanck1D | FokkerPlanck2D] = {}
        self._memo: dict[Any, Any] = {}

    def memo(self, key: Any, build: Callable[[], Any]) -> Any:
        """``build()`` once per cell under ``key`` (e.g. a method's operator shared by its
        stationary kind and its fill function)."""
        if key not in self._memo:
            self._memo[key] = build()
        return self._memo[key]

    # ------------------------------------------------------------------ geometry

    @property
    def dim(self) -> int:
        return self.cell.dim

    @property
    def grid(self) -> Grid1D:
        """The density grid of axis 0."""
        return self.cell.grids[0]

    @cached_property
    def points(self) -> np.ndarray:
        """Density-grid cell centres: (cells,) in 1-D, (nx·ny, 2) in 2-D (x major)."""
        g = self.cell.grids
        if self.dim == 1:
            return g[0].centres
        xs, ys = g[0].centres, g[1].centres
        return np.stack(np.meshgrid(xs, ys, indexing="ij"), axis=-1).reshape(-1, 2)

    @cached_property
    def land(self) -> dict[str, np.ndarray]:
        """``Landscape.evaluate`` on the density grid: loss, grad, cov."""
        return self.cell.landscape.evaluate(self.points)

    @cached_property
    def basins(self) -> Basins:
        """Basins of axis 0 (named in the landscape, else between the maxima of L); 2-D: one."""
        if self.dim != 1:
            return Basins(("all",), np.empty(0), np.empty(0))
        if self.cell.landscape.basins is not None:
            return named_basins(self.cell.landscape.basins)
        return find_basins(self.points, self.land["loss"])

    @cached_property
    def escape(self) -> tuple[float, int] | None:
        """(threshold, direction): configured, or the barrier top next to where the initial
        mass starts (:meth:`~sgdsweep.landscapes.initial.Initial.centre`); 2-D: None."""
        if self.dim != 1:
            return None
        start = self.cell.init.centre(0)
        thr = self.cell.escape_threshold
        if thr is not None:
            return thr, (1 if thr > start else -1)
        return escape_threshold(self.basins, start)

    @cached_property
    def temperature(self) -> float | None:
        """The Langevin / Gibbs temperature T (the methods page); None (no Gibbs reference) if
        the gradient noise vanishes on the grid and no method of the cell needs T."""
        cell = self.cell
        if cell.temperature is not None:
            return cell.temperature
        try:
            if self.dim == 1:
                from sgdsweep.fokker_planck.references import langevin_default_temperature

                return float(langevin_default_temperature(cell.landscape, self.grid, cell.lr,
                                                           cell.noise_factor))
            # As in 1-D: the SDE's diffusion at the grid's lowest loss, here tr(D)/2 (the mean
            # of D's eigenvalues); the grid mean of tr(D)/2 if D vanishes there.
            from sgdsweep.fokker_planck.nonequilibrium import default_temperature

            return default_temperature(self.land["loss"],
                                       diffusion(self.land["cov"], cell.lr, cell.noise_factor))
        except ConfigError:
            if any(get_method(m).needs_temperature for m in cell.methods):
                raise
            return None  # no noise anywhere: no Gibbs reference, nothing needs T

    # ------------------------------------------------------------------ Fokker–Planck

    @cached_property
    def fine(self) -> Grid1D:
        """The FP grid: ``fp.refine`` times finer than the density grid (narrow pits need it)."""
        return self.grid.refined(self.cell.fp_refine)

    def coarse(self, p: np.ndarray) -> np.ndarray:
        """Average a density on the FP grid back onto the density grid: in 1-D from
        :attr:`fine` (last axis); in 2-D the FP grid is the density grid, ``p`` is returned."""
        if self.dim == 2:
            return p
        return p.reshape(*p.shape[:-1], self.grid.cells, self.cell.fp_refine).mean(axis=-1)

    def operator(self, alpha: float, drift_only: bool = False, grid: Grid1D | None = None,
                 sme2: bool = False) -> FokkerPlanck1D:
        """The FP operator on ``grid`` (default :attr:`fine`), built once per cell; ``sme2``:
        with the second-order modified drift (``FokkerPlanck1D.from_landscape``)."""
        grid = self.fine if grid is None else grid
        key = (grid, alpha, drift_only, sme2)
        if key not in self._operators:
            c = self.cell
            self._operators[key] = FokkerPlanck1D.from_landscape(
                c.landscape, grid, c.lr, c.noise_factor, alpha=alpha, drift_only=drift_only,
                sme2=sme2)
        return self._operators[key]

    @cached_property
    def initial_masses(self) -> np.ndarray:
        """The initial law as probability per cell of :attr:`fine` (1-D), or per cell of the
        density grid (nx, ny) in 2-D (the product of the per-axis laws)."""
        if self.dim == 1:
            return self.cell.init.cell_masses(self.fine)
        gx, gy = self.cell.grids
        return np.outer(self.cell.init.cell_masses(gx, 0), self.cell.init.cell_masses(gy, 1))

    def fp_operator(self, alpha: float, drift_only: bool = False,
                    sme2: bool = False) -> FokkerPlanckOperator:
        """The cell's FP operator of convention ``alpha``: 1-D on :attr:`fine` (:meth:`operator`),
        2-D on the density grid itself (``fp.refine`` is 1-D only: a refined 2-D grid costs
        refine² cells); built once per cell; ``sme2`` as in :meth:`operator`."""
        if self.dim == 1:
            return self.operator(alpha, drift_only=drift_only, sme2=sme2)
        key = ("2d", alpha, drift_only, sme2)
        if key not in self._operators:
            c = self.cell
            self._operators[key] = FokkerPlanck2D.from_landscape(
                c.landscape, *c.grids, c.lr, c.noise_factor, alpha=alpha, drift_only=drift_only,
                sme2=sme2)
        return self._operators[key]

    @cached_property
    def fp_dt(self) -> float:
        """The FP time step: ``fp.dt``, else η / ``mc.sde_substeps``."""
        c = self.cell
        return c.fp_dt if c.fp_dt is not None else c.lr / c.sde_substeps

    # ------------------------------------------------------------------ Monte Carlo

    @cached_property
    def initial_positions(self) -> np.ndarray:
        """One initial ensemble (chains, d) for every Monte Carlo method."""
        rng = np.random.default_rng(np.random.SeedSequence([self.cell.seed, 0x1D17]))
        return self.cell.init.sample(self.cell.chains, rng)
