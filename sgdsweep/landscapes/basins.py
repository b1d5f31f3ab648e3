"""Basins of attraction of L in 1-D and the default escape threshold."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Basins:
    """Basins as consecutive intervals: names[k] spans (edges[k-1], edges[k]).

    ``edges`` are the interior boundaries (length B − 1); the outer basins extend
    to ±∞. ``barrier`` holds L at each interior boundary (NaN when named by config).
    """

    names: tuple[str, ...]
    edges: np.ndarray
    barrier: np.ndarray

    def index(self, theta: float) -> int:
        """Index of the basin holding θ (a point on a boundary belongs to the right)."""
        return int(np.searchsorted(self.edges, theta, side="right"))


def find_basins(x: np.ndarray, loss: np.ndarray) -> Basins:
    """Split the grid at the strict local maxima of L (interior points only).

    Plateaus count once, at their middle. Basins are named ``b0, b1, …`` from the left.
    """
    x, loss = np.asarray(x), np.asarray(loss)
    edges, barrier = [], []
    i = 1
    while i < len(loss) - 1:
        j = i
        while j + 1 < len(loss) - 1 and loss[j + 1] == loss[i]:
            j += 1
        if loss[i - 1] < loss[i] and loss[j + 1] < loss[i]:
            k = (i + j) // 2
            edges.append(x[k])
            barrier.append(loss[k])
        i = j + 1
    names = tuple(f"b{k}" for k in range(len(edges) + 1))
    return Basins(names, np.asarray(edges, dtype=float), np.asarray(barrier, dtype=float))


def named_basins(spec: tuple[tuple[str, float, float], ...]) -> Basins:
    """Basins from a landscape's ``basins`` entry: contiguous (name, lower, upper) intervals."""
    spec = tuple(sorted(spec, key=lambda b: b[1]))
    edges = np.asarray([b[2] for b in spec[:-1]], dtype=float)
    return Basins(tuple(b[0] for b in spec), edges, np.full(len(edges), np.nan))


def escape_threshold(basins: Basins, start: float) -> tuple[float, int] | None:
    """Default escape threshold: the barrier top next to the basin holding ``start``.

    Returns (threshold, direction), direction +1 when escape means crossing upwards.
    With boundaries on both sides the lower barrier is taken (the likelier exit);
    named basins without barrier heights take the nearer boundary. None if the
    starting basin has no boundary (a single basin).
    """
    k = basins.index(start)
    options = []
    if k > 0:
        options.append((basins.barrier[k - 1], start - basins.edges[k - 1], basins.edges[k - 1], -1))
    if k < len(basins.edges):
        options.append((basins.barrier[k], basins.edges[k] - start, basins.edges[k], +1))
    if not options:
        return None
    if all(np.isfinite(o[0]) for o in options):
        best = min(options, key=lambda o: (o[0], o[1]))
    else:
        best = min(options, key=lambda o: o[1])
    return float(best[2]), best[3]
