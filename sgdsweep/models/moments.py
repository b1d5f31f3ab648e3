"""Exact moments of SGD on least squares (linear regression, squared loss, any l2), the Itô SDE's
stationary moments, the Gibbs reference and the mean-square stability edge.

With A_i = x_i x_iᵀ + l2·I, Ā = mean A_i, C = Ā − l2·I, ξ_i = ∇l_i(θ*) (Σ_i ξ_i = 0) and e = θ − θ*,
one SGD step with minibatch B is exactly e' = (I − ηA_B) e − η ξ_B, B independent of e. Hence
m = E[e] and M = E[eeᵀ] (second moment about θ*, not the covariance) obey

    m' = (I − ηĀ) m
    M' = M − η(ĀM + MĀ) + η² E_B[A_B M A_B] + η² c (P(m) + P(m)ᵀ + S)

with, for b draws with replacement (c = 1/b) or a uniform b-subset (c = (n − b)/(b(n − 1))):

* E_B[A_B M A_B] = ĀMĀ + c(K(M) − ĀMĀ), K(M) = (1/n) Σ A_i M A_i. Expanding A_i, the l2 terms of
  K and of ĀMĀ are equal, so K(M) − ĀMĀ = K₀(M) − CMC with K₀(M) = (1/n) Σ (x_iᵀMx_i) x_i x_iᵀ:
  the deterministic l2 pull adds no noise;
* E_B[A_B m ξ_Bᵀ] = c P(m), P(m) = (1/n) Σ A_i m ξ_iᵀ (the pairs i ≠ j average to −P/(n − 1) because
  Σ ξ_j = 0) — the transient's cross term, zero once m = 0;
* E_B[ξ_B ξ_Bᵀ] = c S, S = (1/n) Σ ξ_i ξ_iᵀ.

Stationary M: L(M) = ηcS with L(M) = ĀM + MĀ − γ ĀMĀ − ηc (K₀(M) − CMC), γ = η for SGD (from
M = M − ηL(M) + η²cS) and γ = 0 for the Itô SDE dθ = −G dt + sqrt(ηΣ_b(θ)) dW, whose second moment
obeys dM/dt = −ĀM − MĀ + ηc(K(M) − ĀMĀ + S). L is self-adjoint on matrices (Frobenius); it is
positive definite exactly when the moment dynamics are stable.

Mean-square edge: the step map of M is T = I − ηL₀ + η²L₁ with L₀(M) = ĀM + MĀ and
L₁(M) = E_B[A_B M A_B] ⪰ 0. T maps PSD matrices to PSD matrices, so its spectral radius is its
largest eigenvalue 1 − η μ_min(L₀ − ηL₁); it reaches 1 first (and stays ≥ 1 beyond) at
η* = 1/ν_max, ν_max the largest eigenvalue of the pencil L₁ v = ν L₀ v. On v = u uᵀ (u the top
eigenvector of Ā) ν ≥ λ_max/2, so η* ≤ 2/λ_max, with equality for full batches (c = 0).

Random reshuffling draws the batch from the epoch's permutation: no iid recursion in e alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg as sla
from scipy.sparse.linalg import LinearOperator, cg, eigsh

from sgdsweep.errors import ConfigError
from sgdsweep.landscapes.noise import batch_noise_factor
from sgdsweep.models.model import Model
from sgdsweep.models.reference import normal_equations
from sgdsweep.validate import integer, real

#: d up to which the d²×d² operators are built densely by default.
DENSE_MAX = 40


@dataclass(frozen=True)
class LeastSquares:
    """What the exact recursions need of a linear-regression model: θ*, X (n, d), ξ (n, d), S, Ā's
    eigendecomposition Ā = Q diag(lam) Qᵀ, and l2."""

    theta_star: np.ndarray
    X: np.ndarray
    xi: np.ndarray
    S: np.ndarray
    lam: np.ndarray
    Q: np.ndarray
    l2: float

    @property
    def n(self) -> int:
        return self.X.shape[0]

    @property
    def d(self) -> int:
        return self.X.shape[1]

    @property
    def Abar(self) -> np.ndarray:
        return (self.Q * self.lam) @ self.Q.T

    @property
    def C(self) -> np.ndarray:
        return self.X.T @ self.X / self.n


def least_squares(model: Model) -> LeastSquares:
    if model.kind != "linear_regression":
        raise ConfigError(f"landscape.kind: exact SGD moments need linear_regression, got {model.kind!r}")
    theta, _ = normal_equations(model)
    X = model.X
    xi = model.sample_grads(theta)
    A = X.T @ X / model.n + model.l2 * np.eye(model.d)
    lam, Q = np.linalg.eigh(A)
    return LeastSquares(theta, X, xi, xi.T @ xi / model.n, lam, Q, float(model.l2))


def _factor(ls: LeastSquares, b, sampling: str) -> float:
    if sampling == "reshuffle":
        raise ConfigError("sampling: 'reshuffle' has no exact iid moment recursion (the batch depends on "
                          "the epoch's permutation); use with_replacement or without_replacement")
    return batch_noise_factor(ls.n, integer(b, "b", 1), sampling)


def _check_positive(ls: LeastSquares) -> None:
    if ls.lam[0] <= 1e-13 * ls.lam[-1]:
        raise ConfigError(f"landscape.l2: Ā is singular (λ_min = {ls.lam[0]:.3g}, λ_max = {ls.lam[-1]:.3g}): "
                          f"no stationary law along its null directions; use l2 > 0 or n ≥ d independent "
                          f"rows")


def _K0(X: np.ndarray, M: np.ndarray) -> np.ndarray:
    """K₀(M) = (1/n) Σ (x_iᵀMx_i) x_i x_iᵀ in O(n d²)."""
    q = np.einsum("ij,ij->i", X @ M, X)
    return (X.T * q) @ X / X.shape[0]


@dataclass(frozen=True)
class Moments:
    """Exact SGD moments about θ* at steps 0..steps: ``mean`` (steps+1, d) = E[θ − θ*],
    ``second`` (steps+1, d, d) = E[(θ − θ*)(θ − θ*)ᵀ]; ``cov`` the covariance."""

    theta_star: np.ndarray
    mean: np.ndarray
    second: np.ndarray

    @property
    def cov(self) -> np.ndarray:
        return self.second - np.einsum("si,sj->sij", self.mean, self.mean)


def sgd_moments(model: Model, lr: float, b: int, sampling: str, m0, M0, steps: int) -> Moments:
    """The exact transient of E[e], E[eeᵀ] (e = θ − θ*) under SGD from m0 = E[e₀], M0 = E[e₀e₀ᵀ]
    (module docstring), O(n d²) per step."""
    ls = least_squares(model)
    eta, c = real(lr, "lr", positive=True), _factor(ls, b, sampling)
    steps = integer(steps, "steps", 0)
    d, X, xi = ls.d, ls.X, ls.xi
    m = np.array(m0, dtype=np.float64)
    M = np.array(M0, dtype=np.float64)
    if m.shape != (d,):
        raise ConfigError(f"m0: expected shape ({d},), got {m.shape}")
    if M.shape != (d, d):
        raise ConfigError(f"M0: expected shape ({d}, {d}), got {M.shape}")
    A, C, xibar = ls.Abar, ls.C, xi.mean(axis=0)
    means, seconds = [m.copy()], [M.copy()]
    for _ in range(steps):
        AMA = A @ M @ A
        E_AMA = AMA + c * (_K0(X, M) - C @ M @ C)
        P = (X.T * (X @ m)) @ xi / ls.n + ls.l2 * np.outer(m, xibar)
        M = M - eta * (A @ M + M @ A) + eta * eta * (E_AMA + c * (P + P.T + ls.S))
        m = m - eta * (A @ m)
        means.append(m.copy())
        seconds.append(M.copy())
    return Moments(ls.theta_star, np.array(means), np.array(seconds))


def _dense_L(ls: LeastSquares, gamma: float, delta: float) -> np.ndarray:
    """L as a d²×d² matrix on row-major vec(M) (vec(AMB) = (A ⊗ Bᵀ) vec M)."""
    d, X = ls.d, ls.X
    A, C, eye = ls.Abar, ls.C, np.eye(d)
    Z = np.einsum("ia,ib->iab", X, X).reshape(ls.n, d * d)
    return (np.kron(A, eye) + np.kron(eye, A) - gamma * np.kron(A, A)
            - delta * (Z.T @ Z / ls.n - np.kron(C, C)))


def _krylov_solve(ls: LeastSquares, gamma: float, delta: float, rhs: np.ndarray, rtol: float) -> np.ndarray:
    """L(M) = rhs by preconditioned CG in Ā's eigenbasis, where ĀM + MĀ − γĀMĀ + δCMC is diagonal;
    the Jacobi preconditioner also takes K₀'s diagonal. Matvec O(n d²)."""
    d, lam, Q, l2 = ls.d, ls.lam, ls.Q, ls.l2
    Xt = ls.X @ Q
    mu = lam - l2
    diag = (lam[:, None] + lam[None, :] - gamma * np.outer(lam, lam) + delta * np.outer(mu, mu))
    Xt2 = Xt * Xt
    precond = diag - delta * (Xt2.T @ Xt2) / ls.n

    def matvec(v):
        Mt = v.reshape(d, d)
        return (diag * Mt - delta * _K0(Xt, Mt)).ravel()

    op = LinearOperator((d * d, d * d), matvec=matvec, dtype=np.float64)
    if np.any(precond <= 0):
        raise ConfigError("lr: at or beyond the mean-square edge: the stationary second moment does not "
                          "exist")
    pre = LinearOperator((d * d, d * d), matvec=lambda v: v / precond.ravel(), dtype=np.float64)
    b = (Q.T @ rhs @ Q).ravel()
    x, info = cg(op, b, rtol=rtol, atol=0.0, maxiter=20 * d * d, M=pre)
    if info != 0:
        raise ConfigError(f"lr: CG did not converge (info {info}); η may be at or beyond the mean-square "
                          f"edge")
    Mt = x.reshape(d, d)
    return Q @ (0.5 * (Mt + Mt.T)) @ Q.T


def _stationary(model: Model, lr, b, sampling: str, gamma_per_eta: float, method: str, rtol: float,
                what: str) -> np.ndarray:
    ls = least_squares(model)
    _check_positive(ls)
    eta, c = real(lr, "lr", positive=True), _factor(ls, b, sampling)
    gamma, delta = gamma_per_eta * eta, eta * c
    rhs = eta * c * ls.S
    if method not in ("auto", "dense", "krylov"):
        raise ConfigError(f"method: unknown {method!r} (known: auto, dense, krylov)")
    if method == "krylov" or (method == "auto" and ls.d > DENSE_MAX):
        M = _krylov_solve(ls, gamma, delta, rhs, rtol)
    else:
        L = _dense_L(ls, gamma, delta)
        try:
            fac = sla.cho_factor(0.5 * (L + L.T))
        except np.linalg.LinAlgError:
            raise ConfigError(f"lr: η = {eta:g} is at or beyond the {what} mean-square edge: the stationary "
                              f"second moment does not exist") from None
        M = sla.cho_solve(fac, rhs.ravel()).reshape(ls.d, ls.d)
        M = 0.5 * (M + M.T)
    if np.linalg.eigvalsh(M)[0] < -1e-8 * max(np.abs(M).max(), 1e-300):
        raise ConfigError(f"lr: η = {eta:g} is beyond the {what} mean-square edge (the solution is not PSD)")
    return M


def sgd_stationary_cov(model: Model, lr: float, b: int, sampling: str, *, method: str = "auto",
                       rtol: float = 1e-12) -> np.ndarray:
    """The exact stationary covariance of SGD about θ* (the stationary mean is θ*): the solution of
    L(M) = ηcS with γ = η (module docstring). ``method`` "dense" (Cholesky of the d²×d² matrix; the
    default for d ≤ 40), "krylov" (preconditioned CG, O(n d²) per matvec, relative residual ``rtol``)."""
    return _stationary(model, lr, b, sampling, 1.0, method, rtol, "SGD")


def sde_stationary_cov(model: Model, lr: float, b: int, sampling: str, *, method: str = "auto",
                       rtol: float = 1e-12) -> np.ndarray:
    """The stationary covariance of the Itô SDE dθ = −G dt + sqrt(ηΣ_b(θ)) dW on the same least-squares
    problem: ĀM + MĀ − ηc(K(M) − ĀMĀ) = ηcS (its noise is multiplicative: Σ_b depends on θ)."""
    return _stationary(model, lr, b, sampling, 0.0, method, rtol, "SDE")


def gibbs_cov(model: Model, T: float) -> np.ndarray:
    """Covariance T·Ā⁻¹ of the Gibbs law ∝ exp(−L/T) of the least-squares loss (Ā its Hessian)."""
    ls = least_squares(model)
    _check_positive(ls)
    T = real(T, "T", positive=True)
    return (ls.Q * (T / ls.lam)) @ ls.Q.T


def _pencil(ls: LeastSquares, c: float, dense: bool):
    """N = L₀^{-1/2} L₁ L₀^{-1/2} in Ā's eigenbasis (L₀ diagonal there): dense matrix or operator."""
    d, lam, l2 = ls.d, ls.lam, ls.l2
    Xt = ls.X @ ls.Q
    mu = lam - l2
    diag1 = np.outer(lam, lam) - c * np.outer(mu, mu)
    s = 1.0 / np.sqrt(lam[:, None] + lam[None, :])
    if dense:
        Z = np.einsum("ia,ib->iab", Xt, Xt).reshape(ls.n, d * d)
        sv = s.ravel()
        N = (c / ls.n) * (Z.T @ Z)
        N *= sv[:, None]
        N *= sv[None, :]
        N[np.diag_indices_from(N)] += (diag1 * s * s).ravel()
        return N

    def matvec(v):
        V = v.reshape(d, d) * s
        return ((diag1 * V + c * _K0(Xt, V)) * s).ravel()

    return LinearOperator((d * d, d * d), matvec=matvec, dtype=np.float64)


def ms_edge(model: Model, b: int, sampling: str, *, dense_max: int = DENSE_MAX, tol: float = 1e-12) -> float:
    """The largest η with a stable second moment of SGD: η* = 1/ν_max of the pencil L₁ v = ν L₀ v
    (module docstring; dense eigvalsh for d ≤ ``dense_max``, ARPACK on the O(n d²) operator beyond).
    Equals the root of :func:`second_moment_radius` = 1 in (0, 2/λ_max]."""
    ls = least_squares(model)
    _check_positive(ls)
    c = _factor(ls, b, sampling)
    if ls.d <= dense_max:
        nu = np.linalg.eigvalsh(_pencil(ls, c, True))[-1]
    else:
        v0 = np.random.default_rng([0, 0x3D6E]).standard_normal(ls.d * ls.d)
        nu = eigsh(_pencil(ls, c, False), k=1, which="LA", tol=tol, v0=v0)[0][0]
    return float(1.0 / nu)


def second_moment_radius(model: Model, lr: float, b: int, sampling: str, *,
                         dense_max: int = DENSE_MAX) -> float:
    """Spectral radius of the SGD second-moment map T(M) = M − η(ĀM + MĀ) + η²E_B[A_B M A_B] (dense
    eigvalsh of the symmetric d²×d² matrix for d ≤ ``dense_max``, ARPACK 'LM' beyond)."""
    ls = least_squares(model)
    eta, c = real(lr, "lr", positive=True), _factor(ls, b, sampling)
    # T = I − ηL with SGD's L (γ = η, δ = ηc)
    if ls.d <= dense_max:
        T = np.eye(ls.d * ls.d) - eta * _dense_L(ls, eta, eta * c)
        w = np.linalg.eigvalsh(0.5 * (T + T.T))
        return float(max(abs(w[0]), abs(w[-1])))
    d, lam, l2 = ls.d, ls.lam, ls.l2
    Xt = ls.X @ ls.Q
    mu = lam - l2
    diag = 1.0 - eta * (lam[:, None] + lam[None, :]) + eta * eta * (np.outer(lam, lam) - c * np.outer(mu, mu))

    def matvec(v):
        Mt = v.reshape(d, d)
        return (diag * Mt + eta * eta * c * _K0(Xt, Mt)).ravel()

    op = LinearOperator((d * d, d * d), matvec=matvec, dtype=np.float64)
    v0 = np.random.default_rng([0, 0x3D6F]).standard_normal(d * d)
    return float(abs(eigsh(op, k=1, which="LM", v0=v0)[0][0]))
