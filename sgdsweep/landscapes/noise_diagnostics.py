"""How Gaussian is the minibatch gradient, and how large is its noise? Exact, from the data.

At a point θ the dataset holds n per-sample gradients g_1(θ) … g_n(θ) (one value per
axis a; the axis index is dropped below). Their mean is G = ∇L and their *population*
central moments are μ_k = (1/n) Σ_i (g_i − G)^k. The minibatch gradient of batch size b
is the mean ḡ_B of b of them; its central moments m_k = E[(ḡ_B − G)^k] are exact
functions of (μ_2, μ_3, μ_4, n, b), no sampling involved:

* **with replacement** (b iid uniform draws): cumulants of a mean of b iid draws are
  κ_k / b^(k−1), with κ_2 = μ_2, κ_3 = μ_3, κ_4 = μ_4 − 3 μ_2², so
  m_2 = μ_2 / b, m_3 = μ_3 / b², m_4 = (μ_4 + 3 (b − 1) μ_2²) / b³;
  skewness = γ_1 / √b and excess kurtosis = γ_2 / b, where γ_1, γ_2 are those of one
  sample gradient.
* **without replacement** (a uniform b-subset of the N = n samples; also the per-step
  marginal of random reshuffling): the classical finite-population moments of a sample
  mean (sampling moments without replacement, as in Kendall & Stuart, *The Advanced
  Theory of Statistics*, vol. 1; the variance is Cochran's, *Sampling Techniques*; all
  three are checked against enumeration of every minibatch in the tests), with f = N − b:
  m_2 = μ_2 · f / (b (N − 1)),
  m_3 = μ_3 · f (N − 2b) / (b² (N − 1)(N − 2)),
  m_4 = f / (b³ (N − 1)(N − 2)(N − 3)) · [(N² + N − 6bN + 6b²) μ_4 + 3N (b − 1)(N − b − 1) μ_2²].
  Where a denominator vanishes (N ≤ 3) the cases b = 1 (m_k = μ_k), b = N (m_k = 0) and
  b = N − 1 (ḡ_B − G = −(g_j − G)/b for the one sample j left out, so m_k = (−1/b)^k μ_k)
  are used instead; together they cover every b when N ≤ 3.

Skewness m_3 / m_2^(3/2) and excess kurtosis m_4 / m_2² − 3 are dimensionless. Where the
minibatch gradient has no spread (all n per-sample gradients agree along that axis, or
b = n without replacement) both are undefined and returned as **NaN**: "no noise here,
its shape is meaningless". A spread below 64 ulp of the largest |g_i| counts as none,
because it cannot be told from the rounding of the per-sample gradients.

**Noise-to-signal ratio.** Li, Malladi & Arora (2021, "On the validity of modeling SGD
with SDEs", §5) compare the minibatch gradient noise E|ḡ_B − ∇L|² = tr Σ_b with the
squared signal |∇L|²: their necessary condition for the SDE approximation (and with it
the linear scaling rule η ∝ b) is that the noise is not small against the signal, and
since scaling b by κ divides the ratio by κ, the rule breaks once κb makes it small (they
evaluate it along training, at equilibrium). Here, pointwise at each θ,

    NSR_b(θ) = tr Σ_b(θ) / |G(θ)|²,   Σ_b = noise_factor(n, b, sampling) · Σ,

Σ the population covariance of the per-sample gradients and noise_factor = 1/b with
replacement, (n − b)/(b (n − 1)) without (:func:`sgdsweep.landscapes.noise.batch_noise_factor`).
Dimensionless (squared-gradient units cancel) and independent of η: one SGD step's noise
and drift displacements both scale with η². NSR_1 with replacement is the "simple noise
scale" B_simple = tr Σ / |G|² of McCandlish et al. (2018), the batch size at which noise
and signal balance. At a stationary point (G = 0) NSR is +inf if there is noise and NaN
if there is none.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sgdsweep.errors import ConfigError
from sgdsweep.landscapes.landscape import Landscape
from sgdsweep.landscapes.noise import SAMPLINGS, batch_noise_factor
from sgdsweep.validate import integer

#: A spread below this many ulp of the largest per-sample gradient counts as zero.
_ZERO_SPREAD_ULP = 64.0


def population_moments(sample_grads: np.ndarray) -> tuple[np.ndarray, ...]:
    """Mean G and population central moments μ_2, μ_3, μ_4 over the samples (axis −2).

    ``sample_grads`` has shape (..., n, d); the results have shape (..., d). Two passes
    (mean first, then powers of the deviations), so μ_k keep their relative accuracy.
    """
    g = np.asarray(sample_grads, dtype=np.float64)
    mean = g.mean(axis=-2)
    dev = g - mean[..., None, :]
    dev2 = dev * dev
    return mean, dev2.mean(axis=-2), (dev2 * dev).mean(axis=-2), (dev2 * dev2).mean(axis=-2)


def minibatch_moments(mu2: np.ndarray, mu3: np.ndarray, mu4: np.ndarray, n: int, batch_size: int,
                      sampling: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Central moments m_2, m_3, m_4 of the minibatch mean from the population moments.

    Formulas in the module docstring; ``reshuffle`` has the without-replacement marginal.
    """
    b, N = batch_size, n
    if sampling == "with_replacement":
        return mu2 / b, mu3 / b**2, (mu4 + 3.0 * (b - 1) * mu2 * mu2) / b**3
    if b == N:
        z = np.zeros_like(mu2)
        return z, z.copy(), z.copy()
    if b == 1:
        return mu2.copy(), mu3.copy(), mu4.copy()
    if b == N - 1:
        # ḡ_B − G = −(g_j − G)/b for the one sample j left out (N ≤ 3 lands here).
        return mu2 / b**2, -mu3 / b**3, mu4 / b**4
    f = N - b
    m2 = mu2 * f / (b * (N - 1))
    m3 = mu3 * f * (N - 2 * b) / (b**2 * (N - 1) * (N - 2))
    m4 = f / (b**3 * (N - 1) * (N - 2) * (N - 3)) * (
        (N * N + N - 6 * b * N + 6 * b * b) * mu4 + 3.0 * N * (b - 1) * (N - b - 1) * mu2 * mu2)
    return m2, m3, m4


def minibatch_shape(sample_grads: np.ndarray, batch_size: int, sampling: str
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Variance, skewness and excess kurtosis of the minibatch mean gradient, per axis.

    ``sample_grads`` (..., n, d) as in ``Landscape.evaluate(points)["sample_grads"]``;
    returns three arrays of shape (..., d): m_2 (gradient units squared) and the two
    dimensionless shape numbers, NaN where the minibatch gradient has no spread.
    """
    g = np.asarray(sample_grads, dtype=np.float64)
    n = g.shape[-2]
    _, mu2, mu3, mu4 = population_moments(g)
    m2, m3, m4 = minibatch_moments(mu2, mu3, mu4, n, batch_size, sampling)
    floor = _ZERO_SPREAD_ULP * np.finfo(np.float64).eps * np.abs(g).max(axis=-2)
    noisy = (mu2 > floor * floor) & (m2 > 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        skew = np.where(noisy, m3 / np.where(noisy, m2, 1.0) ** 1.5, np.nan)
        kurt = np.where(noisy, m4 / np.where(noisy, m2, 1.0) ** 2 - 3.0, np.nan)
    return m2, skew, kurt


def noise_to_signal(grad: np.ndarray, cov: np.ndarray, noise_factor: float) -> np.ndarray:
    """NSR_b = noise_factor · tr Σ / |G|² at each point (module docstring).

    ``grad`` (m, d), ``cov`` (m, d, d) as in ``Landscape.evaluate``; returns (m,):
    +inf where G = 0 but there is noise, NaN where both vanish.
    """
    noise = noise_factor * np.trace(np.asarray(cov), axis1=-2, axis2=-1)
    signal = np.einsum("...a,...a->...", grad, grad)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = noise / signal
    return np.where((signal == 0.0) & (noise > 0.0), np.inf, np.where(signal == 0.0, np.nan, out))


def noise_diagnostics(landscape: Landscape, points: Any, batch_size: int,
                      sampling: str = "with_replacement") -> dict[str, np.ndarray]:
    """Exact gradient-noise diagnostics of ``landscape`` at ``points`` for batch size b.

    ``points`` (m, d) (or (m,) in 1-D). Returns ``variance``, ``skewness``,
    ``excess_kurtosis`` of the minibatch mean gradient, each (m, d) per axis, and
    ``noise_to_signal`` (m,). ``sampling`` is one of with_replacement,
    without_replacement, reshuffle (the latter two give the same per-step law).
    """
    if not isinstance(landscape, Landscape):
        raise ConfigError(f"landscape: expected a sgdsweep Landscape, got {type(landscape).__name__}")
    if sampling not in SAMPLINGS:
        raise ConfigError(f"sampling: unknown {sampling!r} (known: {', '.join(SAMPLINGS)})")
    batch_size = integer(batch_size, "batch_size", 1)
    factor = batch_noise_factor(landscape.n, batch_size, sampling)
    try:
        pts = np.asarray(points, dtype=np.float64)
    except (TypeError, ValueError):
        raise ConfigError("points: expected an array of positions (m, d)") from None
    if pts.ndim == 1 and landscape.dim == 1:
        pts = pts[:, None]
    if pts.ndim != 2 or pts.shape[1] != landscape.dim:
        raise ConfigError(f"points: expected shape (m, {landscape.dim}), got {pts.shape}")
    if not np.all(np.isfinite(pts)):
        raise ConfigError("points: must be finite")
    ev = landscape.evaluate(pts)
    var, skew, kurt = minibatch_shape(ev["sample_grads"], batch_size, sampling)
    return {"variance": var, "skewness": skew, "excess_kurtosis": kurt,
            "noise_to_signal": noise_to_signal(ev["grad"], ev["cov"], factor)}
