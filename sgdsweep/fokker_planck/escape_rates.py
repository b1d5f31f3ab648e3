"""Small-noise escape-time formulas for the 1-D SGD SDE dθ = −G dt + sqrt(2D) dW (Itô).

* :func:`kramers_at_minimum` — Kramers (1940) with the SDE's D frozen at the minimum:
  2π / sqrt(L″_a |L″_s|) · exp(ΔL / D_a);
* :func:`xie_sato_sugiyama_escape_time` — Xie, Sato & Sugiyama (ICLR 2021), Theorem 3.2
  (one dimension): with D(θ) = η H(θ) / (2b) near the critical points,
  τ = 2π / |H_s| · exp[(2bΔL/η) (s/H_a + (1 − s)/|H_s|)];
* :func:`xie_escape_time_from_diffusion` — the same theorem written in the diffusion
  itself, 2π / |H_s| · exp[ΔL (s/D_a + (1 − s)/D_s)], which is the theorem whenever
  D_a = η H_a/(2b) and D_s = η |H_s|/(2b) and lets it be applied to any noise model;
* :func:`barrier_geometry` — the minimum, the barrier top, their curvatures, the barrier
  height and D at both, read off a landscape sampled on a grid.

Conventions: a is the minimum escaped from, s the barrier top (saddle), ΔL = L(s) − L(a) > 0,
H_a = L″(a) > 0, H_s = L″(s) < 0, D = η Σ_b / 2. Times are SDE time t = η·step and count the
full crossing of the barrier; the mean time merely to *reach* the top is half of it.

Assumptions behind Xie, Sato & Sugiyama's formula: gradient noise covariance equal to the
Hessian over the batch size near the critical points (Fisher ≈ Hessian), quasi-equilibrium
inside the basin (the density there relaxes much faster than mass leaks out), low
temperature (ΔL ≫ D) and a Smoluchowski equation ∂p/∂t = ∇·(p∇L + D∇p), i.e. the
*isothermal* convention — hence the prefactor 2π/|H_s| rather than Itô's
2π sqrt(D_s/D_a) / sqrt(H_a |H_s|). s ∈ (0, 1) is their path-dependent parameter: the
fraction of the barrier climbed while the curvature is still H_a. Where the loss along the
path is two quadratic pieces, of curvature H_a from the minimum and −|H_s| into the top,
joined with a continuous slope, s = |H_s| / (H_a + |H_s|) exactly
(:func:`path_parameter`), the default here.
"""

from __future__ import annotations

import math

import numpy as np

from sgdsweep.errors import ConfigError
from sgdsweep.fokker_planck.references import kramers_escape_time


def _positive(value: float, name: str) -> float:
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(f"{name}: must be > 0, got {value!r}")
    return float(value)


def path_parameter(curvature_min: float, curvature_top: float) -> float:
    """s = |H_s| / (H_a + |H_s|): the barrier fraction below the junction of a C¹ pair of
    quadratics (curvature H_a at the minimum, −|H_s| at the top)."""
    h_a = _positive(curvature_min, "curvature_min")
    h_s = _positive(abs(curvature_top), "curvature_top")
    return h_s / (h_a + h_s)


def kramers_at_minimum(curvature_min: float, curvature_top: float, barrier: float,
                       diffusion_min: float) -> float:
    """Kramers' mean escape time with the temperature set to the SDE's D at the minimum.

    Exact as D → 0 for constant D (relative error O(D/ΔL)); with state-dependent D it
    misses the factor sqrt(D_s/D_a) and replaces ∫ G/D by ΔL/D_a.
    """
    _positive(barrier, "barrier")
    d_a = _positive(diffusion_min, "diffusion_min")
    return kramers_escape_time(curvature_min, curvature_top, barrier, d_a)


def xie_escape_time_from_diffusion(curvature_min: float, curvature_top: float, barrier: float,
                                   diffusion_min: float, diffusion_top: float,
                                   s: float | None = None) -> float:
    """Xie, Sato & Sugiyama's mean escape time, 2π/|H_s| · exp[ΔL (s/D_a + (1 − s)/D_s)].

    ``s`` defaults to :func:`path_parameter`. Returns inf when the exponent overflows.
    """
    h_a = _positive(curvature_min, "curvature_min")
    h_s = _positive(abs(curvature_top), "curvature_top")
    dl = _positive(barrier, "barrier")
    d_a = _positive(diffusion_min, "diffusion_min")
    d_s = _positive(diffusion_top, "diffusion_top")
    s = path_parameter(h_a, h_s) if s is None else float(s)
    if not 0.0 <= s <= 1.0:
        raise ConfigError(f"s: must lie in [0, 1], got {s!r}")
    exponent = dl * (s / d_a + (1.0 - s) / d_s)
    return 2.0 * math.pi / h_s * math.exp(exponent) if exponent < 709.0 else math.inf


def xie_sato_sugiyama_escape_time(curvature_min: float, curvature_top: float, barrier: float,
                                  lr: float, batch_size: int, s: float | None = None) -> float:
    """Theorem 3.2 of Xie, Sato & Sugiyama (2021) as printed, D = η H / (2b):
    τ = 2π / |H_s| · exp[(2bΔL/η)(s/H_a + (1 − s)/|H_s|)] (SDE time units)."""
    lr = _positive(lr, "lr")
    b = _positive(batch_size, "batch_size")
    h_a = _positive(curvature_min, "curvature_min")
    h_s = _positive(abs(curvature_top), "curvature_top")
    return xie_escape_time_from_diffusion(h_a, h_s, barrier, lr * h_a / (2 * b), lr * h_s / (2 * b), s)


def _interp_zero(x: np.ndarray, f: np.ndarray, k: int) -> float:
    """The zero of f between x[k] and x[k+1] by linear interpolation."""
    return float(x[k] - f[k] * (x[k + 1] - x[k]) / (f[k + 1] - f[k]))


def barrier_geometry(x: np.ndarray, loss: np.ndarray, grad: np.ndarray, diffusion: np.ndarray,
                     threshold: float, direction: int = 1) -> dict[str, float]:
    """Minimum and barrier top met by an escape over ``threshold`` from the side before it.

    ``direction`` +1: the walker starts below the threshold (lowest loss there) and climbs
    over the highest point of L between that minimum and the threshold; −1: mirrored.
    Positions are the zeros of the sampled gradient (linear interpolation); curvatures
    (central differences of G) and L and D are linearly interpolated there. Returns ``x_min``, ``x_top``,
    ``curvature_min``, ``curvature_top``, ``barrier``, ``diffusion_min``, ``diffusion_top``;
    NaN everywhere when there is no interior minimum and top on that side.
    """
    x, loss, grad, diffusion = (np.asarray(v, dtype=np.float64) for v in (x, loss, grad, diffusion))
    keys = ("x_min", "x_top", "curvature_min", "curvature_top", "barrier", "diffusion_min", "diffusion_top")
    nan = dict.fromkeys(keys, math.nan)
    if direction not in (1, -1):
        raise ConfigError(f"direction: must be +1 or -1, got {direction!r}")
    if not np.all(np.isfinite(loss)):
        return nan
    if direction < 0:
        out = barrier_geometry(-x[::-1], loss[::-1], -grad[::-1], diffusion[::-1], -threshold, 1)
        return {**out, "x_min": -out["x_min"], "x_top": -out["x_top"]}
    before = np.nonzero(x < threshold)[0]
    if before.size < 3:
        return nan
    k_min = int(before[np.argmin(loss[before])])
    k_top = k_min + int(np.argmax(loss[k_min:before[-1] + 1]))
    if k_min == 0 or k_top >= x.size - 1 or k_top == k_min:
        return nan

    dg = np.gradient(grad, x)

    def at(k_guess: int, rising: bool) -> tuple[float, float, float, float]:
        # The sign change of G next to the sampled extremum.
        for k in (k_guess - 1, k_guess):
            if (grad[k] <= 0.0 < grad[k + 1]) if rising else (grad[k] >= 0.0 > grad[k + 1]):
                z = _interp_zero(x, grad, k)
                w = (z - x[k]) / (x[k + 1] - x[k])
                h = (1 - w) * dg[k] + w * dg[k + 1]
                return (z, h, (1 - w) * loss[k] + w * loss[k + 1],
                        (1 - w) * diffusion[k] + w * diffusion[k + 1])
        return (math.nan,) * 4

    x_a, h_a, l_a, d_a = at(k_min, True)
    x_s, h_s, l_s, d_s = at(k_top, False)
    return {"x_min": x_a, "x_top": x_s, "curvature_min": h_a, "curvature_top": h_s,
            "barrier": l_s - l_a, "diffusion_min": d_a, "diffusion_top": d_s}
