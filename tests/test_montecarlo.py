"""Monte Carlo ensembles against exact results.

Standard errors are measured, never assumed: either from the spread of per-snapshot
estimates taken far enough apart to be independent (the lag-Δ autocorrelation of
θ on a quadratic is |1 − ηh|^Δ, below 1e-6 for the spacings used), or from
independent replicas (different seeds).
"""

from __future__ import annotations

import numba
import numpy as np
import pytest

from sgdsweep.errors import ConfigError
from sgdsweep.landscapes.grid import Grid1D
from sgdsweep.landscapes.landscape import build_landscape
from sgdsweep.montecarlo import run_ensemble


def quadratic(n: int, spread: float, h: float = 1.0, dim: int = 1):
    return build_landscape({
        "dim": dim,
        "reference": [{"kind": "quadratic", "curvature": h, "centre": 0.0}],
        "shifts": {"n": n, "std": spread},
    })


def double_well():
    # L = θ²/2 + exp(−(θ − 0.1)²/0.25): two wells near ±1, barrier ≈ 0.69, asymmetric.
    return build_landscape({"dim": 1, "datapoints": [[
        {"kind": "quadratic", "curvature": 1.0, "centre": 0.0},
        {"kind": "gaussian", "amplitude": 1.0, "centre": 0.1, "width": 0.5},
    ]]})


WIDE = (Grid1D(-10.0, 10.0, 200),)


def late_variance(res, skip: int) -> tuple[float, float]:
    """Mean of the per-snapshot variances after ``skip`` snapshots, and its standard error."""
    v = res.var[skip:, 0]
    return float(v.mean()), float(v.std(ddof=1) / np.sqrt(v.size))


# --------------------------------------------------------------------------- SGD: exact discrete time


@pytest.mark.parametrize(
    ("sampling", "b"), [("with_replacement", 1), ("with_replacement", 2), ("without_replacement", 2)]
)
def test_sgd_stationary_variance_is_the_discrete_time_formula(sampling, b):
    n, h, lr, spread = 8, 1.0, 0.5, 1.0  # ηh = 0.5
    land = quadratic(n, spread, h)
    res = run_ensemble(land, "sgd", np.zeros((4000, 1)), lr, np.arange(0, 2001, 20), WIDE,
                       batch_size=b, sampling=sampling, seed=3)
    est, se = late_variance(res, skip=5)  # burn-in 100 steps: 0.5^100 of the start remains
    fpc = 1.0 if sampling == "with_replacement" else (n - b) / (n - 1)
    exact = lr * spread**2 * h / (b * (2 - lr * h)) * fpc
    sde = lr * spread**2 * h / (2 * b) * fpc
    print(f"{sampling} b={b}: {est:.5f} ± {se:.5f}, exact {exact:.5f}, SDE {sde:.5f}")
    assert abs(est - exact) < 4 * se
    assert abs(est - sde) > 20 * se  # the SDE prediction is 25% low here, and it shows
    assert res.lost[-1] == 0


def test_reshuffle_epoch_variance_is_exact():
    """Random reshuffling, sampled at epoch ends: θ_E+1 = ρ^K θ_E + ηh Σ_k ρ^(K−1−k) c̄_k.

    The K = n/b batch means of one random partition have Var = σ²(n−b)/(b(n−1)) and
    pairwise Cov = −σ²/(n−1); epochs use independent permutations.
    """
    n, b, h, lr, s2 = 8, 2, 1.0, 0.5, 1.0
    rho, K = 1 - lr * h, n // b
    a = rho ** np.arange(K - 1, -1, -1)
    v, w = s2 * (n - b) / (b * (n - 1)), -s2 / (n - 1)
    var_sum = (a**2).sum() * v + (a.sum() ** 2 - (a**2).sum()) * w
    exact = (lr * h) ** 2 * var_sum / (1 - rho ** (2 * K))
    with_repl_marginal = lr * s2 * h / (b * (2 - lr * h)) * (n - b) / (n - 1)
    res = run_ensemble(quadratic(n, 1.0, h), "sgd", np.zeros((4000, 1)), lr, np.arange(0, 2001, 20),
                       WIDE, batch_size=b, sampling="reshuffle", seed=4)
    est, se = late_variance(res, skip=5)
    print(f"reshuffle: {est:.5f} ± {se:.5f}, exact {exact:.5f}, iid-batch formula {with_repl_marginal:.5f}")
    assert abs(est - exact) < 4 * se
    assert abs(est - with_repl_marginal) > 20 * se


def test_two_datapoints_stationary_law_is_uniform_not_gaussian():
    """n = 2, b = 1, ηh = ½: θ = ½ Σ_k 2^−k ε_k s with iid signs — exactly Uniform[−s, s].

    A Gaussian of the same variance s²/3 would put 8.3% of the mass beyond |θ| = s;
    the SGD law has none (bounded support |θ| ≤ ηh s / (1 − |1 − ηh|) = s).
    """
    s, lr = 1.0, 0.5
    chains = 20000
    grid = Grid1D(-2.0, 2.0, 40)  # faces at ±1
    x0 = np.linspace(-0.99, 0.99, chains)[:, None]
    steps = np.array([200, 260, 320, 380, 440])  # 2^−60 correlation between snapshots
    res = run_ensemble(quadratic(2, s), "sgd", x0, lr, steps, (grid,), seed=5)
    counts = res.counts.sum(axis=0)
    total = counts.sum()
    assert total == chains * steps.size
    c = grid.centres
    assert counts[np.abs(c) > 1.06].sum() == 0
    inner = counts[np.abs(c) < 0.99]  # 20 cells of probability 1/20 each
    p = 1.0 / 20
    z = (inner - total * p) / np.sqrt(total * p * (1 - p))
    print("uniform-law z-scores: max", np.abs(z).max(), "chi2/dof", (z**2).mean())
    assert np.abs(z).max() < 4.5
    assert (z**2).mean() < 2.0  # chi² per degree of freedom: 1 expected, P(>2) ≈ 1e-4


# --------------------------------------------------------------------------- SDE and Langevin


def test_sde_stationary_variance_matches_its_euler_maruyama_and_continuous_law():
    """OU with constant Σ = h² Var(c): EM with dt = η/m has Var = ηΣ_b / (h(2 − h dt)).

    The continuous SDE law ηΣ_b/(2h) differs from it by h·dt/2 relative (3.1% at m = 8).
    """
    n, h, lr, s2, m = 8, 1.0, 0.5, 1.0, 8
    res = run_ensemble(quadratic(n, 1.0, h), "sde", np.zeros((4000, 1)), lr, np.arange(0, 2001, 20),
                       WIDE, substeps=m, seed=6)
    est, se = late_variance(res, skip=5)
    sigma_b = h**2 * s2  # b = 1 with replacement
    dt = lr / m
    em = lr * sigma_b / (h * (2 - h * dt))
    cont = lr * sigma_b / (2 * h)
    sgd = lr * s2 * h / (2 - lr * h)
    print(f"sde: {est:.5f} ± {se:.5f}, EM exact {em:.5f}, continuous {cont:.5f}, SGD {sgd:.5f}")
    assert abs(est - em) < 4 * se
    assert abs(est - cont) / cont < 0.04
    assert abs(est - sgd) > 20 * se


def test_langevin_quadratic_variance_is_gibbs():
    h, lr, T, m = 2.0, 0.25, 0.3, 5
    res = run_ensemble(quadratic(4, 1.0, h), "langevin", np.zeros((4000, 1)), lr,
                       np.arange(0, 1001, 10), WIDE, substeps=m, temperature=T, seed=7)
    est, se = late_variance(res, skip=5)
    dt = lr / m
    em = 2 * T / (h * (2 - h * dt))  # exact for the EM chain
    print(f"langevin: {est:.5f} ± {se:.5f}, EM exact {em:.5f}, Gibbs T/h {T / h:.5f}")
    assert abs(est - em) < 4 * se
    assert abs(est - T / h) / (T / h) < 0.06  # EM bias h·dt/2 = 5%


def test_langevin_double_well_basin_occupation_is_gibbs():
    """Occupation of the left well vs ∫ exp(−L/T) (quadrature on 120 001 points), 8 replicas."""
    land = double_well()
    x = np.linspace(-6.0, 6.0, 120001)
    L = land.evaluate(x)["loss"]
    inner = np.abs(x) < 0.8
    edge = float(x[inner][np.argmax(L[inner])])  # the barrier top
    T = 0.5
    w = np.exp(-(L - L.min()) / T)
    gibbs_left = w[x < edge].sum() / w.sum()
    reps = []
    for seed in range(8):
        res = run_ensemble(land, "langevin", np.linspace(-2, 2, 500)[:, None], 0.05,
                           np.arange(0, 4001, 100), (Grid1D(-6.0, 6.0, 240),), substeps=5,
                           temperature=T, seed=seed, basin_edges=(edge,))
        assert res.lost[-1] == 0
        assert np.array_equal(res.basin_counts.sum(axis=1), np.full(41, 500))
        reps.append((res.basin_counts[8:, 0] / res.chains).mean())  # t ≥ 40
    reps = np.asarray(reps)
    est, se = reps.mean(), reps.std(ddof=1) / np.sqrt(reps.size)
    # The chain simulated is Euler–Maruyama at dt = 0.01, whose own stationary law differs from
    # Gibbs by O(dt). It is computed exactly here: the EM kernel θ' ~ N(θ − dt L′(θ), 2T dt) on
    # cells of 0.02 (the kernel's spread is 0.1) with a face at the barrier top, a dense solve of
    # πP = π. Its left mass moves by 2.4e-8 when the cells are halved (6e-9 halved again), so the
    # EM bias |em − Gibbs| (≈ 2e-5) is known, not guessed; what is left is sampling error.
    dt, h = 0.05 / 5, 0.02
    y = edge + h * (np.arange(-300, 300) + 0.5)
    step = np.exp(-(y[None, :] - (y - dt * land.evaluate(y)["grad"][:, 0])[:, None]) ** 2 / (4 * T * dt))
    A = (step / step.sum(axis=1, keepdims=True)).T - np.eye(y.size)
    A[-1] = 1.0  # replace one (redundant) balance row by the normalisation
    pi = np.linalg.solve(A, np.eye(y.size)[-1])
    em_left = pi[y < edge].sum()
    print(f"double well: left mass {est:.4f} ± {se:.4f}, EM chain {em_left:.6f}, Gibbs {gibbs_left:.6f}")
    # 4 SE: the 8 replicas are independent, so a correct kernel fails this ~1 run in 200
    # (Student t with 7 degrees of freedom).
    assert abs(est - em_left) < 4 * se
    assert abs(est - gibbs_left) < 4 * se + abs(em_left - gibbs_left)


def test_sde_2d_stationary_covariance_is_exact_for_em():
    """Anisotropic 2-D OU, noise not commuting with H: C_ab = η dt Σ_b,ab / (1 − A_a A_b), A = 1 − dt h."""
    hx, hy, lr, m = 1.0, 4.0, 0.1, 2
    land = build_landscape({
        "dim": 2,
        "reference": [{"kind": "quadratic", "curvature": [hx, hy], "centre": [0.0, 0.0]}],
        "shifts": {"n": 8, "std": 1.0, "direction": [1.0, 1.0]},
    })
    sigma = land.evaluate(np.zeros((1, 2)))["cov"][0]
    dt = lr / m
    A = 1 - dt * np.array([hx, hy])
    C = lr * dt * sigma / (1 - np.outer(A, A))
    grids = (Grid1D(-4.0, 4.0, 160), Grid1D(-4.0, 4.0, 160))
    # Snapshots every 40 steps after a burn-in of 480: the slow axis contracts by
    # (1 − dt·hx)^(2·40) = 0.017 between snapshots (squares and products decorrelate as its
    # square, 3e-4), and by 1e-21 in the burn-in: 27 effectively independent snapshots of
    # 4000 chains (as many as 26 snapshots 100 steps apart gave, at half the steps).
    res = run_ensemble(land, "sde", np.zeros((4000, 2)), lr, np.arange(0, 1521, 40), grids,
                       substeps=m, seed=8)
    burn = 12
    v = res.var[burn:]
    est, se = v.mean(axis=0), v.std(axis=0, ddof=1) / np.sqrt(v.shape[0])
    print("2-D sde var", est, "±", se, "exact", np.diag(C))
    assert np.all(np.abs(est - np.diag(C)) < 4 * se)
    # Cross-covariance from the 2-D histogram (cell centres; binning adds no bias to E[xy]
    # beyond O(dx²) terms, dx = 0.05).
    cx, cy = grids[0].centres, grids[1].centres
    p = res.counts[burn:].sum(axis=0) / res.counts[burn:].sum()
    cxy = (p * np.outer(cx, cy)).sum() - (p.sum(1) @ cx) * (p.sum(0) @ cy)
    rho_est, rho = cxy / np.sqrt(est.prod()), C[0, 1] / np.sqrt(C[0, 0] * C[1, 1])
    print(f"2-D correlation {rho_est:.4f}, exact {rho:.4f}")
    assert abs(rho_est - rho) < 0.01


# --------------------------------------------------------------------------- deterministic cases


@pytest.mark.parametrize("name", ["two_basin", "double_well", "anisotropic_2d"])
def test_gd_is_bit_identical_to_numpy_gradient_descent(name):
    """θ ← θ − η G with G from Landscape.evaluate; one chain per run, so mean is the position."""
    if name == "two_basin":
        land = build_landscape({"dim": 1, "shifts": {"n": 16, "std": 0.1}, "reference": [
            {"kind": "gaussian", "amplitude": -1.0, "centre": -1.0, "width": 0.2},
            {"kind": "gaussian", "amplitude": -1.0, "centre": 1.0, "width": 0.6},
            {"kind": "quadratic", "curvature": 0.2, "centre": 0.0}]})
    elif name == "double_well":
        land = double_well()
    else:
        land = build_landscape({"dim": 2, "shifts": {"n": 8, "std": 0.5, "direction": [1.0, 1.0]},
                                "reference": [{"kind": "quadratic", "curvature": [1.0, 4.0],
                                               "centre": [0.0, 0.0]}]})
    grids = tuple(Grid1D(-3.0, 3.0, 30) for _ in range(land.dim))
    lr, steps = 0.07, np.arange(0, 41)
    for x in np.random.default_rng(0).uniform(-2.0, 2.0, (4, land.dim)):
        res = run_ensemble(land, "gd", x[None, :], lr, steps, grids, seed=int(x[0] * 1e6) % 7)
        th = x[None, :].copy()
        for k in range(1, steps[-1] + 1):
            th = th - lr * land.evaluate(th)["grad"]
            assert np.array_equal(res.mean[k], th[0])
            assert np.all(res.var[k] == 0.0)


def test_escape_step_of_gradient_descent_is_exact():
    """GD on l = h/2 θ² from θ₀ decays as θ_k = θ₀(1 − ηh)^k: the first k with θ_k < a."""
    land = quadratic(1, 0.0, h=1.0)
    lr, a = 0.1, 0.2
    x0 = np.array([[0.1], [0.25], [0.5], [1.0], [2.0]])
    res = run_ensemble(land, "gd", x0, lr, np.array([0, 100]), (Grid1D(-3.0, 3.0, 60),),
                       escape_threshold=a, escape_direction=-1)
    expected = []
    for x in x0[:, 0]:
        th, k = x, 0
        while not th < a:
            th, k = th - lr * th, k + 1
        expected.append(k)
    assert expected == [0, 3, 9, 16, 22]  # ⌈ln(θ₀/a) / ln(1/0.9)⌉
    assert np.array_equal(res.escape_step, expected)
    up = run_ensemble(land, "gd", -x0, lr, np.array([0, 100]), (Grid1D(-3.0, 3.0, 60),),
                      escape_threshold=-a, escape_direction=+1)
    assert np.array_equal(up.escape_step, expected)
    none = run_ensemble(land, "gd", x0, lr, np.array([0, 5]), (Grid1D(-3.0, 3.0, 60),))
    assert np.all(none.escape_step == -1)


def test_histogram_cells_and_upper_edge():
    land = quadratic(1, 0.0)
    grid = Grid1D(-1.0, 1.0, 4)
    x0 = np.array([[-1.0], [-0.5], [-0.25], [0.0], [0.49], [1.0]])
    res = run_ensemble(land, "gd", x0, 0.1, np.array([0]), (grid,), basin_edges=(-0.3, 0.5))
    assert res.counts[0].tolist() == [1, 2, 2, 1]  # θ = upper joins the last cell
    assert res.basin_counts[0].tolist() == [2, 3, 1]
    assert res.lost[0] == 0
    np.testing.assert_allclose(res.mean[0, 0], x0.mean(), rtol=1e-15)
    np.testing.assert_allclose(res.var[0, 0], x0.var(), rtol=1e-14)


# --------------------------------------------------------------------------- reproducibility


def _all_methods(land, grids, x0):
    out = []
    steps = np.array([0, 13, 50])
    for method, kw in [
        ("sgd", {"sampling": "with_replacement", "batch_size": 3}),
        ("sgd", {"sampling": "without_replacement", "batch_size": 3}),
        ("sgd", {"sampling": "reshuffle", "batch_size": 3}),
        ("sde", {"substeps": 3}),
        ("langevin", {"substeps": 3, "temperature": 0.2}),
        ("svag", {"params": {"l": 3}, "sampling": "reshuffle", "batch_size": 3}),
        ("svag", {"params": {"l": 4}, "sampling": "without_replacement", "batch_size": 2}),
        ("sgd_noise", {"params": {"sigma": 0.4}, "batch_size": 2}),
        ("sme2", {"substeps": 3}),
    ]:
        r = run_ensemble(land, method, x0, 0.3, steps, grids, seed=11, escape_threshold=0.5, **kw)
        out.append((r.counts, r.mean, r.var, r.basin_counts, r.lost, r.escape_step, r.lost_step))
    return out


@pytest.mark.parametrize("dim", [1, 2])
def test_results_are_bit_identical_for_1_and_2_threads(dim):
    land = quadratic(8, 1.0, dim=dim)
    grids = tuple(Grid1D(-3.0, 3.0, 30) for _ in range(dim))
    x0 = np.random.default_rng(1).normal(0.0, 0.5, (3001, dim))
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = _all_methods(land, grids, x0)
        numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
        two = _all_methods(land, grids, x0)
    finally:
        numba.set_num_threads(before)
    for a, b in zip(one, two, strict=True):
        for u, v in zip(a, b, strict=True):
            assert np.array_equal(u, v, equal_nan=True)
    # Different methods and seeds do draw different numbers.
    assert not np.array_equal(one[0][0], one[1][0])
    other = run_ensemble(land, "sgd", x0, 0.3, np.array([0, 13, 50]), grids, seed=12, batch_size=3)
    assert not np.array_equal(other.counts, one[0][0])


@pytest.mark.parametrize(("method", "kw"), [
    ("sgd", {"sampling": "reshuffle", "batch_size": 3}),
    ("sgd", {"sampling": "without_replacement", "batch_size": 2}),
    ("sde", {"substeps": 3}),
])
def test_snapshot_schedule_does_not_change_the_chains(method, kw):
    land = quadratic(8, 1.0)
    x0 = np.linspace(-1, 1, 500)[:, None]
    coarse = run_ensemble(land, method, x0, 0.3, np.array([40]), WIDE, seed=2, **kw)
    fine = run_ensemble(land, method, x0, 0.3, np.array([0, 7, 7, 19, 40]), WIDE, seed=2, **kw)
    assert np.array_equal(coarse.counts[-1], fine.counts[-1])
    assert np.array_equal(coarse.var[-1], fine.var[-1])


# --------------------------------------------------------------------------- lost chains


def test_chains_leaving_the_grid_are_counted_not_dropped():
    land = quadratic(8, 1.0)
    grid = Grid1D(-0.5, 0.5, 20)  # stationary std is 0.58: many chains leave
    chains = 2000
    res = run_ensemble(land, "sgd", np.zeros((chains, 1)), 0.5, np.arange(0, 201, 10), (grid,), seed=9)
    assert res.lost[0] == 0 and res.lost[-1] > 0.5 * chains
    assert np.all(np.diff(res.lost) >= 0)
    np.testing.assert_array_equal(res.counts.sum(axis=1), chains - res.lost)
    np.testing.assert_array_equal(res.basin_counts.sum(axis=1), chains - res.lost)
    density = res.counts / (chains * grid.dx)
    np.testing.assert_allclose(density.sum(axis=1) * grid.dx, 1 - res.lost / chains, rtol=1e-12)
    lost_by_end = res.lost_step[res.lost_step >= 0]
    assert lost_by_end.size == res.lost[-1] and lost_by_end.min() >= 1 and lost_by_end.max() <= 200
    # Snapshot k's lost count is exactly the chains lost at or before its step.
    np.testing.assert_array_equal(res.lost, [(lost_by_end <= s).sum() for s in np.arange(0, 201, 10)])


def test_diverging_chains_are_lost_and_initial_outsiders_too():
    land = quadratic(8, 1.0, h=1.0)
    x0 = np.array([[0.1], [-0.2], [5e3]])  # the last starts outside the grid
    res = run_ensemble(land, "gd", x0, 2.5, np.array([0, 10, 100]), (Grid1D(-1e3, 1e3, 10),))
    # |1 − ηh| = 1.5: θ_k = θ₀ (−1.5)^k leaves |θ| ≤ 1000 after ⌈ln(1e3/|θ₀|)/ln 1.5⌉ steps.
    expected = []
    for x in x0[:2, 0]:
        th, k = x, 0
        while abs(th) <= 1e3:
            th, k = th - 2.5 * th, k + 1
        expected.append(k)
    assert expected == [23, 22]
    assert res.lost.tolist() == [1, 1, 3]
    assert res.lost_step.tolist() == [*expected, 0]
    assert np.isnan(res.mean[-1, 0]) and np.isnan(res.var[-1, 0])
    assert res.counts[-1].sum() == 0


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(("kw", "field"), [
    ({"lr": 0.0}, "lr"),
    ({"lr": -1.0}, "lr"),
    ({"method": "adam"}, "method"),
    ({"batch_size": 9}, "batch_size"),
    ({"batch_size": 0}, "batch_size"),
    ({"sampling": "sometimes"}, "sampling"),
    ({"x0": np.zeros((5, 2))}, "x0"),
    ({"x0": np.array([[np.nan]])}, "x0"),
    ({"method": "langevin"}, "temperature"),
    ({"method": "langevin", "temperature": -1.0}, "temperature"),
    ({"steps": np.array([5, 3])}, "steps"),
    ({"steps": np.array([0.5])}, "steps"),
    ({"steps": np.array([-1])}, "steps"),
    ({"grids": ()}, "grids"),
    ({"substeps": 0}, "substeps"),
    ({"noise_factor": -0.1}, "noise_factor"),
    ({"basin_edges": (1.0, 0.0)}, "basin_edges"),
    ({"escape_direction": 0}, "escape_direction"),
    ({"escape_threshold": float("inf")}, "escape_threshold"),
    ({"seed": -3}, "seed"),
])
def test_bad_input_names_the_field(kw, field):
    args = {"landscape": quadratic(8, 1.0), "method": "sgd", "x0": np.zeros((5, 1)), "lr": 0.1,
            "steps": np.array([0, 3]), "grids": WIDE}
    args.update(kw)
    with pytest.raises(ConfigError) as err:
        run_ensemble(**args)
    assert str(err.value).startswith(field)
    assert "\n" not in str(err.value)


# --------------------------------------------------------------------------- the two SGD kernels agree


@pytest.mark.parametrize("sampling", ["with_replacement", "without_replacement", "reshuffle"])
def test_vectorised_1d_sgd_equals_the_general_kernel(sampling):
    """1-D SGD runs on the vectorised kernel, 2-D on the general one. Embedding the 1-D
    quadratic data on the x axis of a 2-D landscape (y stays exactly 0) must give the same
    x chains bit for bit: same streams, same index draws, same products and sums.
    """
    n, lr, b = 8, 0.9, 3
    land1 = quadratic(n, 1.0, h=1.0)
    land2 = build_landscape({"dim": 2, "reference": [{"kind": "quadratic", "curvature": 1.0,
                                                      "centre": [0.0, 0.0]}],
                             "shifts": {"n": n, "std": 1.0, "direction": [1.0, 0.0]}})
    x0 = np.linspace(-0.9, 0.9, 1001)[:, None]  # not a multiple of the lane count
    steps = np.array([0, 5, 37, 60])
    kw = {"batch_size": b, "sampling": sampling, "seed": 21, "escape_threshold": 0.8}
    one = run_ensemble(land1, "sgd", x0, lr, steps, (Grid1D(-1.0, 1.0, 20),), **kw)
    two = run_ensemble(land2, "sgd", np.hstack([x0, np.zeros_like(x0)]), lr, steps,
                       (Grid1D(-1.0, 1.0, 20), Grid1D(-1.0, 1.0, 4)), **kw)
    assert one.lost[-1] > 0 and np.all(one.escape_step[one.escape_step > 0] <= 60)
    np.testing.assert_array_equal(one.lost_step, two.lost_step)
    np.testing.assert_array_equal(one.escape_step, two.escape_step)
    np.testing.assert_array_equal(one.counts, two.counts.sum(axis=2))
    np.testing.assert_array_equal(one.mean[:, 0], two.mean[:, 0])
    np.testing.assert_array_equal(one.var[:, 0], two.var[:, 0])


def test_vectorised_exp_matches_numpy():
    """The kernel's branch-free exp on Gaussian terms: two-basin SGD vs the 2-D general kernel."""
    ref = [{"kind": "gaussian", "amplitude": -1.0, "centre": -1.0, "width": 0.2},
           {"kind": "gaussian", "amplitude": -1.0, "centre": 1.0, "width": 0.6},
           {"kind": "quadratic", "curvature": 0.2, "centre": 0.0}]
    land1 = build_landscape({"dim": 1, "reference": ref, "shifts": {"n": 16, "std": 0.1}})
    ref2 = [dict(t, centre=[t["centre"], 0.0]) for t in ref]
    land2 = build_landscape({"dim": 2, "reference": ref2,
                             "shifts": {"n": 16, "std": 0.1, "direction": [1.0, 0.0]}})
    x0 = np.linspace(-2.0, 2.0, 640)[:, None]
    steps = np.array([0, 10, 20])
    one = run_ensemble(land1, "sgd", x0, 0.05, steps, (Grid1D(-3, 3, 60),), batch_size=4, seed=3)
    two = run_ensemble(land2, "sgd", np.hstack([x0, np.zeros_like(x0)]), 0.05, steps,
                       (Grid1D(-3, 3, 60), Grid1D(-1, 1, 4)), batch_size=4, seed=3)
    np.testing.assert_allclose(one.mean[:, 0], two.mean[:, 0], rtol=1e-13)
    np.testing.assert_allclose(one.var[:, 0], two.var[:, 0], rtol=1e-12)
    # In 2-D the Gaussian is exp(−(r_x² a + 0)): the same argument, libm exp.
    from sgdsweep.montecarlo.fastexp import exp_nonpos
    xs = -np.linspace(0.0, 708.0, 200001)
    got = np.array([exp_nonpos(v) for v in xs[::97]])
    np.testing.assert_allclose(got, np.exp(xs[::97]), rtol=4e-16, atol=0)
    assert exp_nonpos(-709.0) == 0.0 and exp_nonpos(0.0) == 1.0


@pytest.mark.parametrize(("method", "kw"), [
    ("sgd", {"sampling": "without_replacement", "batch_size": 3}),
    ("sde", {"substeps": 3}),
    ("langevin", {"substeps": 3, "temperature": 0.2}),
])
def test_vectorised_1d_kernels_equal_the_general_kernel(method, kw):
    """A Gaussian term of sharpness 0 has gradient exactly 0 but sends a 1-D landscape
    to the general kernel (the vectorised exp needs sharpness > 0): same chains bit for bit."""
    from sgdsweep.landscapes.landscape import Landscape

    q = quadratic(8, 1.0)
    n = q.n
    kind = np.tile([1, 0], n).astype(np.int64)
    amp = np.ones(2 * n)
    centre = np.column_stack([q.centre[:, 0], np.zeros(n)]).reshape(-1, 1)
    mat = np.tile([1.0, 0.0], n).reshape(-1, 1, 1)
    general = Landscape(dim=1, n=n, kind=kind, amp=amp, centre=centre, mat=mat,
                        ptr=np.arange(0, 2 * n + 1, 2, dtype=np.int64))
    x0 = np.linspace(-0.9, 0.9, 333)[:, None]
    steps = np.array([0, 4, 30])
    grids = (Grid1D(-1.0, 1.0, 20),)
    a = run_ensemble(q, method, x0, 0.7, steps, grids, seed=5, escape_threshold=0.6, **kw)
    b = run_ensemble(general, method, x0, 0.7, steps, grids, seed=5, escape_threshold=0.6, **kw)
    assert a.lost[-1] > 0
    for u, v in [(a.counts, b.counts), (a.mean, b.mean), (a.var, b.var), (a.lost_step, b.lost_step),
                 (a.escape_step, b.escape_step)]:
        np.testing.assert_array_equal(u, v)
