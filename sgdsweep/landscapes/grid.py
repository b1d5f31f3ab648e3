"""The density grid shared by the Fokker–Planck solver and Monte Carlo histograms."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sgdsweep.errors import ConfigError


@dataclass(frozen=True)
class Grid1D:
    """``cells`` equal finite-volume cells on [lower, upper]; densities are per unit θ."""

    lower: float
    upper: float
    cells: int

    def __post_init__(self) -> None:
        if not (np.isfinite(self.lower) and np.isfinite(self.upper)):
            raise ConfigError(f"density_grid: bounds must be finite, got [{self.lower}, {self.upper}]")
        if not self.lower < self.upper:
            raise ConfigError(f"density_grid.lower: must be < density_grid.upper, "
                              f"got {self.lower} >= {self.upper}")
        if int(self.cells) != self.cells or self.cells < 3:
            raise ConfigError(f"density_grid.cells: must be an integer >= 3, got {self.cells!r}")

    @property
    def dx(self) -> float:
        return (self.upper - self.lower) / self.cells

    @property
    def edges(self) -> np.ndarray:
        """Cell faces, shape (cells + 1,)."""
        return np.linspace(self.lower, self.upper, self.cells + 1)

    @property
    def centres(self) -> np.ndarray:
        """Cell centres, shape (cells,)."""
        e = self.edges
        return 0.5 * (e[:-1] + e[1:])

    @property
    def end_centres(self) -> tuple[float, float]:
        """(first, last) of :attr:`centres`, bit for bit, without building the arrays."""
        # np.linspace's own arithmetic: edge i = i·step + lower, the last edge exactly upper.
        step = (self.upper - self.lower) / self.cells
        e = (self.lower, 1 * step + self.lower, (self.cells - 1) * step + self.lower, self.upper)
        return float(0.5 * (e[0] + e[1])), float(0.5 * (e[2] + e[3]))

    def refined(self, k: int) -> Grid1D:
        """The same interval with every cell split into ``k`` (cells·k cells)."""
        return Grid1D(self.lower, self.upper, self.cells * k)
