"""Exact references for the 1-D SGD SDE dθ = −G dt + sqrt(2D) dW (Itô), D = η Σ_b / 2.

* :func:`stationary_density` / :func:`analytic_stationary` — p ∝ D^(−α) exp(−∫ G/D dθ) by
  fine-grid quadrature (α: Itô 1, Stratonovich ½, isothermal 0);
* :func:`gibbs_density` and :func:`langevin_default_temperature` — the Langevin reference;
* :func:`mean_first_passage_time` — the exact double integral for the mean exit time,
  and :func:`kramers_escape_time`, its small-noise limit;
* :func:`sgd_quadratic_stationary_variance` — exact discrete-time SGD on l_i = h/2 (θ − c_i)²,
  and :func:`sde_quadratic_stationary_variance`, what the SDE predicts there.

Time is SDE time t = η·step throughout. Numpy (and one small Numba loop) only.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numba as nb
import numpy as np

from sgdsweep.errors import ConfigError
from sgdsweep.landscapes.grid import Grid1D
from sgdsweep.landscapes.noise import batch_noise_factor, diffusion
from sgdsweep.validate import real

Coefficient = Callable[[np.ndarray], np.ndarray] | np.ndarray


# --------------------------------------------------------------------------- stationary


_NO_ANALYTIC = ("diffusion: D vanishes inside the interval; the stationary density collapses there "
                "(p ∝ 1/D) and has no finite analytic form")


def _log_stationary(x: np.ndarray, G: np.ndarray, D: np.ndarray, refine: int, alpha: float) -> np.ndarray:
    """log p at ``x`` from G, D sampled at ``refine`` equal sub-intervals of every gap of ``x``.

    ∫ G/D is composite Simpson per gap (fourth order), accumulated from x[0].
    """
    if not (np.all(np.isfinite(G)) and np.all(np.isfinite(D))):
        raise ConfigError("drift: drift and diffusion must be finite")
    if np.any(D <= 0.0):
        raise ConfigError(_NO_ANALYTIC)
    w = np.ones(refine + 1)
    w[1:-1:2] = 4.0
    w[2:-1:2] = 2.0
    blocks = np.lib.stride_tricks.sliding_window_view(G / D, refine + 1)[::refine]
    per_gap = (blocks @ w) * np.diff(x) / (3.0 * refine)
    integral = np.concatenate(([0.0], np.cumsum(per_gap)))
    return -integral - alpha * np.log(D[::refine])


def _refined(x: np.ndarray, refine: int) -> np.ndarray:
    frac = np.arange(refine) / refine
    inner = (x[:-1, None] + np.diff(x)[:, None] * frac[None, :]).ravel()
    return np.concatenate((inner, x[-1:]))


def _normalised_on(x: np.ndarray, logp: np.ndarray) -> np.ndarray:
    p = np.exp(logp - logp.max())
    dx = np.diff(x)
    if np.allclose(dx, dx[0], rtol=1e-9, atol=0.0):
        # Cell centres: the same Σ p·dx = 1 as the grid densities.
        return p / (p.sum() * dx[0])
    return p / np.sum(0.5 * (p[1:] + p[:-1]) * dx)


def stationary_density(x: np.ndarray, drift: Coefficient, diffusion: Coefficient,
                       alpha: float = 1.0, refine: int = 64) -> np.ndarray:
    """Analytic stationary density p ∝ D^(−α) exp(−∫ G/D dθ) on increasing points ``x``.

    ``drift`` G and ``diffusion`` D are callables (vectorised over arrays) or arrays of
    values on ``x``. With callables, ∫ G/D is composite Simpson on ``refine`` sub-intervals
    per gap of ``x`` (relative error ~1e-10 for smooth coefficients); with arrays it is
    the trapezoid rule on ``x`` itself (second order only). Normalisation: Σ p·dx = 1 when
    ``x`` is uniform (cell centres), trapezoid otherwise. α: Itô 1, Stratonovich ½,
    isothermal 0. Raises ConfigError where D ≤ 0 (no finite density).
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 1 or x.size < 2 or np.any(np.diff(x) <= 0):
        raise ConfigError("x: expected at least 2 strictly increasing points")
    if callable(drift) and callable(diffusion):
        if refine < 2 or refine % 2:
            raise ConfigError(f"refine: must be an even integer >= 2, got {refine!r}")
        fine = _refined(x, refine)
        G = np.asarray(drift(fine), dtype=np.float64) * np.ones_like(fine)
        D = np.asarray(diffusion(fine), dtype=np.float64) * np.ones_like(fine)
        return _normalised_on(x, _log_stationary(x, G, D, refine, alpha))
    G = np.asarray(drift(x) if callable(drift) else drift, dtype=np.float64) * np.ones_like(x)
    D = np.asarray(diffusion(x) if callable(diffusion) else diffusion, dtype=np.float64) * np.ones_like(x)
    if G.shape != x.shape or D.shape != x.shape:
        raise ConfigError(f"drift: drift and diffusion must have the shape of x {x.shape}")
    if np.any(D <= 0.0):
        raise ConfigError(_NO_ANALYTIC)
    r = G / D
    integral = np.concatenate(([0.0], np.cumsum(0.5 * (r[1:] + r[:-1]) * np.diff(x))))
    return _normalised_on(x, -integral - alpha * np.log(D))


def analytic_stationary(landscape, grid: Grid1D, lr: float, noise_factor: float,
                        alpha: float = 1.0, refine: int = 64) -> np.ndarray:
    """:func:`stationary_density` of SGD's SDE on ``landscape`` at the cell centres of ``grid``.

    G = ∇L and D = η Σ_b / 2 are evaluated on ``refine`` sub-intervals per cell, so this is
    the point-value reference the finite-volume solver converges to (Σ p·dx = 1).
    """
    if landscape.dim != 1:
        raise ConfigError(f"landscape.dim: analytic stationary density is 1-D, got {landscape.dim}")
    if refine < 2 or refine % 2:
        raise ConfigError(f"refine: must be an even integer >= 2, got {refine!r}")
    x = grid.centres
    ev = landscape.evaluate(_refined(x, refine))
    G = ev["grad"][:, 0]
    D = diffusion(ev["cov"][:, 0, 0], lr, noise_factor)
    return _normalised_on(x, _log_stationary(x, G, D, refine, alpha))


# --------------------------------------------------------------------------- Gibbs / Langevin


def gibbs_density(loss: np.ndarray, temperature: float, dx: float) -> np.ndarray:
    """Gibbs density exp(−L/T) on a uniform cell grid, normalised so Σ p·dx = 1.

    This is the stationary law of Langevin dynamics dθ = −∇L dt + sqrt(2T) dW.
    """
    temperature = real(temperature, "langevin.temperature", positive=True)
    dx = real(dx, "dx", positive=True)
    L = np.asarray(loss, dtype=np.float64)
    if not np.all(np.isfinite(L)):
        raise ConfigError("loss: must be finite on the grid")
    p = np.exp(-(L - L.min()) / temperature)
    return p / (p.sum() * dx)


def langevin_default_temperature(landscape, grid: Grid1D, lr: float, noise_factor: float) -> float:
    """Default Langevin temperature T: the SDE's D = η Σ_b / 2 at the lowest loss on the grid.

    Langevin dθ = −G dt + sqrt(2T) dW and the SGD SDE then share the local temperature at
    the deepest minimum (the cell centre of ``grid`` with the smallest L), so their
    difference elsewhere measures how far SGD is from Gibbs. If D vanishes there, T is
    the mean of D over the grid centres; if that vanishes too, ConfigError asks for one.
    "Vanishes" means Σ below 1e-20 of the largest mean squared gradient on the grid: the
    round-off floor of a variance of identical per-sample gradients.
    """
    if landscape.dim != 1:
        raise ConfigError(f"landscape.dim: expected 1, got {landscape.dim}")
    ev = landscape.evaluate(grid.centres)
    cov = ev["cov"][:, 0, 0]
    floor = 1e-20 * float(np.max(cov + ev["grad"][:, 0] ** 2))
    k = int(np.argmin(ev["loss"]))
    if cov[k] > floor and noise_factor > 0:  # (b = n without replacement: no minibatch noise)
        return float(diffusion(cov[k], lr, noise_factor))
    if np.mean(cov) > floor and noise_factor > 0:
        return float(np.mean(diffusion(cov, lr, noise_factor)))
    raise ConfigError("langevin.temperature: the gradient noise vanishes on the whole grid; "
                      "give one explicitly")


# --------------------------------------------------------------------------- first passage


@nb.njit(cache=True)
def _log_gap(e0: float, e1: float, h: float) -> float:
    """log ∫ over a gap of width h of exp(e), e linear from e0 to e1 (exact for exponentials).

    Anchored at the larger end, so only log((1 − e^(−u))/u), u ≥ 0, is needed: no
    cancellation even when the endpoints differ by 1e200. This "exponentially fitted
    trapezoid" is second order for smooth integrands and stays right when the integrand
    changes by many orders of magnitude within one gap (D ≪ |G| h).
    """
    if e0 == -np.inf and e1 == -np.inf:
        return -np.inf
    hi = max(e0, e1)
    if e0 == -np.inf or e1 == -np.inf:
        # A zero endpoint (Ψ = 0 at the reflecting wall) is linear, not exponential.
        return math.log(0.5 * h) + hi
    u = hi - min(e0, e1)
    if u < 1e-6:
        return math.log(h) + hi - 0.5 * u
    return math.log(h) + hi + math.log(-math.expm1(-u)) - math.log(u)


@nb.njit(cache=True)
def _logaddexp(x: float, y: float) -> float:
    if x == -np.inf:
        return y
    if y == -np.inf:
        return x
    m = max(x, y)
    return m + math.log1p(math.exp(min(x, y) - m))


@nb.njit(cache=True)
def _log_mfpt_reflecting(h, r, logd, i0):
    """log T(y_i0) for reflecting y_0 and absorbing y_K (see mean_first_passage_time).

    Carries u = Ψ/φ itself, u_{k+1} = u_k φ_k/φ_{k+1} + ∫_gap φ/(D φ_{k+1}), so only
    gap-local differences of log φ appear and D → 0 (|G|/D ~ 1e250) stays exact.
    """
    logu = -np.inf
    logT = -np.inf
    for k in range(h.shape[0]):
        dl = -0.5 * (r[k] + r[k + 1]) * h[k]  # log φ_{k+1} − log φ_k
        gap = _log_gap(-dl - logd[k], -logd[k + 1], h[k])
        new = _logaddexp(logu - dl, gap)
        if not new < np.inf:
            return np.inf
        if k >= i0:
            logT = _logaddexp(logT, _log_gap(logu, new, h[k]))
        logu = new
    return logT


def _mfpt_once(x0: float, a: float, b: float, G: Callable, D: Callable, reflecting: bool,
               k1: int, k2: int) -> float:
    # Nodes a = y_0 < … < y_K = b (a < b here): k1 gaps up to x0 and k2 after it, so x0 is
    # a node and doubling (k1, k2) halves every gap (clean Richardson extrapolation).
    y = np.concatenate((np.linspace(a, x0, k1 + 1)[:-1], np.linspace(x0, b, k2 + 1)))
    h = np.diff(y)
    g = np.asarray(G(y), dtype=np.float64) * np.ones_like(y)
    d = np.asarray(D(y), dtype=np.float64) * np.ones_like(y)
    if not (np.all(np.isfinite(g)) and np.all(np.isfinite(d))):
        raise ConfigError("drift: drift and diffusion must be finite between a and b")
    if np.any(d < 0):
        raise ConfigError("diffusion: must be >= 0 between a and b")
    # Where D underflows to 0, a tiny floor reproduces the D → 0 limit (deterministic transit
    # where the drift points to b, no arrival where it points back) without inf − inf.
    d = np.maximum(d, 1e-250)
    r = g / d
    if reflecting:
        return float(np.exp(_log_mfpt_reflecting(h, r, np.log(d), k1)))
    # Both ends absorbing: T(x) = ∫_a^x (K − Ψ)/φ, K fixed by T(b) = 0. This branch works
    # with log φ itself, so it needs ∫|G|/D over [a, b] well below ~1e15 (moderate noise).
    logphi = -np.concatenate(([0.0], np.cumsum(0.5 * (r[1:] + r[:-1]) * h)))
    e = logphi - np.log(d)
    log_inner = [-np.inf]
    for k in range(h.size):
        log_inner.append(_logaddexp(log_inner[-1], _log_gap(e[k], e[k + 1], h[k])))
    log_outer = np.array(log_inner) - logphi
    gaps = np.array([_log_gap(log_outer[k], log_outer[k + 1], h[k]) for k in range(h.size)])
    log_inv_phi = np.array([_log_gap(-logphi[k], -logphi[k + 1], h[k]) for k in range(h.size)])
    # Each cumulative integral is scaled by its own largest gap to stay finite.
    s1, s2 = log_inv_phi.max(), gaps.max()
    inv_phi = np.concatenate(([0.0], np.cumsum(np.exp(log_inv_phi - s1))))
    psi_phi = np.concatenate(([0.0], np.cumsum(np.exp(gaps - s2))))
    return float(np.exp(s2) * (psi_phi[-1] * inv_phi[k1] / inv_phi[-1] - psi_phi[k1]))


def mean_first_passage_time(x0: float, a: float, b: float, drift: Callable, diffusion: Callable,
                            reflecting: str | None = "a", intervals: int = 8192) -> float:
    """Exact mean first-passage time from x0 to b of dX = −G(X) dt + sqrt(2 D(X)) dW (Itô).

    The generator is 𝓛f = −G f′ + D f″, so T solves D T″ − G T′ = −1 with T(b) = 0 and
    T′(a) = 0 (``reflecting='a'``), giving, with φ(y) = exp(−∫_a^y G/D),

        T(x0) = ∫_{x0}^{b} dy / φ(y) ∫_{a}^{y} φ(z)/D(z) dz,

    (φ/D is the Itô stationary density). ``reflecting=None`` makes a absorbing too
    (exit through either end). a may lie above b. Units: SDE time t = η·step.

    ``drift`` G and ``diffusion`` D are vectorised callables. Quadrature: exponentially
    fitted trapezoid on ``intervals`` gaps (robust when D ≪ |G|·gap), Richardson-extrapolated
    from ``intervals`` and 2·``intervals``; ~1e-8 relative for smooth coefficients. Returns
    inf when the passage time overflows (practically never escapes).
    """
    for name, v in (("x0", x0), ("a", a), ("b", b)):
        if not math.isfinite(v):
            raise ConfigError(f"{name}: must be finite, got {v!r}")
    if reflecting not in ("a", None):
        raise ConfigError(f"reflecting: must be 'a' or None, got {reflecting!r}")
    if a == b:
        raise ConfigError("b: the absorbing point must differ from a")
    if not min(a, b) <= x0 <= max(a, b):
        raise ConfigError(f"x0: {x0} lies outside [{min(a, b)}, {max(a, b)}]")
    if intervals < 8:
        raise ConfigError(f"intervals: must be >= 8, got {intervals}")
    if x0 == b:
        return 0.0
    if a > b:
        # Mirror θ → −θ: G flips sign, D does not.
        def G(y):
            return -np.asarray(drift(-y), dtype=np.float64)

        def D(y):
            return np.asarray(diffusion(-y), dtype=np.float64)

        x0, a, b = -x0, -a, -b
    else:
        G, D = drift, diffusion
    refl = reflecting == "a"
    k1 = round(intervals * (x0 - a) / (b - a))
    k1 = min(max(k1, 1 if x0 > a else 0), intervals - 1)
    k2 = intervals - k1
    with np.errstate(over="ignore", under="ignore", divide="ignore", invalid="ignore"):
        coarse = _mfpt_once(x0, a, b, G, D, refl, k1, k2)
        fine = _mfpt_once(x0, a, b, G, D, refl, 2 * k1, 2 * k2)
    if not (math.isfinite(coarse) and math.isfinite(fine)):
        return math.inf
    extrapolated = fine + (fine - coarse) / 3.0
    # Extrapolate only in the asymptotic (smooth) regime; otherwise keep the finer value.
    if abs(fine - coarse) <= 1e-2 * abs(fine) and extrapolated > 0:
        return float(extrapolated)
    return float(fine)


def kramers_escape_time(curvature_min: float, curvature_barrier: float, barrier: float,
                        temperature: float) -> float:
    """Kramers' small-noise mean escape time 2π / sqrt(L″_min |L″_top|) · exp(ΔL / T).

    For dθ = −L′ dt + sqrt(2T) dW with constant T; ``barrier`` ΔL = L_top − L_min > 0. This
    is the time to cross well past the barrier top; the mean time merely to *reach* the top
    is half of it (a walker on the top falls back with probability ½). SDE time units.
    """
    curvature_min = real(curvature_min, "curvature_min", positive=True)
    if curvature_barrier == 0:
        raise ConfigError("curvature_barrier: must be nonzero (a barrier top is a maximum)")
    temperature = real(temperature, "temperature", positive=True)
    return 2 * math.pi / math.sqrt(curvature_min * abs(curvature_barrier)) * math.exp(barrier / temperature)


# --------------------------------------------------------------------------- quadratic


def _quadratic_checked(lr: float, curvature: float, spread_var: float) -> None:
    real(lr, "lr", positive=True)
    if not (math.isfinite(curvature) and curvature > 0):
        raise ConfigError(f"curvature: must be > 0 for a stationary state, got {curvature!r}")
    real(spread_var, "spread_var", nonnegative=True)


def sgd_quadratic_stationary_variance(lr: float, curvature: float, spread_var: float,
                                      batch_size: int, n: int, sampling: str) -> float:
    """Exact stationary variance of discrete-time SGD on l_i = h/2 (θ − c_i)².

    θ⁺ = (1 − ηh) θ + ηh c̄_B with c̄_B the minibatch mean of the centres, so
    Var = η h Var(c̄_B) / (2 − ηh), Var(c̄_B) = Var(c)/b with replacement and
    Var(c)(n − b)/(b(n − 1)) without replacement (0 at full batch b = n). ``spread_var`` is
    the population variance Var(c) of the n centres. Exact when minibatches are independent
    across steps (with replacement, or without replacement within a step). Under random
    reshuffling the batches of one epoch are drawn without replacement from each other,
    so consecutive steps are correlated and the same number is only an approximation.
    Raises ConfigError when ηh ≥ 2 (SGD diverges).
    """
    _quadratic_checked(lr, curvature, spread_var)
    if lr * curvature >= 2:
        raise ConfigError(f"lr: η·h = {lr * curvature:g} >= 2, SGD on this quadratic diverges")
    factor = batch_noise_factor(n, batch_size, sampling)
    return lr * curvature * spread_var * factor / (2.0 - lr * curvature)


def sde_quadratic_stationary_variance(lr: float, curvature: float, spread_var: float,
                                      batch_size: int, n: int, sampling: str) -> float:
    """The SDE's stationary variance on the same quadratic: D/h = η h Var(c) f / 2.

    An Ornstein–Uhlenbeck process with drift h and D = η h² Var(c) f / 2, f = Σ_b/Σ
    (:func:`sgdsweep.landscapes.noise.batch_noise_factor`); the ηh → 0 limit of the SGD formula.
    """
    _quadratic_checked(lr, curvature, spread_var)
    factor = batch_noise_factor(n, batch_size, sampling)
    return lr * curvature * spread_var * factor / 2.0
