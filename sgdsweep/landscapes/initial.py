"""Initial distributions of θ: normal, uniform or a point mass (1-D or per-axis in 2-D)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from sgdsweep.errors import ConfigError
from sgdsweep.landscapes.grid import Grid1D

INIT_KINDS = ("normal", "uniform", "point")


@dataclass(frozen=True)
class Initial:
    """``normal``: N(mean, std²) per axis; ``uniform``: U[lower, upper]; ``point``: δ(mean).

    ``std`` is a standard deviation (not a variance). Vectors have one entry per axis.
    """

    kind: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    lower: tuple[float, ...]
    upper: tuple[float, ...]

    @classmethod
    def from_dict(cls, cfg: dict, dim: int) -> Initial:
        kind = cfg.get("kind", "normal")
        if kind not in INIT_KINDS:
            raise ConfigError(f"init.kind: unknown {kind!r} (known: {', '.join(INIT_KINDS)})")

        def vec(key: str, default: float) -> tuple[float, ...]:
            raw = cfg.get(key, default)
            raw = default if raw is None else raw
            try:
                arr = np.broadcast_to(np.asarray(raw, dtype=np.float64), (dim,))
            except (TypeError, ValueError):
                raise ConfigError(f"init.{key}: expected a number or {dim} numbers, got {raw!r}") from None
            if not np.all(np.isfinite(arr)):
                raise ConfigError(f"init.{key}: must be finite, got {raw!r}")
            return tuple(float(v) for v in arr)

        init = cls(kind, vec("mean", 0.0), vec("std", 0.0), vec("lower", 0.0), vec("upper", 0.0))
        if kind == "normal" and min(init.std) <= 0:
            raise ConfigError(f"init.std: must be > 0 for a normal initial law, got {init.std}")
        if kind == "uniform" and any(lo >= hi for lo, hi in zip(init.lower, init.upper, strict=True)):
            raise ConfigError("init.lower: must be < init.upper for a uniform initial law")
        return init

    def centre(self, axis: int = 0) -> float:
        """Where the mass starts along ``axis``: the mean (normal, point) or the midpoint of
        [lower, upper] (uniform; its ``mean`` is unused and defaults to 0)."""
        if self.kind == "uniform":
            return 0.5 * (self.lower[axis] + self.upper[axis])
        return self.mean[axis]

    def support(self, axis: int = 0) -> tuple[float, float]:
        """Interval holding all but ~1e-9 of the mass along ``axis`` (6 std for normal)."""
        if self.kind == "normal":
            return self.mean[axis] - 6 * self.std[axis], self.mean[axis] + 6 * self.std[axis]
        if self.kind == "uniform":
            return self.lower[axis], self.upper[axis]
        return self.mean[axis], self.mean[axis]

    def sample(self, chains: int, rng: np.random.Generator) -> np.ndarray:
        """Initial positions, shape (chains, d)."""
        d = len(self.mean)
        if self.kind == "normal":
            return np.asarray(self.mean) + np.asarray(self.std) * rng.standard_normal((chains, d))
        if self.kind == "uniform":
            return rng.uniform(np.asarray(self.lower), np.asarray(self.upper), size=(chains, d))
        return np.tile(np.asarray(self.mean), (chains, 1))

    def cell_masses(self, grid: Grid1D, axis: int = 0) -> np.ndarray:
        """Exact probability of each cell of a 1-D grid along ``axis`` (the marginal law of
        that component), shape (cells,)."""
        e = grid.edges
        a = axis
        if self.kind == "normal":
            z = (e - self.mean[a]) / (self.std[a] * math.sqrt(2.0))
            cdf = 0.5 * (1.0 + np.array([math.erf(v) for v in z]))
        elif self.kind == "uniform":
            cdf = np.clip((e - self.lower[a]) / (self.upper[a] - self.lower[a]), 0.0, 1.0)
        else:
            cdf = (e >= self.mean[a]).astype(float)
            # A point exactly on a face belongs to the cell on its right, as in the histograms.
        return np.diff(cdf)
