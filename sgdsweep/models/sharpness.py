"""Sharpness and the geometry of the gradient noise: top Hessian eigenpairs by Lanczos on exact
Hessian-vector products, and how the noise covariance Σ sits against the Hessian H."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.sparse.linalg import LinearOperator, eigsh

from sgdsweep.errors import ConfigError
from sgdsweep.landscapes.noise import diffusion
from sgdsweep.validate import integer, real


def top_eigenpairs(apply, d: int, k: int, tol: float = 0.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The k largest (algebraic) eigenvalues, descending, and eigenvectors (d, k) of the symmetric
    operator ``apply`` on R^d: ARPACK Lanczos (which='LA') with a seeded start vector; dense eigh
    from d columns when k ≥ d − 1 (ARPACK needs k < d)."""
    k = integer(k, "k", 1)
    if k > d:
        raise ConfigError(f"k: at most d = {d} eigenpairs, got {k}")
    if k >= d - 1:
        eye = np.eye(d)
        A = np.stack([apply(eye[j]) for j in range(d)], axis=1)
        w, V = np.linalg.eigh(0.5 * (A + A.T))
        return w[::-1][:k].copy(), V[:, ::-1][:, :k].copy()
    op = LinearOperator((d, d), matvec=lambda v: apply(np.ascontiguousarray(v.ravel())), dtype=np.float64)
    v0 = np.random.default_rng([seed, 0x1A2C05]).standard_normal(d)
    w, V = eigsh(op, k=k, which="LA", tol=tol, v0=v0)
    order = np.argsort(w)[::-1]
    return w[order], V[:, order]


def top_eigenvalue(model, theta, *, k: int = 1, tol: float = 0.0) -> np.ndarray:
    """The k largest Hessian eigenvalues of ``model`` at θ, descending (λ_max = ``[0]``), by Lanczos on
    exact HVPs (scipy eigsh, which='LA'; ``tol`` its relative accuracy, 0 = machine precision)."""
    t = np.ascontiguousarray(theta, dtype=np.float64)
    return top_eigenpairs(lambda v: model.hvp(t, v), model.d, k, real(tol, "tol"))[0]


@dataclass(frozen=True)
class NoiseGeometry:
    """How the SGD diffusion D = η f Σ / 2 (f the batch factor) sits against the Hessian H.

    ``eigvals`` λ_k of H, descending; ``ratios`` r_k = v_kᵀΣv_k / λ_k (nan where λ_k ≤ 0);
    ``temperatures`` T_k = v_kᵀ D v_k, the Gibbs temperature whose variance T_k/λ_k along v_k equals the
    Ornstein–Uhlenbeck variance D_kk/λ_k (exact when Σ commutes with H); ``temperature`` the
    least-squares T of a Gibbs law T·H⁻¹ fitted to those variances over the directions with λ_k > 0,
    minimising Σ_k (D_kk/λ_k − T/λ_k)²; ``spread`` max T_k / min T_k over those directions (1 when a
    single temperature fits); ``alignment`` tr(ΣH)/(‖Σ‖_F ‖H‖_F)."""

    alignment: float
    eigvals: np.ndarray
    ratios: np.ndarray
    temperatures: np.ndarray
    temperature: float
    spread: float


def noise_geometry(H, Sigma, *, lr: float = 1.0, factor: float = 1.0) -> NoiseGeometry:
    """:class:`NoiseGeometry` of the symmetric (d, d) ``H`` and ``Sigma``; ``lr`` η and ``factor`` the
    batch factor (1/b with replacement) set the temperatures' scale (D = η·factor·Σ/2)."""
    H = np.asarray(H, dtype=np.float64)
    S = np.asarray(Sigma, dtype=np.float64)
    if H.ndim != 2 or H.shape[0] != H.shape[1] or S.shape != H.shape:
        raise ConfigError(f"Sigma: expected H and Sigma of one square shape, got {H.shape} and {S.shape}")
    lam, V = np.linalg.eigh(0.5 * (H + H.T))
    lam, V = lam[::-1], V[:, ::-1]
    s_kk = np.einsum("ik,ij,jk->k", V, S, V)
    pos = lam > 1e-12 * max(abs(lam[0]), np.finfo(float).tiny)
    ratios = np.full(lam.shape, np.nan)
    ratios[pos] = s_kk[pos] / lam[pos]
    temps = diffusion(s_kk, real(lr, "lr", positive=True), real(factor, "factor", positive=True))
    if np.any(pos):
        inv = 1.0 / lam[pos]
        T = float(np.sum(temps[pos] * inv * inv) / np.sum(inv * inv))
        tp = temps[pos]
        spread = float(tp.max() / tp.min()) if tp.min() > 0 else np.inf
    else:
        T, spread = np.nan, np.nan
    norm = np.linalg.norm(S) * np.linalg.norm(H)
    alignment = float(np.trace(S @ H) / norm) if norm > 0 else np.nan
    return NoiseGeometry(alignment, lam, ratios, temps, T, spread)
