"""Does a density grid hold a landscape's minima? (A check before computing.)

Chains that leave the density grid are lost (``lost_fraction``) and the Fokker–Planck
solver has zero-flux walls at its edges: a grid that cuts a well, or the region around a
minimum that minibatch noise spreads the chains over, answers a different question.
:func:`uncovered` names the minima of L the grid cuts, or whose stationary spread it cuts (a heuristic:
the local Ornstein–Uhlenbeck width of the SDE).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sgdsweep.landscapes.grid import Grid1D
from sgdsweep.landscapes.landscape import Landscape

#: Points per axis of the widened grid the minima are searched on (1-D, 2-D).
SEARCH_POINTS = {1: 3001, 2: 181}
#: A minimum of L must lie this fraction of the grid's width inside the grid.
MARGIN = 0.02
#: The grid must hold this many local standard deviations of the stationary law around it.
BULK_STD = 4.0


def _local_minima(axes: Sequence[np.ndarray], loss: np.ndarray) -> np.ndarray:
    """Points (k, d) where ``loss`` on the product grid is below all its neighbours
    (the outermost points excluded: a minimum there is not located)."""
    v = loss.reshape([len(a) for a in axes])
    inner = tuple(slice(1, -1) for _ in axes)
    is_min = np.ones(v[inner].shape, dtype=bool)
    for shift in np.ndindex(*(3,) * len(axes)):
        if all(s == 1 for s in shift):
            continue
        nb = tuple(slice(s, s + n - 2) for s, n in zip(shift, v.shape, strict=True))
        is_min &= v[inner] < v[nb]
    idx = np.argwhere(is_min) + 1
    return np.stack([axes[a][idx[:, a]] for a in range(len(axes))], axis=1) if len(idx) else \
        np.empty((0, len(axes)))


def _minima(land: Landscape, grids: Sequence[Grid1D]) -> np.ndarray:
    """Local minima of L on the grid widened by its width on each side, (k, d)."""
    axes = [np.linspace(g.lower - (g.upper - g.lower), g.upper + (g.upper - g.lower),
                        SEARCH_POINTS[land.dim]) for g in grids]
    pts = np.stack([m.ravel() for m in np.meshgrid(*axes, indexing="ij")], axis=1)
    return _local_minima(axes, land.evaluate(pts)["loss"])


def uncovered(land: Landscape, grids: Sequence[Grid1D], lr: float, noise_factor: float
              ) -> list[tuple[np.ndarray, str]]:
    """Local minima of L whose neighbourhood the density grid does not hold: (minimum, why).

    A minimum must lie :data:`MARGIN` of the grid's width inside it, and so must the bulk
    of the SDE's stationary law around it: ± :data:`BULK_STD` standard deviations of its
    local Ornstein–Uhlenbeck approximation, σ_a² = η Σ_b,aa / (2 H_aa) per axis (Σ_b the
    minibatch gradient covariance, H the Hessian of L there; skipped where H_aa ≤ 0).
    Minima are searched on the grid widened by its width on each side
    (:data:`SEARCH_POINTS` per axis); one beyond that, or flatter than the search
    resolution, is not found.
    """
    lo = np.array([g.lower for g in grids])
    hi = np.array([g.upper for g in grids])
    pad = MARGIN * (hi - lo)
    minima = _minima(land, grids)
    if not len(minima):
        return []
    ev = land.evaluate(minima)
    out = []
    for p, cov, hess in zip(minima, ev["cov"], ev["hess"], strict=True):
        if np.any(p < lo + pad) or np.any(p > hi - pad):
            out.append((p, "the minimum itself"))
            continue
        h = np.diag(hess)
        var = np.where(h > 0, lr * noise_factor * np.diag(cov) / (2 * np.where(h > 0, h, 1.0)), 0.0)
        half = BULK_STD * np.sqrt(var)
        if np.any(p - half < lo) or np.any(p + half > hi):
            out.append((p, f"its stationary spread ±{_point(half)}"))
    return out


def coverage_warnings(land: Landscape, grids: Sequence[Grid1D], lr: float, noise_factor: float) -> list[str]:
    """One line naming the minima of L the density grid cuts (empty if none); see :func:`uncovered`."""
    found = uncovered(land, grids, lr, noise_factor)
    if not found:
        return []
    span = " × ".join(f"[{g.lower:g}, {g.upper:g}]" for g in grids)
    where = "; ".join(f"θ = {_point(p)} ({why})" for p, why in found[:4])
    more = f" and {len(found) - 4} more" if len(found) > 4 else ""
    return [f"density_grid {span} cuts minima of {land.name} at lr = {lr:g}: {where}{more}. "
            "Chains that leave the grid are lost; set density_grid.lower/upper (or add "
            f"conf/domain/{land.name}.yaml)"]


def _point(p: np.ndarray) -> str:
    return f"{p[0]:.3g}" if len(p) == 1 else "(" + ", ".join(f"{v:.3g}" for v in p) + ")"
