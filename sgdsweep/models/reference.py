"""The reference minimum θ* of a model landscape, with its Hessian spectrum and gradient-noise
covariance Σ* = Σ(θ*) — the point the SGD ensembles are measured against."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg as sla
from scipy.optimize import linprog, minimize
from scipy.sparse.linalg import LinearOperator, cg

from sgdsweep.errors import ConfigError
from sgdsweep.models.model import Model
from sgdsweep.models.sharpness import top_eigenpairs
from sgdsweep.validate import integer, real


@dataclass(frozen=True)
class Minimum:
    """θ* and what is known there. ``hessian_eigvals`` descending with ``hessian_eigvecs`` (d, k);
    ``noise_cov`` Σ* (d, d) when d ≤ dense_max else None, its top eigenpairs in ``noise_eigvals``
    (descending) and ``noise_eigvecs``; ``tolerance`` the absolute gradient-norm bound that was met."""

    theta: np.ndarray
    loss: float
    grad_norm: float
    hessian_eigvals: np.ndarray
    hessian_eigvecs: np.ndarray
    noise_cov: np.ndarray | None
    noise_eigvals: np.ndarray
    noise_eigvecs: np.ndarray
    solver: str
    iterations: int
    tolerance: float


def normal_equations(model: Model) -> tuple[np.ndarray, str]:
    """Least squares with l2: (XᵀX/n + l2·I) θ = Xᵀy/n; min-norm lstsq when the matrix is singular."""
    X, y = model.X, model.data.y
    A = X.T @ X / model.n + model.l2 * np.eye(model.d)
    rhs = X.T @ y / model.n
    try:
        c = sla.cho_factor(A)
        theta = sla.cho_solve(c, rhs)
        theta += sla.cho_solve(c, rhs - A @ theta)  # one refinement step against round-off
        return theta, "normal equations (Cholesky)"
    except np.linalg.LinAlgError:
        return np.linalg.lstsq(A, rhs, rcond=None)[0], "normal equations (min-norm lstsq, singular)"


def _dense_direction(model: Model, theta: np.ndarray, g: np.ndarray) -> tuple[np.ndarray, bool]:
    """−(H + μI)⁻¹ g, μ = 0 or the smallest Levenberg damping (doubling) that makes it positive definite."""
    H = model.hessian(theta)
    mu, scale, eye = 0.0, max(np.abs(H).max(), 1e-300), np.eye(model.d)
    while True:
        try:
            return -sla.cho_solve(sla.cho_factor(H + mu * eye), g), mu > 0
        except np.linalg.LinAlgError:
            mu = max(2.0 * mu, 1e-10 * scale)


def _cg_direction(model: Model, theta: np.ndarray, g: np.ndarray) -> tuple[np.ndarray, bool]:
    """Truncated Newton: CG on exact HVPs to relative residual min(0.5, √‖g‖); −g if that is no descent."""
    d = model.d
    op = LinearOperator((d, d), matvec=lambda v: model.hvp(theta, np.ascontiguousarray(v.ravel())),
                        dtype=np.float64)
    step, _ = cg(op, -g, rtol=min(0.5, float(np.sqrt(np.linalg.norm(g)))), maxiter=10 * d)
    if not np.all(np.isfinite(step)) or step @ g >= 0:
        return -g, True
    return step, False


def _newton(model: Model, theta: np.ndarray, target: float, direction=_dense_direction, name: str = "newton",
            maxiter: int = 200) -> tuple[np.ndarray, int, str]:
    """Newton steps along ``direction`` with Armijo backtracking; near round-off, where the loss no
    longer resolves the decrease, a step is taken if it shrinks ‖G‖."""
    damped = False
    for it in range(maxiter):
        g = model.grad(theta)
        gn = np.linalg.norm(g)
        if gn <= target:
            return theta, it, name + (" (damped steps)" if damped else "")
        step, was_damped = direction(model, theta, g)
        damped |= was_damped
        f0, slope, t = model.loss_value(theta), float(g @ step), 1.0
        for _ in range(60):
            trial = theta + t * step
            if model.loss_value(trial) <= f0 + 1e-4 * t * slope or np.linalg.norm(model.grad(trial)) < gn:
                break
            t *= 0.5
        else:
            raise ConfigError(f"tol: {name} found no descent step at |G| = {gn:.3g} (target {target:.3g})")
        theta = trial
    raise ConfigError(_failure(model, theta, name, maxiter, target))


def _failure(model: Model, theta: np.ndarray, solver: str, iters: int, target: float) -> str:
    gn, L = np.linalg.norm(model.grad(theta)), model.loss_value(theta)
    if model.loss == "cross_entropy" and model.l2 == 0.0:
        return (f"landscape.l2: {solver} did not reach |G| <= {target:.3g} in {iters} iterations (|G| = "
                f"{gn:.3g}, L = {L:.3g}, |θ| = {np.linalg.norm(theta):.3g}): without l2 the cross-entropy "
                f"has no minimum when the data are separable (L → 0 as |θ| → ∞); use l2 > 0")
    return (f"tol: {solver} did not reach |G| <= {target:.3g} in {iters} iterations (|G| = {gn:.3g}, "
            f"L = {L:.3g})")


def _separable(model: Model) -> bool:
    """Whether some θ gives every sample a margin (2y_i − 1) x_iᵀθ ≥ 1 (a feasibility LP): then the
    linear cross-entropy without l2 decreases to 0 along that θ and has no minimum."""
    A = -(2.0 * model.data.y - 1.0)[:, None] * model.X
    res = linprog(np.zeros(model.d), A_ub=A, b_ub=-np.ones(model.n), bounds=(None, None), method="highs")
    return res.status == 0


def check_isolated(model: Model) -> None:
    """ConfigError (field ``landscape.l2``) for an MLP with more parameters than samples and no
    l2: it can fit its n data with d − n directions to spare, so its minima are not isolated
    (the Hessian at a perfect fit, (1/n) Σ ∇f_i ∇f_iᵀ times the loss's curvature, has rank ≤ n < d)
    and no solver reaches a reference θ* with ‖G‖ at round-off: L-BFGS and Newton–CG creep
    along the valley for hours (digits, 32 hidden units: ‖G‖ stalls near 1.6e-4 while L falls
    towards 0). Refused before any solve."""
    if model.kind == "mlp" and model.l2 == 0.0 and model.d > model.n:
        raise ConfigError(f"landscape.l2: an MLP with more parameters than samples (d = {model.d}, n = "
                          f"{model.n}) and no l2 has no isolated minimum (its minima form a valley of "
                          f"dimension >= d − n), so no reference θ* exists; use l2 > 0, fewer hidden "
                          f"units or more samples")


def _no_minimum(model: Model, why: str) -> ConfigError:
    return ConfigError(f"landscape.l2: without l2 the cross-entropy has no minimum when the data are "
                       f"separable ({why}; L → 0 as |θ| → ∞); use l2 > 0")


def _quasi_newton(model: Model, theta: np.ndarray, target: float) -> tuple[np.ndarray, int, str]:
    """L-BFGS to the tolerance or its stall, then truncated Newton (CG on exact HVPs) to finish."""
    fun = lambda t: (model.loss_value(t), model.grad(t))  # noqa: E731
    res = minimize(fun, theta, jac=True, method="L-BFGS-B",
                   options={"maxiter": 20000, "maxcor": 20, "gtol": 0.0, "ftol": 0.0})
    theta, iters, solver = res.x, int(res.nit), "l-bfgs"
    if np.linalg.norm(model.grad(theta)) > target:
        theta, more, solver = _newton(model, theta, target, _cg_direction, "l-bfgs + newton-cg")
        iters += more
    return theta, iters, solver


def find_minimum(model: Model, theta0=None, *, tol: float = 1e-10, k: int | None = None,
                 dense_max: int = 300) -> Minimum:
    """θ* with ‖G(θ*)‖ ≤ tol·max(1, ‖G(θ0)‖) (θ0 defaults to ``model.init(0)``).

    Linear regression: the normal equations with l2, exactly. Logistic regression and the MLP:
    Newton on the dense Hessian for d ≤ ``dense_max``, L-BFGS (finished by truncated Newton on
    exact HVPs) beyond. The MLP's minimum is the local one Newton reaches from θ0.
    Spectra: all d Hessian eigenpairs (or the top ``k``) densely for d ≤ dense_max, the top ``k``
    (default 10) by Lanczos beyond; Σ* likewise (dense, or Lanczos on θ ↦ Σ*v from the per-sample
    gradients). ConfigError (field ``tol`` or ``landscape.l2``) if no minimum is reached; a cross-entropy
    without l2 is checked for separable data first (logistic: an LP; MLP: L driven below 1e-8), an MLP
    with d > n and no l2 refused at once (:func:`check_isolated`).
    """
    tol = real(tol, "tol", positive=True)
    dense_max = integer(dense_max, "dense_max", 1)
    check_isolated(model)
    d = model.d
    theta = model.init(0) if theta0 is None else model._theta(theta0, "theta0").copy()
    target = tol * max(1.0, float(np.linalg.norm(model.grad(theta))))
    separable_risk = model.loss == "cross_entropy" and model.l2 == 0.0
    if separable_risk and model.kind == "logistic_regression" and _separable(model):
        raise _no_minimum(model, "a linear program finds a separating θ")
    if model.kind == "linear_regression":
        theta, solver = normal_equations(model)
        iterations = 0
        if np.linalg.norm(model.grad(theta)) > target:
            raise ConfigError(_failure(model, theta, solver, 0, target))
    elif d <= dense_max:
        theta, iterations, solver = _newton(model, theta, target)
    else:
        theta, iterations, solver = _quasi_newton(model, theta, target)

    if separable_risk and model.loss_value(theta) < 1e-8:
        raise _no_minimum(model, f"the solver drove L to {model.loss_value(theta):.3g}")
    dense = d <= dense_max
    kk = (d if dense else min(10, d)) if k is None else integer(k, "k", 1)
    kk = min(kk, d)
    if dense:
        w, V = np.linalg.eigh(model.hessian(theta))
        h_vals, h_vecs = w[::-1][:kk].copy(), V[:, ::-1][:, :kk].copy()
        Sigma = model.noise_cov(theta)
        w, V = np.linalg.eigh(Sigma)
        s_vals, s_vecs = w[::-1][:kk].copy(), V[:, ::-1][:, :kk].copy()
    else:
        h_vals, h_vecs = top_eigenpairs(lambda v: model.hvp(theta, v), d, kk)
        g = model.sample_grads(theta)
        g -= g.mean(axis=0)
        s_vals, s_vecs = top_eigenpairs(lambda v: g.T @ (g @ v) / model.n, d, kk)
        Sigma = None
    return Minimum(theta, model.loss_value(theta), float(np.linalg.norm(model.grad(theta))), h_vals, h_vecs,
                   Sigma, s_vals, s_vecs, solver, iterations, target)
