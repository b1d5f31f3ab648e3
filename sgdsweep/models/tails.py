"""Tail indices: Hill's estimator on samples, and the exact Kesten–Goldie index of one-parameter SGD."""

from __future__ import annotations

import math

import numpy as np
from scipy.optimize import brentq
from scipy.special import logsumexp

from sgdsweep.errors import ConfigError
from sgdsweep.validate import real


def hill(samples, frac: float = 0.05) -> tuple[float, float, int]:
    """Hill's estimate of the tail index α of abs(samples): (α̂, its standard error α̂/√k, k).

    k = ⌈frac·N⌉ top order statistics (the stated choice of k: a fixed top fraction); with
    x_(1) ≥ … ≥ x_(k+1) the sorted abs(samples), α̂ = k / Σ_{i≤k} log(x_(i)/x_(k+1)). For an exact
    Pareto tail the k log-ratios are iid Exp(α), so α̂ is the maximum-likelihood estimate given
    x_(k+1) and its asymptotic standard error is α̂/√k.
    """
    x = np.abs(np.asarray(samples, dtype=np.float64).ravel())
    if not np.all(np.isfinite(x)):
        raise ConfigError("samples: must be finite")
    frac = real(frac, "frac", positive=True)
    if frac >= 1:
        raise ConfigError(f"frac: must be < 1, got {frac!r}")
    N = x.size
    k = math.ceil(frac * N)
    if k + 1 > N or k < 2:
        raise ConfigError(f"samples: {N} samples leave too few order statistics (k = {k}) for frac = {frac}")
    top = -np.partition(-x, k)[: k + 1]
    top.sort()
    threshold = top[0]
    if threshold <= 0:
        raise ConfigError("samples: the (k+1)-th largest |sample| is 0; the tail is not resolved")
    s = float(np.sum(np.log(top[1:] / threshold)))
    if s <= 0:
        raise ConfigError("samples: the top order statistics are all equal; no tail to estimate")
    alpha = k / s
    return alpha, alpha / math.sqrt(k), k


def kesten_index(a, lr: float) -> float:
    """Exact tail index of θ' = (1 − η a_B) θ + noise for one parameter, b = 1 with replacement over
    the curvatures ``a`` (Kesten–Goldie): the α > 0 with (1/n) Σ_i abs(1 − η a_i)^α = 1.

    ``inf`` when every abs(1 − η a_i) ≤ 1 (no heavy tail); ``0.0`` when E log abs(1 − η a) ≥ 0 (the chain
    does not contract on average: no stationary law). Solved by brentq on the log-moment function
    φ(α) = log mean abs(1 − η a_i)^α, convex with φ(0) = 0.
    """
    a = np.asarray(a, dtype=np.float64).ravel()
    if a.size < 1 or not np.all(np.isfinite(a)):
        raise ConfigError("a: expected a non-empty array of finite curvatures")
    eta = real(lr, "lr", positive=True)
    u = np.abs(1.0 - eta * a)
    if np.all(u <= 1.0):
        return math.inf
    with np.errstate(divide="ignore"):
        logu = np.log(u)
    if np.mean(logu) >= 0:
        return 0.0

    def phi(alpha: float) -> float:
        return float(logsumexp(alpha * logu) - math.log(u.size))

    hi = 1.0
    while phi(hi) <= 0:
        hi *= 2.0
    lo = hi
    while phi(lo) >= 0:
        lo *= 0.5
    return float(brentq(phi, lo, hi, xtol=1e-15, rtol=4 * np.finfo(float).eps))
