"""The 1-D Fokker–Planck solver against exact results (stated tolerances)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from sgdsweep.errors import ConfigError
from sgdsweep.fokker_planck.fp1d import FokkerPlanck1D, bernoulli
from sgdsweep.fokker_planck.references import analytic_stationary
from sgdsweep.landscapes.grid import Grid1D
from sgdsweep.landscapes.initial import Initial
from sgdsweep.landscapes.landscape import build_landscape

CONF = Path(__file__).resolve().parents[1] / "conf" / "landscape"

# Two datapoints with different minima plus a bump on one: smooth, double-welled L and a
# diffusion D = η (g_0 − g_1)² / 8 that varies but never vanishes.
SMOOTH = {"datapoints": [
    [{"kind": "quadratic", "curvature": 1.0, "centre": -1.0}],
    [{"kind": "quadratic", "curvature": 1.0, "centre": 1.0},
     {"kind": "gaussian", "amplitude": 0.3, "centre": 0.3, "width": 0.5}],
]}

# conf/landscape/two_basin.yaml with its interpolations written out (wider wells).
TWO_BASIN = {
    "name": "two_basin", "width_left": 0.5, "width_right": 0.8, "shift_std": 0.1, "n": 16,
    "reference": [
        {"kind": "gaussian", "amplitude": -1.0, "centre": -1.0, "width": 0.5},
        {"kind": "gaussian", "amplitude": -1.0, "centre": 1.0, "width": 0.8},
        {"kind": "quadratic", "curvature": 0.2, "centre": 0.0},
    ],
    "shifts": {"n": 16, "std": 0.1},
}


def normal_density(grid: Grid1D, mean: float, std: float) -> np.ndarray:
    init = Initial.from_dict({"kind": "normal", "mean": mean, "std": std}, 1)
    return init.cell_masses(grid) / grid.dx


def test_bernoulli_function():
    for z in (-800.0, -30.0, -1.0, -1e-5, 0.0, 1e-5, 0.3, 30.0, 800.0):
        b = bernoulli(z)
        assert math.isfinite(b) and b >= 0
        # B(−z) = B(z) + z, to round-off.
        assert bernoulli(-z) == pytest.approx(b + z, rel=1e-12, abs=1e-14 * max(1.0, abs(z)))
        if z != 0.0 and abs(z) < 700:
            assert b == pytest.approx(z / math.expm1(z), rel=1e-12)
    assert bernoulli(0.0) == 1.0


def test_generator_is_mass_conserving_m_matrix():
    land = build_landscape(TWO_BASIN)
    fp = FokkerPlanck1D.from_landscape(land, Grid1D(-3.0, 3.0, 300), 0.05, 1.0)
    lower, diag, upper = fp.tridiagonal()
    assert np.all(lower >= 0) and np.all(upper >= 0) and np.all(diag <= 0)
    col = diag.copy()
    col[:-1] += lower[1:]
    col[1:] += upper[:-1]
    assert np.max(np.abs(col)) <= 1e-12 * np.max(np.abs(diag))


def test_mass_conserved_and_positive_over_long_run():
    land = build_landscape(TWO_BASIN)
    grid = Grid1D(-3.0, 3.0, 400)
    fp = FokkerPlanck1D.from_landscape(land, grid, 0.05, 1.0)
    p0 = normal_density(grid, 0.1, 0.5)
    p0 /= p0.sum() * grid.dx
    # 10^4 implicit steps of dt = 0.01.
    out = fp.evolve(p0, np.array([0.0, 1.0, 10.0, 100.0]), 0.01)
    mass_err = np.max(np.abs(out.sum(axis=1) * grid.dx - 1.0))
    print(f"mass error after 1e4 steps: {mass_err:.2e}")
    assert mass_err < 1e-10
    assert out.min() >= 0.0


@pytest.mark.parametrize("alpha", [1.0, 0.5, 0.0])
def test_stationary_solve_is_second_order(alpha):
    land = build_landscape(SMOOTH)
    sizes = [100, 200, 400, 800]
    errors = []
    for n in sizes:
        grid = Grid1D(-3.0, 3.5, n)
        st = FokkerPlanck1D.from_landscape(land, grid, 0.5, 1.0, alpha=alpha).stationary()
        exact = analytic_stationary(land, grid, 0.5, 1.0, alpha=alpha)
        assert not st.degenerate
        assert st.density.sum() * grid.dx == pytest.approx(1.0, abs=1e-13)
        errors.append(np.abs(st.density - exact).sum() * grid.dx)
    orders = np.log2(np.array(errors[:-1]) / np.array(errors[1:]))
    print(f"alpha={alpha}: L1 errors {[f'{e:.3e}' for e in errors]}, orders {np.round(orders, 3)}")
    assert np.all(orders >= 1.8)
    assert errors[-1] < 2e-5


def test_time_marching_reaches_the_stationary_solve():
    land = build_landscape(SMOOTH)
    grid = Grid1D(-3.0, 3.5, 300)
    fp = FokkerPlanck1D.from_landscape(land, grid, 0.5, 1.0)
    st = fp.stationary()
    out = fp.evolve(normal_density(grid, 0.5, 0.175), np.array([0.0, 5.0, 400.0]), 0.05)
    # Implicit Euler's fixed point is exactly the zero-flux null vector.
    assert np.abs(out[-1] - st.density).sum() * grid.dx < 1e-8
    assert np.abs(out[1] - st.density).sum() * grid.dx > 1e-3  # and it really did move


def test_evolve_lands_on_snapshot_times():
    # Pure diffusion D = 1 from a narrow normal: variance grows as σ0² + 2t.
    grid = Grid1D(-20.0, 20.0, 2000)
    fp = FokkerPlanck1D(grid, np.zeros(2001), np.ones(2001), np.ones(2000))
    times = np.array([0.0, 0.3, 1.0, 2.2])
    out = fp.evolve(normal_density(grid, 0.0, 0.5), times, 0.007)  # dt does not divide the times
    x = grid.centres
    var = (out * x**2).sum(axis=1) * grid.dx
    # Cell averaging adds dx²/12; implicit Euler is exact for the second moment of pure diffusion.
    np.testing.assert_allclose(var, 0.25 + 2 * times + grid.dx**2 / 12, rtol=2e-6)


def test_seed_landscape_stays_finite_and_normalised():
    land = build_landscape(yaml.safe_load((CONF / "seed_two_point.yaml").read_text()))
    grid = Grid1D(-1.0, 4.0, 1000)
    fp = FokkerPlanck1D.from_landscape(land, grid, 0.02, 1.0)  # b = 1 with replacement: Σ_b = Σ
    times = np.linspace(0.0, 10.0, 21)
    out = fp.evolve(normal_density(grid, 0.5, 0.175), times, 0.02)
    assert np.all(np.isfinite(out)) and out.min() >= 0.0
    assert np.max(np.abs(out.sum(axis=1) * grid.dx - 1.0)) < 1e-12
    late = fp.evolve(normal_density(grid, 0.5, 0.175), np.array([0.0, 1e3]), 0.02)
    assert np.all(np.isfinite(late)) and abs(late[-1].sum() * grid.dx - 1.0) < 1e-11
    # D underflows to 0 near the shared wide minimum: the stationary law collapses there.
    st = fp.stationary()
    assert np.all(np.isfinite(st.density)) and st.degenerate
    assert abs(grid.centres[np.argmax(st.density)] - 2.0) < 2 * grid.dx


def _two_basin_grad(theta: np.ndarray) -> np.ndarray:
    """G(θ) of TWO_BASIN by hand: mean over the 16 shifted copies of l′."""
    s = np.linspace(-1.0, 1.0, 16)
    s = 0.1 * s / s.std()
    r = theta[:, None] - s[None, :]
    g = (2 * (r + 1) / 0.25 * np.exp(-((r + 1) ** 2) / 0.25)
         + 2 * (r - 1) / 0.64 * np.exp(-((r - 1) ** 2) / 0.64) + 0.2 * r)
    return g.mean(axis=1)


def test_drift_only_matches_gradient_descent_ensemble():
    land = build_landscape(TWO_BASIN)
    probe = np.linspace(-2.5, 2.5, 7)
    np.testing.assert_allclose(_two_basin_grad(probe), land.evaluate(probe)["grad"][:, 0], atol=1e-12)

    lr = 2e-3
    times = np.array([0.0, 0.05, 0.2, 0.5, 1.0, 2.0])
    steps = np.round(times / lr).astype(int)
    # The ensemble is a deterministic quadrature of N(0.1, 0.5²): no Monte Carlo error.
    z = np.linspace(-6.0, 6.0, 3001)
    w = np.exp(-0.5 * z**2)
    w /= w.sum()
    theta = 0.1 + 0.5 * z
    gd_mean, gd_std = [], []
    for k in range(steps[-1] + 1):
        if k in steps:
            m = float(w @ theta)
            gd_mean.append(m)
            gd_std.append(math.sqrt(float(w @ (theta - m) ** 2)))
        theta = theta - lr * _two_basin_grad(theta)

    grid = Grid1D(-3.0, 3.0, 1500)
    fp = FokkerPlanck1D.from_landscape(land, grid, lr, 1.0, drift_only=True)
    out = fp.evolve(normal_density(grid, 0.1, 0.5), times, lr)
    x = grid.centres
    mean = (out * x).sum(axis=1) * grid.dx
    std = np.sqrt((out * (x[None, :] - mean[:, None]) ** 2).sum(axis=1) * grid.dx)
    print("GD mean/std", np.round(gd_mean, 4), np.round(gd_std, 4))
    print("FP mean/std errors", np.round(mean - gd_mean, 5), np.round(std - gd_std, 5))
    # Tolerance: first-order upwinding smears by ~dx/4 = 1e-3 here, and GD differs from the
    # gradient flow by O(η h) ≈ 1 %·(distance travelled); 3e-3 covers both at dx = 4e-3.
    np.testing.assert_allclose(mean, gd_mean, atol=3e-3)
    np.testing.assert_allclose(std, gd_std, atol=3e-3)
    assert gd_std[-1] > 0.8  # the ensemble really split between the two basins


def test_zero_noise_stationary_is_finite_and_flagged():
    land = build_landscape({"reference": [{"kind": "quadratic", "curvature": 1.0, "centre": 0.3}],
                            "shifts": {"n": 8, "std": 0.0}})
    grid = Grid1D(-1.0, 1.0, 201)
    fp = FokkerPlanck1D.from_landscape(land, grid, 0.1, 1.0)
    assert np.max(fp.diff_faces) < 1e-30  # zero up to the round-off of Σ
    st = fp.stationary()
    assert st.degenerate
    assert np.all(np.isfinite(st.density)) and st.density.sum() * grid.dx == pytest.approx(1.0)
    assert grid.centres[np.argmax(st.density)] == pytest.approx(0.3, abs=grid.dx)
    p0 = normal_density(grid, 0.0, 0.2)
    p0 /= p0.sum() * grid.dx
    out = fp.evolve(p0, np.array([0.0, 50.0]), 0.1)
    assert np.all(np.isfinite(out)) and out.min() >= 0.0
    assert abs(out[-1].sum() * grid.dx - 1.0) < 1e-12


def test_bad_input_names_the_field():
    grid = Grid1D(0.0, 1.0, 10)
    z = np.zeros(11)
    with pytest.raises(ConfigError, match=r"^drift_faces"):
        FokkerPlanck1D(grid, np.zeros(10), z, np.zeros(10))
    with pytest.raises(ConfigError, match=r"^diff_faces"):
        FokkerPlanck1D(grid, z, -np.ones(11), np.zeros(10))
    fp = FokkerPlanck1D(grid, z, np.ones(11), np.ones(10))
    p0 = np.ones(10)
    with pytest.raises(ConfigError, match=r"^times"):
        fp.evolve(p0, np.array([0.0, 1.0, 1.0]), 0.1)
    with pytest.raises(ConfigError, match=r"^dt"):
        fp.evolve(p0, np.array([0.0, 1.0]), 0.0)
    with pytest.raises(ConfigError, match=r"^p0"):
        fp.evolve(-p0, np.array([0.0, 1.0]), 0.1)
    with pytest.raises(ConfigError, match=r"^lr"):
        FokkerPlanck1D.from_landscape(build_landscape(SMOOTH), grid, -0.1, 1.0)
