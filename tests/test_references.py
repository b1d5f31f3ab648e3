"""Exact references against closed forms and independent computations."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from sgdsweep.errors import ConfigError
from sgdsweep.fokker_planck.references import (
    analytic_stationary,
    gibbs_density,
    kramers_escape_time,
    langevin_default_temperature,
    mean_first_passage_time,
    sde_quadratic_stationary_variance,
    sgd_quadratic_stationary_variance,
    stationary_density,
)
from sgdsweep.landscapes.grid import Grid1D
from sgdsweep.landscapes.landscape import build_landscape
from sgdsweep.landscapes.noise import batch_noise_factor


def quadratic(curvature: float = 1.0, spread: float = 1.0, n: int = 8) -> dict:
    # conf/landscape/quadratic.yaml with its interpolations written out.
    return {"name": "quadratic", "reference": [{"kind": "quadratic", "curvature": curvature, "centre": 0.0}],
            "shifts": {"n": n, "std": spread}}


# --------------------------------------------------------------------------- stationary


@pytest.mark.parametrize("alpha", [1.0, 0.5, 0.0])
def test_stationary_density_closed_form(alpha):
    # G = θ, D = 0.1 + 0.05 θ²: ∫G/D = 10 log D, so p ∝ D^(−10 − α).
    x = np.linspace(-3.0, 3.0, 301)

    def D(y):
        return 0.1 + 0.05 * y**2

    exact = D(x) ** (-10.0 - alpha)
    exact /= exact.sum() * (x[1] - x[0])
    p = stationary_density(x, lambda y: y, D, alpha=alpha)
    np.testing.assert_allclose(p, exact, rtol=1e-9, atol=1e-12 * exact.max())
    # Arrays instead of callables: trapezoid on x only, second order.
    p2 = stationary_density(x, x, D(x), alpha=alpha)
    assert np.abs(p2 - exact).sum() * (x[1] - x[0]) < 1e-3


def test_analytic_stationary_on_quadratic_is_the_ou_gaussian():
    land = build_landscape(quadratic(curvature=2.0, spread=0.5, n=8))
    grid = Grid1D(-1.5, 1.5, 300)
    lr, factor = 0.1, batch_noise_factor(8, 2, "with_replacement")
    p = analytic_stationary(land, grid, lr, factor)
    # D = η h² Var(c) f / 2 is constant: an OU law with variance D / h.
    var = lr * 2.0 * 0.25 * factor / 2.0
    x = grid.centres
    exact = np.exp(-(x**2) / (2 * var))
    exact /= exact.sum() * grid.dx
    np.testing.assert_allclose(p, exact, rtol=1e-9, atol=1e-14)
    assert var == pytest.approx(sde_quadratic_stationary_variance(lr, 2.0, 0.25, 2, 8, "with_replacement"))


def test_analytic_stationary_refuses_vanishing_noise():
    land = build_landscape(quadratic(spread=0.0))
    with pytest.raises(ConfigError, match=r"^diffusion"):
        analytic_stationary(land, Grid1D(-1.0, 1.0, 50), 0.1, 1.0)


# --------------------------------------------------------------------------- Gibbs / Langevin


def test_gibbs_density_normalised_and_boltzmann():
    grid = Grid1D(-4.0, 4.0, 400)
    x = grid.centres
    loss = 0.5 * x**2 + 3.0
    p = gibbs_density(loss, 0.3, grid.dx)
    assert p.sum() * grid.dx == pytest.approx(1.0, abs=1e-14)
    # p(x)/p(0) = exp(−x²/2T) whatever the constant in L.
    k = np.argmin(np.abs(x))
    np.testing.assert_allclose(p / p[k], np.exp(-(x**2 - x[k] ** 2) / 0.6), rtol=1e-12)
    # Riemann sum of the normal: matches the continuum normalisation to ~1e-12 at this dx.
    assert p.max() == pytest.approx(1 / math.sqrt(2 * math.pi * 0.3) * math.exp(-x[k] ** 2 / 0.6), rel=1e-6)
    with pytest.raises(ConfigError, match=r"^langevin\.temperature"):
        gibbs_density(loss, 0.0, grid.dx)


def test_langevin_default_temperature():
    grid = Grid1D(-2.0, 2.0, 101)
    land = build_landscape(quadratic(curvature=1.5, spread=0.4, n=5))
    factor = batch_noise_factor(5, 2, "without_replacement")
    # Constant D = η h² Var(c) f / 2 everywhere, so also at the minimum.
    assert langevin_default_temperature(land, grid, 0.05, factor) == pytest.approx(
        0.05 * 1.5**2 * 0.16 * factor / 2, rel=1e-12)
    with pytest.raises(ConfigError, match=r"^langevin\.temperature"):
        langevin_default_temperature(build_landscape(quadratic(spread=0.0)), grid, 0.05, 1.0)


# --------------------------------------------------------------------------- first passage


def test_mfpt_pure_diffusion_closed_forms():
    D = 0.3

    def zero(y):
        return np.zeros_like(y)

    def const(y):
        return np.full_like(y, D)

    for a, b, x0 in [(-1.0, 2.0, 0.5), (2.0, -1.0, 0.5), (0.0, 1.0, 0.0)]:
        exact = ((b - a) ** 2 - (x0 - a) ** 2) / (2 * D)
        # ~1e-9 when x0 sits on the wall (Ψ is linear, not exponential, in the first gap).
        assert mean_first_passage_time(x0, a, b, zero, const) == pytest.approx(exact, rel=1e-8)
    # Both ends absorbing: T = (x0 − a)(b − x0) / 2D.
    T = mean_first_passage_time(0.5, -1.0, 2.0, zero, const, reflecting=None)
    assert T == pytest.approx(1.5 * 1.5 / (2 * D), rel=1e-7)
    assert mean_first_passage_time(2.0, -1.0, 2.0, zero, const) == 0.0


def test_mfpt_constant_drift_closed_form():
    # dX = μ dt + sqrt(2D) dW (G = −μ), reflecting at a:
    # T = (b − x0)/μ − D/μ² (e^{−μ(x0−a)/D} − e^{−μ(b−a)/D}).
    mu, D, a, b = 0.7, 0.3, -1.0, 2.0
    for x0 in (-1.0, 0.0, 1.5):
        exact = (b - x0) / mu - D / mu**2 * (math.exp(-mu * (x0 - a) / D) - math.exp(-mu * (b - a) / D))
        T = mean_first_passage_time(x0, a, b, lambda y: np.full_like(y, -mu), lambda y: np.full_like(y, D))
        assert T == pytest.approx(exact, rel=1e-8)


def test_mfpt_ornstein_uhlenbeck_against_erf_quadrature():
    # G = kθ, D constant: the inner integral is an erf; the outer one is done here by
    # 200-point Gauss–Legendre, independently of the library's quadrature.
    k, D, a, b = 1.0, 0.1, -2.0, 0.8
    s = math.sqrt(k / (2 * D))
    for x0 in (-0.5, 0.0, 0.6):
        nodes, weights = np.polynomial.legendre.leggauss(200)
        y = 0.5 * (b - x0) * nodes + 0.5 * (b + x0)
        w = 0.5 * (b - x0) * weights
        inner = np.array([math.sqrt(math.pi) / (2 * s) * (math.erf(s * v) - math.erf(s * a)) / D for v in y])
        exact = float(np.sum(w * np.exp(k * y**2 / (2 * D)) * inner))
        T = mean_first_passage_time(x0, a, b, lambda y: k * y, lambda y: np.full_like(y, D))
        assert T == pytest.approx(exact, rel=1e-6)


def test_mfpt_zero_noise_is_the_deterministic_transit():
    # D ≡ 0 and drift towards b: the walker moves deterministically, T = ∫ dy / |G|.
    T = mean_first_passage_time(0.0, -1.0, 2.0, lambda y: -(1.0 + 0.5 * y**2), np.zeros_like)
    exact = math.sqrt(2) * (math.atan(2 / math.sqrt(2)) - 0.0)
    assert T == pytest.approx(exact, rel=1e-4)
    # ... and drift away from b: it never arrives.
    assert mean_first_passage_time(0.0, -1.0, 2.0, lambda y: np.ones_like(y), np.zeros_like) == math.inf


def test_kramers_is_the_small_noise_limit_of_the_mfpt():
    # L = (θ² − 1)²/4: minima ±1 with L″ = 2, barrier at 0 with L″ = −1 and ΔL = 1/4.
    def G(y):
        return y**3 - y

    ratios = []
    for D in (0.05, 0.025, 0.0125):
        T = mean_first_passage_time(-1.0, -3.0, 1.0, G, lambda y, D=D: np.full_like(y, D))
        ratios.append(T / kramers_escape_time(2.0, -1.0, 0.25, D))
    print("MFPT / Kramers:", np.round(ratios, 4))
    # Kramers' corrections are O(D): the ratio tends to 1 linearly.
    assert abs(ratios[-1] - 1) < abs(ratios[0] - 1) and abs(ratios[-1] - 1) < 0.03


# --------------------------------------------------------------------------- quadratic SGD


def _exact_sgd_variance_by_enumeration(lr, h, centres, b, replacement):
    # Var(c̄_B) over every possible minibatch, then the fixed point of
    # V = (1 − ηh)² V + (ηh)² Var(c̄_B).
    c = np.asarray(centres)
    batches = (itertools.product(c, repeat=b) if replacement else itertools.combinations(c, b))
    means = np.array([np.mean(bt) for bt in batches])
    var_batch = np.mean((means - c.mean()) ** 2)
    return (lr * h) ** 2 * var_batch / (1 - (1 - lr * h) ** 2)


@pytest.mark.parametrize(("b", "sampling"), [(1, "with_replacement"), (2, "with_replacement"),
                                             (2, "without_replacement"), (3, "without_replacement")])
def test_sgd_quadratic_variance_matches_enumeration(b, sampling):
    centres = np.array([-1.3, -0.2, 0.1, 0.4, 1.0])
    var_c = centres.var()
    lr, h = 0.3, 2.5
    expected = _exact_sgd_variance_by_enumeration(lr, h, centres, b, sampling == "with_replacement")
    got = sgd_quadratic_stationary_variance(lr, h, var_c, b, 5, sampling)
    assert got == pytest.approx(expected, rel=1e-12)
    # The SDE misses the discrete-time factor 2 / (2 − ηh).
    sde = sde_quadratic_stationary_variance(lr, h, var_c, b, 5, sampling)
    assert got / sde == pytest.approx(2 / (2 - lr * h), rel=1e-12)


def test_sgd_quadratic_variance_limits_and_errors():
    assert sgd_quadratic_stationary_variance(0.1, 1.0, 2.0, 8, 8, "without_replacement") == 0.0
    assert sgd_quadratic_stationary_variance(0.1, 1.0, 2.0, 1, 8, "with_replacement") == pytest.approx(
        0.1 * 2.0 / 1.9)
    with pytest.raises(ConfigError, match=r"^lr"):
        sgd_quadratic_stationary_variance(2.0, 1.0, 1.0, 1, 8, "with_replacement")
    with pytest.raises(ConfigError, match=r"^curvature"):
        sgd_quadratic_stationary_variance(0.1, -1.0, 1.0, 1, 8, "with_replacement")
    with pytest.raises(ConfigError, match=r"^batch_size"):
        sgd_quadratic_stationary_variance(0.1, 1.0, 1.0, 9, 8, "with_replacement")
