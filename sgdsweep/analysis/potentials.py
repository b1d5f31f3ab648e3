"""Effective potentials of 1-D stationary laws and the coordinate in which the noise is flat.

NumPy reductions on the last axis (the grid ``x``), mapped lazily by the ``ds.sgd`` accessor
(:meth:`~sgdsweep.analysis.accessor.SweepAccessor.effective_potential`,
:meth:`~sgdsweep.analysis.accessor.SweepAccessor.noise_coordinate`).

* Effective potential: −log p of a stationary density, beside its Itô decomposition
  −log p = ∫ G/D dθ + log D + const (D = η Σ_b / 2): the *drift part* ∫ G/D, the *noise
  part* log D, and what is left (the residual; zero up to the grid's O(dx²) for the Itô
  law, the whole difference for the others).
* Noise coordinate: φ(θ) = ∫ dθ / sqrt(2D), in which the Itô SDE dθ = −G dt + sqrt(2D) dW
  becomes, by Itô's lemma, dφ = −(G + D′/2) / sqrt(2D) dt + dW: unit noise everywhere.
  A density in θ becomes p_φ = p_θ · sqrt(2D) (∫ p_φ dφ = ∫ p_θ dθ).
* Centre densities: log p at the bottom of each basin (the zero of G, linear interpolation),
  for ratios such as wide-basin centre over narrow-basin centre; the Itô law's log p from its
  closed form, which stays finite where the density itself underflows.
"""

from __future__ import annotations

import numpy as np

from sgdsweep.analysis.reductions import basin_labels

#: Order of the parts along the last-but-one axis of :func:`potential_parts`.
POTENTIAL_PARTS = ("total", "drift_part", "noise_part", "residual")
#: Order of the fields along the last-but-one axis of :func:`noise_coordinate_fields`.
NOISE_COORDINATE_FIELDS = ("phi", "drift", "density")


def _rows(*arrays: np.ndarray) -> tuple[tuple[int, ...], list[np.ndarray]]:
    arrays = np.broadcast_arrays(*(np.asarray(a, dtype=np.float64) for a in arrays))
    lead = arrays[0].shape[:-1]
    return lead, [a.reshape(-1, a.shape[-1]) for a in arrays]


def potential_parts(density: np.ndarray, grad: np.ndarray, diffusion: np.ndarray, x: np.ndarray,
                    rel_floor: float = 1e-12) -> np.ndarray:
    """−log p, ∫ G/D (trapezoid from x[0]), log D and the residual, shape (..., 4, N).

    The additive constant of −log p is fixed so that the residual has zero p-weighted mean;
    cells where p < ``rel_floor``·max p (or D ≤ 0) are NaN in every part.
    """
    from scipy.integrate import cumulative_trapezoid  # here: scipy.integrate costs ~0.3 s to import

    lead, (p2, g2, d2) = _rows(density, grad, diffusion)
    x = np.asarray(x, dtype=np.float64)
    out = np.full((p2.shape[0], 4, x.size), np.nan)
    for i in range(p2.shape[0]):
        p, G, D = p2[i], g2[i], d2[i]
        if not (np.all(np.isfinite(p)) and np.all(np.isfinite(G)) and np.all(D > 0)) or p.max() <= 0:
            continue
        drift = cumulative_trapezoid(G / D, x, initial=0.0)
        noise = np.log(D)
        ok = p >= rel_floor * p.max()
        total = np.where(ok, -np.log(np.where(ok, p, 1.0)), np.nan)
        res = total - drift - noise
        w = np.where(ok, p, 0.0)
        c = np.sum(w[ok] * res[ok]) / np.sum(w[ok])
        out[i] = np.stack((total - c, drift, noise, res - c))
        out[i, :, ~ok] = np.nan
    return out.reshape((*lead, 4, x.size))


def noise_coordinate_fields(density: np.ndarray, grad: np.ndarray, diffusion: np.ndarray,
                            x: np.ndarray) -> np.ndarray:
    """φ(x) = ∫ dθ/sqrt(2D) (0 where D is largest), the drift −(G + D′/2)/sqrt(2D) of φ and p·sqrt(2D),
    shape (..., 3, N). D′ by central differences (one-sided at the ends). NaN where D ≤ 0."""
    lead, (p2, g2, d2) = _rows(density, grad, diffusion)
    x = np.asarray(x, dtype=np.float64)
    out = np.full((p2.shape[0], 3, x.size), np.nan)
    for i in range(p2.shape[0]):
        p, G, D = p2[i], g2[i], d2[i]
        if not (np.all(np.isfinite(G)) and np.all(D > 0)):
            continue
        s = np.sqrt(2.0 * D)
        # Integrated outwards from the noisiest cell (the same for every kind): where D
        # underflows in the tails φ reaches 1e25 and more, which would swamp the differences
        # of φ where the mass is if φ were anchored at the grid's end.
        k = int(np.argmax(D))
        inc = 0.5 * (1.0 / s[1:] + 1.0 / s[:-1]) * np.diff(x)
        phi = np.zeros(x.size)
        phi[k + 1:] = np.cumsum(inc[k:])
        phi[:k] = -np.cumsum(inc[:k][::-1])[::-1]
        out[i, 0] = phi
        out[i, 1] = -(G + 0.5 * np.gradient(D, x)) / s
        out[i, 2] = p * s
    return out.reshape((*lead, 3, x.size))


def ito_log_density(grad: np.ndarray, diffusion: np.ndarray, x: np.ndarray) -> np.ndarray:
    """log p of the Itô stationary law, −∫ G/D dθ − log D (trapezoid, unnormalised): finite
    where the stored density underflows to 0 (below 1e-308). NaN rows where D ≤ 0."""
    from scipy.integrate import cumulative_trapezoid  # here: scipy.integrate costs ~0.3 s to import

    lead, (g2, d2) = _rows(grad, diffusion)
    x = np.asarray(x, dtype=np.float64)
    out = np.full(g2.shape, np.nan)
    for i in range(g2.shape[0]):
        G, D = g2[i], d2[i]
        if np.all(np.isfinite(G)) and np.all(D > 0):
            out[i] = -cumulative_trapezoid(G / D, x, initial=0.0) - np.log(D)
    return out.reshape((*lead, x.size))


def centre_log_densities(log_density: np.ndarray, grad: np.ndarray, loss: np.ndarray, x: np.ndarray,
                         n_basins: int) -> np.ndarray:
    """log p at the bottom of each basin of L, shape (..., n_basins).

    The bottom is the lowest cell of the basin refined to the zero of G between it and its
    neighbour (linear interpolation of G, then of log p): second order in dx. NaN for basins
    the loss does not have or without an interior sign change of G.
    """
    lead, (p2, g2, l2) = _rows(log_density, grad, loss)
    x = np.asarray(x, dtype=np.float64)
    out = np.full((p2.shape[0], n_basins), np.nan)
    for i in range(p2.shape[0]):
        lp, G, L = p2[i], g2[i], l2[i]
        if not (np.all(np.isfinite(L)) and np.all(np.isfinite(G))):
            continue
        lab = basin_labels(L, x)
        for b in range(min(int(lab.max()) + 1, n_basins)):
            idx = np.nonzero(lab == b)[0]
            k = int(idx[np.argmin(L[idx])])
            for j in (k - 1, k):
                if 0 <= j < x.size - 1 and G[j] <= 0.0 < G[j + 1]:
                    w = -G[j] / (G[j + 1] - G[j])
                    out[i, b] = (1 - w) * lp[j] + w * lp[j + 1]
                    break
    return out.reshape((*lead, n_basins))


def deepest_pair_log_ratio(log_density: np.ndarray, grad: np.ndarray, loss: np.ndarray,
                           x: np.ndarray) -> np.ndarray:
    """log p(left) − log p(right) at the bottoms of the two deepest minima of L, shape (...).

    Bottoms are the upward zero crossings of G (linear interpolation, of log p too); the two
    with the lowest L are kept, whatever shallower basins lie between them. NaN with fewer
    than two minima.
    """
    lead, (p2, g2, l2) = _rows(log_density, grad, loss)
    out = np.full(p2.shape[0], np.nan)
    for i in range(p2.shape[0]):
        lp, G, L = p2[i], g2[i], l2[i]
        if not (np.all(np.isfinite(L)) and np.all(np.isfinite(G))):
            continue
        ks = np.nonzero((G[:-1] <= 0.0) & (G[1:] > 0.0))[0]
        if ks.size < 2:
            continue
        w = -G[ks] / (G[ks + 1] - G[ks])
        depth = (1 - w) * L[ks] + w * L[ks + 1]
        pick = np.sort(np.argsort(depth)[:2])
        val = (1 - w[pick]) * lp[ks[pick]] + w[pick] * lp[ks[pick] + 1]
        out[i] = val[0] - val[1]
    return out.reshape(lead)


def local_fit_residual(density: np.ndarray, *features: np.ndarray,
                       rel_floor: float = 1e-3) -> tuple[np.ndarray, float]:
    """−log p minus its p-weighted least-squares fit on (1, *features), and the rms residual.

    One cell's arrays of any common shape (2-D grids: (nx, ny)); cells with
    p < ``rel_floor``·max p or a non-finite feature are left out and NaN in the residual.
    """
    p = np.asarray(density, dtype=np.float64)
    F = [np.asarray(f, dtype=np.float64) for f in features]
    res = np.full(p.shape, np.nan)
    if not np.all(np.isfinite(p)) or p.max() <= 0:
        return res, np.nan
    use = p >= rel_floor * p.max()
    for f in F:
        use &= np.isfinite(f)
    if use.sum() <= len(F) + 1:
        return res, np.nan
    A = np.column_stack([np.ones(int(use.sum()))] + [f[use] for f in F])
    y = -np.log(p[use])
    w = np.sqrt(p[use] / p[use].sum())
    coef, *_ = np.linalg.lstsq(A * w[:, None], y * w, rcond=None)
    r = y - A @ coef
    res[use] = r
    return res, float(np.sqrt(np.sum(w**2 * r**2)))
