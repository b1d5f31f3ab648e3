"""Distances between densities on a shared uniform grid (last axis = x, spacing dx).

Inputs are cell-average densities (Σ p·dx ≈ 1). Total variation and Hellinger use
the densities as given (so missing mass from lost chains counts as distance);
Wasserstein-1 and KL compare the *normalised* shapes, since both are defined for
probability measures of equal mass. All work on NumPy arrays of any leading shape.
"""

from __future__ import annotations

import numpy as np

#: Density floor (per unit θ) applied to q in KL(p‖q) so empty histogram cells stay finite.
KL_FLOOR = 1e-12


def total_variation(p: np.ndarray, q: np.ndarray, dx: float) -> np.ndarray:
    """TV(p, q) = ½ ∫|p − q| dθ, in [0, 1] for probability densities."""
    return 0.5 * np.abs(np.asarray(p) - np.asarray(q)).sum(axis=-1) * dx


def _normalised(p: np.ndarray, dx: float) -> np.ndarray:
    p = np.asarray(p, dtype=np.float64)
    mass = p.sum(axis=-1, keepdims=True) * dx
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(mass > 0, p / mass, np.nan)


def kl_divergence(p: np.ndarray, q: np.ndarray, dx: float, floor: float = KL_FLOOR) -> np.ndarray:
    """KL(p‖q) = ∫ p log(p / max(q, floor)) dθ of the normalised densities, in nats.

    Cells where p = 0 contribute 0. The floor bounds the divergence where q has
    no mass (e.g. an empty histogram cell): it is a stated regularisation, not
    an estimate of the true (infinite) divergence.
    """
    p, q = _normalised(p, dx), _normalised(q, dx)
    qf = np.maximum(q, floor)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0) / qf), 0.0)
    return terms.sum(axis=-1) * dx


def wasserstein1(p: np.ndarray, q: np.ndarray, dx: float) -> np.ndarray:
    """W1(p, q) = ∫ |F_p − F_q| dθ of the normalised densities (units of θ)."""
    p, q = _normalised(p, dx), _normalised(q, dx)
    cdf_gap = np.cumsum(p - q, axis=-1) * dx
    return np.abs(cdf_gap).sum(axis=-1) * dx


def hellinger(p: np.ndarray, q: np.ndarray, dx: float) -> np.ndarray:
    """Hellinger distance H(p, q) = sqrt(½ ∫ (√p − √q)² dθ), in [0, 1]."""
    p = np.clip(np.asarray(p, dtype=np.float64), 0.0, None)
    q = np.clip(np.asarray(q, dtype=np.float64), 0.0, None)
    return np.sqrt(0.5 * ((np.sqrt(p) - np.sqrt(q)) ** 2).sum(axis=-1) * dx)


DISTANCES = {
    "tv": total_variation,
    "kl": kl_divergence,
    "w1": wasserstein1,
    "hellinger": hellinger,
}
