"""Between SGD and its SDE: svag, sgd_noise, sme2 / fp_sme2, against exact results.

Every stationary variance here is the exact value of the discrete-time (or
continuous-time) linear recursion on the quadratic l_i = h/2 (θ − c_i)², derived in the
test; Monte Carlo tolerances are 4 standard errors of a sample variance.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.special import erf

from sgdsweep import ConfigError, parse_cell, run_cell
from sgdsweep.fokker_planck.fp1d import FokkerPlanck1D
from sgdsweep.landscapes.grid import Grid1D
from sgdsweep.landscapes.landscape import build_landscape
from sgdsweep.landscapes.noise import batch_noise_factor
from sgdsweep.montecarlo import run_ensemble
from sgdsweep.montecarlo.kernels import svag_coefficients

SEED_MODEL = {"name": "seed", "datapoints": [
    [{"kind": "gaussian", "amplitude": -1.0, "centre": 2.0, "width": 1.0}],
    [{"kind": "gaussian", "amplitude": -1.0, "centre": 2.0, "width": 1.0},
     {"kind": "gaussian", "amplitude": -1.0, "centre": 1.0, "width": 0.1}],
]}
TWO_BASIN = {"name": "two_basin", "n": 16, "reference": [
    {"kind": "gaussian", "amplitude": -1.0, "centre": -1.0, "width": 0.2},
    {"kind": "gaussian", "amplitude": -1.0, "centre": 1.0, "width": 0.6},
    {"kind": "quadratic", "curvature": 0.2, "centre": 0.0}],
    "shifts": {"n": 16, "std": 0.1}}


def quadratic(n: int = 8, spread: float = 1.0, h: float = 1.0) -> dict:
    """l_i = h/2 (θ − c_i)², c_i evenly spaced with mean 0 and population variance spread²."""
    return {"name": "quadratic", "reference": [{"kind": "quadratic", "curvature": h, "centre": 0.0}],
            "shifts": {"n": n, "std": spread}}


def _stationary_var(method, var_exact, chains=200_000, lr=0.8, steps=60, **kw):
    """Ensemble variance after ``steps`` SGD steps from the stationary variance's normal."""
    land = build_landscape(quadratic())
    x0 = np.random.default_rng(3).normal(0.0, math.sqrt(var_exact), chains)
    r = run_ensemble(land, method, x0, lr, np.array([0, steps]), [Grid1D(-12.0, 12.0, 240)],
                     seed=7, **kw)
    assert r.lost[-1] == 0
    # Every stationary law below is a sum of independent platykurtic terms (evenly spaced
    # centres), or normal: kurtosis ≤ 3, so the sample variance has std ≤ V·sqrt(2/N).
    return r.var[-1, 0], 4.0 * var_exact * math.sqrt(2.0 / chains)


def test_svag_coefficients():
    for l in (1, 2, 4, 16, 32):
        a1, a2 = svag_coefficients(l)
        assert a1 + a2 == pytest.approx(1.0, abs=1e-15)
        assert a1 * a1 + a2 * a2 == pytest.approx(l, rel=1e-14)
    assert svag_coefficients(1) == (1.0, 0.0)


@pytest.mark.parametrize(("sampling", "b"), [("with_replacement", 1), ("without_replacement", 2)])
@pytest.mark.parametrize("l", [1, 4, 16])
def test_svag_stationary_variance_is_the_exact_discrete_value(l, sampling, b):
    # One substep: θ ← θ − (η/l)(a₁ ḡ₁ + a₂ ḡ₂), ḡ_k = h(θ − c̄_{B_k}), a₁ + a₂ = 1:
    # θ ← (1 − ηh/l) θ + (ηh/l) ξ, ξ = a₁ c̄₁ + a₂ c̄₂, Var ξ = (a₁² + a₂²) Var(c̄_B) = l·f·Var(c)
    # with f = Σ_b/Σ. Stationary: V = (ηh/l)² l f Var(c) / (1 − (1 − ηh/l)²)
    # = ηh f Var(c) / (2 − ηh/l): SGD's ηh f Var/(2 − ηh) at l = 1, the SDE's ηh f Var/2 as l → ∞.
    lr, h, n = 0.8, 1.0, 8
    f = batch_noise_factor(n, b, sampling)
    exact = lr * h * f / (2.0 - lr * h / l)
    var, tol = _stationary_var("svag", exact, lr=lr, params={"l": l}, batch_size=b, sampling=sampling)
    assert abs(var - exact) < tol, (var, exact, tol)
    sde = lr * h * f / 2.0
    if l <= 4:  # the test can tell SVAG from the SDE it converges to
        assert abs(var - sde) > tol


def test_sgd_noise_stationary_variance():
    # θ ← (1 − ηh) θ + ηh c̄_B − ησ z: V = η (h² f Var(c) + σ²) / (h (2 − ηh)).
    lr, h, sigma = 0.5, 1.0, 0.7
    exact = lr * (h * h * 1.0 + sigma ** 2) / (h * (2.0 - lr * h))
    var, tol = _stationary_var("sgd_noise", exact, lr=lr, steps=80, params={"sigma": sigma})
    assert abs(var - exact) < tol, (var, exact, tol)


def test_sme2_monte_carlo_stationary_variance():
    # Euler–Maruyama, dt = η/m, of dθ = −k θ dt + sqrt(2D) dW with k = h(1 + ηh/2) (the
    # drift G + (η/2)·H·G), D = η h² Var(c)/2: θ ← (1 − k dt) θ + sqrt(2D dt) z,
    # V = 2D / (k (2 − k dt)).
    lr, h, m = 0.5, 1.0, 4
    k, D, dt = h * (1 + lr * h / 2), lr * h * h / 2, lr / m
    exact = 2 * D / (k * (2 - k * dt))
    var, tol = _stationary_var("sme2", exact, lr=lr, steps=80, substeps=m)
    assert abs(var - exact) < tol, (var, exact, tol)
    # … and it is not the SDE's EM value 2D / (h (2 − h dt)).
    assert abs(var - 2 * D / (h * (2 - h * dt))) > tol


def test_fp_sme2_stationary_density_is_its_closed_form():
    # Drift k θ, k = h(1 + ηh/2), constant D = η h² f Var(c)/2: p ∝ exp(−k θ²/(2D)), a normal
    # of variance D/k = η h f Var(c)/(2 + ηh). Scharfetter–Gummel is exact for a linear drift
    # and constant D (the face ratio e^(−k θ_f dx/D) is the Gaussian's), so point values agree.
    lr, h = 0.4, 2.0
    land = build_landscape(quadratic(h=h))
    grid = Grid1D(-3.0, 3.0, 600)
    p = FokkerPlanck1D.from_landscape(land, grid, lr, 1.0, sme2=True).stationary().density
    var = lr * h / (2 + lr * h)
    exact = np.exp(-grid.centres ** 2 / (2 * var))
    exact /= exact.sum() * grid.dx
    np.testing.assert_allclose(p, exact, rtol=1e-9, atol=1e-12)

    # Through run_cell: kind "sme2" on the density grid against exact cell averages.
    cell = run_cell({"landscape": quadratic(h=h), "lr": lr, "methods": ["sgd", "fp", "fp_sme2"],
                     "density_grid": {"lower": -3.0, "upper": 3.0, "cells": 60},
                     "init": {"kind": "normal", "mean": 0.0, "std": 0.3}, "mc": {"chains": 64},
                     "time": {"t_end": 1.0, "snapshots": 2}})
    edges = np.linspace(-3.0, 3.0, 61)
    cdf = 0.5 * (1 + erf(edges / math.sqrt(2 * var)))
    avg = np.diff(cdf) / np.diff(edges)
    got = cell["stationary"].sel({"kind": "sme2"}).values
    assert np.abs(got - avg).sum() * 0.1 < 2e-4
    # The SDE's (kind ito) is wider: variance η h f Var/2. Cell averages at the centres
    # carry the midpoint bias dx²/12 in the second moment.
    ito = cell["stationary"].sel({"kind": "ito"}).values
    x = cell["x"].values
    assert (ito * x * x).sum() * 0.1 == pytest.approx(lr * h / 2 + 0.01 / 12, rel=2e-4)
    assert (got * x * x).sum() * 0.1 == pytest.approx(var + 0.01 / 12, rel=2e-4)


@pytest.mark.parametrize(("land", "b", "sampling"), [(SEED_MODEL, 1, "with_replacement"),
                                                    (TWO_BASIN, 3, "reshuffle"),
                                                    (TWO_BASIN, 2, "without_replacement")])
def test_svag_with_l_1_is_sgd_bit_for_bit(land, b, sampling):
    cfg = {"landscape": land, "methods": ["sgd", "svag"], "svag": {"l": 1}, "batch_size": b,
           "sampling": sampling, "lr": 0.05, "mc": {"chains": 700},
           "density_grid": {"lower": -2.0, "upper": 4.0, "cells": 120},
           "time": {"t_end": 3.0, "snapshots": 4}}
    ds = run_cell(cfg)
    for v in ("density", "mean", "std", "basin_mass", "lost_fraction", "escape_time_mean"):
        a = ds[v].sel({"method": "sgd"}).values
        assert np.array_equal(a, ds[v].sel({"method": "svag"}).values, equal_nan=True), v
    # l = 2 is a different dynamics.
    ds2 = run_cell({**cfg, "svag": {"l": 2}})
    assert not np.array_equal(ds2["density"].sel({"method": "svag"}).values,
                              ds["density"].sel({"method": "sgd"}).values)


def test_sgd_noise_matched_sigma_and_zero_sigma():
    base = {"landscape": quadratic(), "lr": 0.1, "methods": ["sgd", "sgd_noise"], "mc": {"chains": 128},
            "time": {"t_end": 1.0, "snapshots": 3}}
    ds = run_cell({**base, "sgd_noise": {"temperature": 0.3}})
    assert float(ds["sgd_noise_sigma"]) == pytest.approx(math.sqrt(2 * 0.3 / 0.1), rel=1e-15)
    ds = run_cell({**base, "sgd_noise": {"sigma": 0.25}})
    assert float(ds["sgd_noise_sigma"]) == 0.25
    # σ = 0 is SGD bit for bit (same stream, the normals do not advance it); σ > 0 is not.
    for sampling, b in (("with_replacement", 1), ("reshuffle", 3)):
        cfg = {**base, "sampling": sampling, "batch_size": b}
        ds = run_cell({**cfg, "sgd_noise": {"sigma": 0.0}})
        for v in ("density", "mean", "std"):
            np.testing.assert_array_equal(ds[v].sel({"method": "sgd"}).values,
                                          ds[v].sel({"method": "sgd_noise"}).values)
        ds = run_cell({**cfg, "sgd_noise": {"sigma": 0.1}})
        assert not np.array_equal(ds["mean"].sel({"method": "sgd"}).values,
                                  ds["mean"].sel({"method": "sgd_noise"}).values)
    # Default: matched to the cell's Langevin temperature.
    ds = run_cell({**base, "langevin": {"temperature": 0.05}})
    assert float(ds["sgd_noise_sigma"]) == pytest.approx(1.0, rel=1e-15)


BAD = [
    ({"svag": {"l": 0}}, "svag.l: must be >= 1, got 0"),
    ({"svag": {"l": 2.5}}, "svag.l: expected an integer, got 2.5"),
    ({"sgd_noise": {"sigma": -0.1}}, "sgd_noise.sigma: must be >= 0, got -0.1"),
    ({"sgd_noise": {"temperature": 0.0}}, "sgd_noise.temperature: must be > 0, got 0.0"),
    ({"sgd_noise": {"sigma": 0.1, "temperature": 0.1}}, "sgd_noise: give sigma or temperature, not both"),
]


@pytest.mark.parametrize(("extra", "message"), BAD)
def test_bad_input_is_refused_at_validation(extra, message):
    with pytest.raises(ConfigError) as exc:
        parse_cell({"landscape": quadratic(), "methods": ["svag", "sgd_noise"], **extra})
    assert str(exc.value) == message


def _sme2_2d_landscape(centres: list[tuple[float, float]], h: float) -> dict:
    """Shared Hessian hI, one datapoint per centre: Σ = h² Cov(c) (population)."""
    return {"dim": 2, "datapoints": [[{"kind": "quadratic", "curvature": h, "centre": list(c)}]
                                     for c in centres]}


def _normal_2d(C: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """N(0, C) at the cell centres, normalised on the grid (Σ p dx dy = 1)."""
    X, Y = np.meshgrid(x, y, indexing="ij")
    Ci = np.linalg.inv(C)
    p = np.exp(-0.5 * (Ci[0, 0] * X * X + 2 * Ci[0, 1] * X * Y + Ci[1, 1] * Y * Y))
    return p / (p.sum() * (x[1] - x[0]) * (y[1] - y[0]))


def test_fp_sme2_2d_stationary_density_is_its_closed_form():
    """Shared Hessian hI: the SME-2 drift is h(1 + ηh/2)θ (c̄ = 0) with constant D = ηΣ/2, an
    OU process whose stationary law is N(0, C), C = ηΣ/(h(2 + ηh)) (the SDE's: ηΣ/(2h)).

    Four centres (±½, ±½): Σ = h²/4·I, D diagonal, and Scharfetter–Gummel is exact along each
    axis (linear drift, constant D), so the 2-D null vector is the Gaussian at the cell
    centres to round-off (1e-9), through run_cell as kind ``sme2``, with ``fp_sme2``'s density
    on the (x, y) grid normalised. Correlated centres (Σ_xy/√(Σ_xxΣ_yy) = 0.57): the cross
    stencil is second order, L1 error < 0.008 on 60 × 48 cells and 4× smaller (± 12 %) per
    halving of the cells, far below the L1 distance 0.25 to the SDE's law.
    """
    lr, h = 0.4, 2.0
    corners = [(sx, sy) for sx in (-0.5, 0.5) for sy in (-0.5, 0.5)]
    ds = run_cell({"landscape": _sme2_2d_landscape(corners, h), "lr": lr,
                   "methods": ["sme2", "fp", "fp_sme2"],
                   "init": {"kind": "normal", "mean": [0.2, -0.1], "std": 0.2}, "mc": {"chains": 64},
                   "density_grid": {"lower": [-2.0, -1.5], "upper": [2.0, 1.5], "cells": [80, 60]},
                   "time": {"t_end": 1.0, "snapshots": 3}})
    x, y = ds["x"].values, ds["y"].values
    area = (x[1] - x[0]) * (y[1] - y[0])
    sigma = h * h * np.cov(np.array(corners).T, bias=True)
    exact = _normal_2d(lr * sigma / (h * (2 + lr * h)), x, y)
    np.testing.assert_allclose(ds["stationary"].sel({"kind": "sme2"}).values, exact, rtol=1e-9, atol=1e-12)
    ito = ds["stationary"].sel({"kind": "ito"}).values
    np.testing.assert_allclose(ito, _normal_2d(lr * sigma / (2 * h), x, y), rtol=1e-9, atol=1e-12)
    dens = ds["density"].sel({"method": "fp_sme2"}).values
    assert dens.shape == (3, 80, 60) and dens.min() >= 0
    np.testing.assert_allclose(dens.sum(axis=(1, 2)) * area, 1.0, rtol=1e-9)

    from sgdsweep.fokker_planck.fp2d import FokkerPlanck2D

    tilted = [(0.6, 0.4), (-0.6, -0.4), (0.2, -0.3), (-0.2, 0.3)]
    land = build_landscape(_sme2_2d_landscape(tilted, h))
    sigma = h * h * np.cov(np.array(tilted).T, bias=True)
    C = lr * sigma / (h * (2 + lr * h))
    errors = []
    for k in (1, 2):
        gx, gy = Grid1D(-1.5, 1.5, 30 * k), Grid1D(-1.2, 1.2, 24 * k)
        p = FokkerPlanck2D.from_landscape(land, gx, gy, lr, 1.0, sme2=True).stationary().density
        errors.append(np.abs(p - _normal_2d(C, gx.centres, gy.centres)).sum() * gx.dx * gy.dx)
    assert errors[1] < 0.008
    assert 3.5 < errors[0] / errors[1] < 4.5
    ito = _normal_2d(lr * sigma / (2 * h), gx.centres, gy.centres)
    assert np.abs(ito - _normal_2d(C, gx.centres, gy.centres)).sum() * gx.dx * gy.dx > 0.2


def test_sgd_noise_stationary_kind_and_matched_gibbs():
    # Its SDE on the quadratic: drift h θ, D = η (h² f Var(c) + σ²)/2 constant: a normal of
    # variance D/h. Cell averages carry the midpoint bias dx²/12 in the second moment.
    lr, sigma = 0.2, 0.5
    grid = {"lower": -3.0, "upper": 3.0, "cells": 60}
    base = {"lr": lr, "methods": ["sgd_noise"], "density_grid": grid, "mc": {"chains": 64},
            "init": {"kind": "normal", "mean": 0.0, "std": 0.3}, "time": {"t_end": 0.4, "snapshots": 2}}
    cell = run_cell({**base, "landscape": quadratic(), "sgd_noise": {"sigma": sigma}})
    p, x = cell["stationary"].sel({"kind": "sgd_noise"}).values, cell["x"].values
    assert (p * x * x).sum() * 0.1 == pytest.approx(lr * (1.0 + sigma ** 2) / 2 + 0.01 / 12, rel=2e-4)
    # Matched to T with (almost) no minibatch noise: the SDE's stationary law is Gibbs at T.
    cell = run_cell({**base, "landscape": quadratic(spread=1e-4), "sgd_noise": {"temperature": 0.3},
                     "langevin": {"temperature": 0.3}})
    p, g = (cell["stationary"].sel({"kind": k}).values for k in ("sgd_noise", "gibbs"))
    assert 0.5 * np.abs(p - g).sum() * 0.1 < 1e-6


def test_sgd_noise_stationary_in_2d_is_gibbs_when_the_gradient_noise_vanishes():
    """One datapoint (Σ = 0): sgd_noise's SDE has D = ησ²/2 I, whose stationary law is Gibbs
    at T = ησ²/2, a Gaussian with variances T/h_x, T/h_y. Tolerance: the density grid's cell
    averaging adds dx²/12 = 8e-4 to each variance (0.4–0.8 % here) and the finite-volume
    scheme an error of the same order: 2 %."""
    land = {"dim": 2, "name": "one_point_2d",
            "reference": [{"kind": "quadratic", "curvature": [[1.0, 0.0], [0.0, 2.0]], "centre": [0.0, 0.0]}],
            "shifts": [[0.0, 0.0]]}
    lr, T = 0.1, 0.2
    ds = run_cell({"landscape": land, "lr": lr, "methods": ["sgd_noise"], "mc": {"chains": 32},
                   "sgd_noise": {"sigma": math.sqrt(2 * T / lr)}, "langevin": {"temperature": T},
                   "density_grid": {"lower": -2.0, "upper": 2.0, "cells": [40, 40]},
                   "time": {"t_end": 0.2, "snapshots": 2}})
    p = ds["stationary"].sel(kind="sgd_noise")
    x, y = (p[d] for d in p.dims)
    mass = float(p.sum()) * 0.1 * 0.1
    assert mass == pytest.approx(1.0, abs=1e-10)
    var_x = float((p * x**2).sum() / p.sum())
    var_y = float((p * y**2).sum() / p.sum())
    assert var_x == pytest.approx(T / 1.0, rel=0.02)
    assert var_y == pytest.approx(T / 2.0, rel=0.02)
