"""The one-step operator methods ``sgd_op`` and ``gauss_step`` through ``run_cell`` and
through ``python -m pipeline sweep`` into a real store, against exact results:

* two samples, l_i = ½(θ − c_i)², c = ±1, b = 1 (SGD is the IFS θ ← (1 − η)θ ± η): the
  stored stationary kind ``sgd`` has variance η/(2 − η); at η = ½ it is uniform on
  [−1, 1]; at η = 0.8 it lives on a Cantor-like set with nothing in (−0.55, 0.55);
  its relaxation time is −η/ln(1 − η) and the Itô FP's (an OU process) is 1/h = 1;
* Monte Carlo SGD in the same cell: TV(operator, histogram) within the histogram's
  sampling noise at every snapshot;
* a quadratic with 8 centres (Var c = 1): the Gaussian step's stationary variance
  η/(2 − η) (the AR(1) θ ← (1 − η)θ + η·N(0, 1)) and SGD's, in a swept store;
* 2-D (``sgd_op`` only): four samples c = (±1, ±1), b = 1, two independent 1-D IFS — uniform
  on [−1, 1]² at η = ½, the mean contracting by exactly 1 − η a step; and the tilted
  quadratic H = diag(1, 4) with Σ ∝ H u uᵀ H (not commuting with H), whose exact SGD
  stationary covariance solves the discrete Lyapunov equation C = A C Aᵀ + η²Σ_b,
  A = I − ηH, in run_cell and in a swept store.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import yaml

import sgdsweep
from sgdsweep.analysis import plots
from tests.conftest import REPO, open_store, run_pipeline

TWO_POINT = {"datapoints": [[{"kind": "quadratic", "curvature": 1.0, "centre": -1.0}],
                            [{"kind": "quadratic", "curvature": 1.0, "centre": 1.0}]]}


def _two_point_cell(lr: float) -> dict:
    return {"landscape": TWO_POINT, "lr": lr, "methods": ["fp", "sgd_op"],
            "init": {"kind": "normal", "mean": 0.0, "std": 0.2},
            "density_grid": {"lower": -1.5, "upper": 1.5, "cells": 300},
            "time": {"t_end": 2.0, "snapshots": 3}}


def _moments(p: np.ndarray, x: np.ndarray) -> tuple[float, float]:
    dx = x[1] - x[0]
    mean = float((p * x).sum() * dx)
    return mean, float((p * (x - mean) ** 2).sum() * dx)


@pytest.mark.parametrize("lr", [0.1, 0.5, 0.8])
def test_two_point_stationary_law_and_relaxation(lr):
    ds = sgdsweep.run_cell(_two_point_cell(lr))
    x = ds["x"].values
    dx = x[1] - x[0]
    assert list(ds["kind"].values)[-1] == "sgd"
    p = ds["stationary"].sel(kind="sgd").values
    assert p.min() >= 0 and p.sum() * dx == pytest.approx(1.0, abs=1e-12)
    mean, var = _moments(p, x)
    assert abs(mean) < 1e-10
    assert var == pytest.approx(lr / (2 - lr), rel=0.01)
    # The FP's stationary law is the SDE's N(0, η/2), not SGD's (truncated to the grid's ±1.5).
    s2 = lr / 2
    a = 1.5 / math.sqrt(s2)
    truncated = s2 * (1 - 2 * a * math.exp(-a * a / 2) / math.sqrt(2 * math.pi) / math.erf(a / math.sqrt(2)))
    assert _moments(ds["stationary"].sel(kind="ito").values, x)[1] == pytest.approx(truncated, rel=0.01)
    if lr == 0.5:
        assert 0.5 * np.abs(p - np.where(np.abs(x) < 1, 0.5, 0.0)).sum() * dx < 0.01
    if lr == 0.8:
        assert p[np.abs(x) < 0.55].sum() * dx < 1e-3
        ito = ds["stationary"].sel(kind="ito").values
        assert ito[np.abs(x) < 0.55].sum() * dx > 0.5  # the FP puts most of its mass there
    tau = ds["relaxation_time"]
    if lr <= 0.5:  # the mean decays by 1 − η a step and no mode is slower
        assert float(tau.sel({"method": "sgd_op"})) == pytest.approx(-lr / math.log(1 - lr), rel=1e-5)
    else:
        # Singular law: the slowest mode of the cell chain is mass held in the cell just
        # outside a fixed point ±1, which only the other sample's step (probability ½) empties.
        assert float(tau.sel({"method": "sgd_op"})) == pytest.approx(-lr / math.log(0.5), rel=1e-5)
    # The Itô FP of an OU process with h = 1 relaxes at rate 1 (walls at ±1.5 speed it up
    # once they are within a few stationary widths).
    if lr == 0.1:
        assert float(tau.sel({"method": "fp"})) == pytest.approx(1.0, rel=1e-3)
    assert int(ds["operator_classes"].sel({"method": "sgd_op"})) == 1
    assert not bool(ds["operator_diffusion_flag"].sel({"method": "sgd_op"}))
    assert float(ds["operator_diffusion_ratio"].sel({"method": "sgd_op"})) < 0.01


def _null_tv(probs: np.ndarray, chains: int, rng: np.random.Generator, draws: int = 300) -> float:
    """Expected TV between a multinomial histogram of ``chains`` draws and its own law."""
    h = rng.multinomial(chains, probs / probs.sum(), size=draws) / chains
    return float(0.5 * np.abs(h - probs).sum(axis=1).mean())


def test_operator_against_monte_carlo_in_one_cell():
    """Seed model, η = 0.02, b = 1, 40,000 chains: at every snapshot TV(sgd_op, sgd histogram)
    ≤ 1.5 × the histogram's own expected sampling TV (an operator bias above ~0.003 fails)."""
    land = yaml.safe_load((REPO / "conf" / "landscape" / "seed_two_point.yaml").read_text())
    chains = 40_000
    ds = sgdsweep.run_cell({"landscape": land, "lr": 0.02, "methods": ["sgd", "sgd_op", "fp"],
                            "density_grid": {"lower": -1.0, "upper": 4.0, "cells": 100},
                            "time": {"t_end": 6.0, "snapshots": 4}, "mc": {"chains": chains}})
    dx = float(ds["x"].values[1] - ds["x"].values[0])
    op = ds["density"].sel({"method": "sgd_op"}).values * dx
    mc = ds["density"].sel({"method": "sgd"}).values * dx
    rng = np.random.default_rng(5)
    for k in range(1, ds.sizes["t"]):
        tv = 0.5 * np.abs(op[k] - mc[k]).sum()
        null = _null_tv(op[k], chains, rng)
        assert tv <= 1.5 * null, (float(ds["t"][k]), tv, null)
    # ... while the Itô FP is far from both (the pit empties faster under real SGD).
    assert float(ds["tv"].sel({"method": "sgd_op"}).isel(t=-1)) > 0.3
    # The operator's basin masses are its density's; SGD and the chain agree on the pit.
    np.testing.assert_allclose(ds["basin_mass"].sel({"method": "sgd_op"}).sum("basin"), 1.0, atol=1e-12)
    # Exact escape time of the chain and of the SDE, both finite and in t = η·steps.
    steps = float(ds["escape_steps_operator"].sel({"method": "sgd_op"}))
    assert float(ds["escape_time_operator"].sel({"method": "sgd_op"})) == pytest.approx(0.02 * steps)
    assert np.isfinite(float(ds["escape_time_exact"]))


def test_validation_before_anything_runs():
    land = yaml.safe_load((REPO / "conf" / "landscape" / "seed_two_point.yaml").read_text())
    base = {"landscape": land, "methods": ["sgd_op"]}
    with pytest.raises(sgdsweep.ConfigError, match=r"^sampling: 'reshuffle' is not a Markov chain"):
        sgdsweep.parse_cell({**base, "sampling": "reshuffle"})
    # The Gaussian step kernel is defined for any noise factor, reshuffle's included.
    sgdsweep.parse_cell({**base, "methods": ["gauss_step"], "sampling": "reshuffle"})
    with pytest.raises(sgdsweep.ConfigError, match=r"^operator.max_minibatches: 3 distinct minibatches "
                       r"\(n = 2, b = 2, with_replacement\) exceed the limit 2"):
        sgdsweep.parse_cell({**base, "batch_size": 2,
                             "operator": {"max_minibatches": 2, "approximate": False}})
    with pytest.raises(sgdsweep.ConfigError, match=r"^density_grid.cells: 10 cells × refine 1 .* too "
                       r"coarse for the step"):
        sgdsweep.parse_cell({**base, "density_grid": {"cells": 10}, "operator": {"refine": 1}})
    with pytest.raises(sgdsweep.ConfigError, match=r"^operator.refine: must be >= 1, got 0"):
        sgdsweep.parse_cell({**base, "operator": {"refine": 0}})
    two_d = {"landscape": _two_d(), "methods": ["sgd_op"], "init": {"mean": 0.0},
             "density_grid": {"lower": -3.0, "upper": 3.0, "cells": 30}}
    sgdsweep.parse_cell(two_d)
    with pytest.raises(sgdsweep.ConfigError, match=r"^methods: gauss_step supports 1-D landscapes only"):
        sgdsweep.parse_cell({**two_d, "methods": ["gauss_step"]})
    with pytest.raises(sgdsweep.ConfigError, match=r"^operator.refine: the 2-D operator works on the "
                       r"density grid itself \(refine 1\), got 2"):
        sgdsweep.parse_cell({**two_d, "operator": {"refine": 2}})
    with pytest.raises(sgdsweep.ConfigError, match=r"^operator.max_minibatches: 10 distinct minibatches "
                       r"\(n = 4, b = 2, with_replacement\) exceed the limit 4; the 2-D operator has no "
                       r"convolution approximation"):
        sgdsweep.parse_cell({**two_d, "batch_size": 2, "operator": {"max_minibatches": 4}})


def _two_d() -> dict:
    return {"name": "q2", "dim": 2, "reference": [{"kind": "quadratic", "curvature": [1.0, 1.0],
                                                   "centre": [0.0, 0.0]}], "shifts": {"n": 4, "std": 0.5}}


QUADRATIC = ["landscape=quadratic", "init.mean=0.0", "init.std=0.3", "density_grid.lower=-4.0",
             "density_grid.upper=4.0", "density_grid.cells=160", "mc.chains=200", "time.t_end=4.0",
             "time.snapshots=3", "cluster.n_workers=1"]


@pytest.mark.integration
def test_sweep_into_a_store_with_the_operators(tmp_path: Path):
    """Quadratic, 8 centres, Var(c) = 1, h = 1, b = 1: SGD's and the Gaussian step's stationary
    variance is η/(2 − η) exactly, the Itô FP's η/2; read back from a real store."""
    res = run_pipeline("sweep", *QUADRATIC, "methods=[sgd,fp,sgd_op,gauss_step]", "grid.lr=[0.25,1.0]",
                       "operator.relaxation=true", "store=op.zarr", cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    ds = open_store(tmp_path / "op.zarr")
    assert ds["done"].all()
    assert list(ds["kind"].values) == ["ito", "stratonovich", "isothermal", "gibbs", "sgd", "gauss_step"]
    x = ds["x"].values
    for lr in (0.25, 1.0):
        cell = ds.sel(lr=lr)
        for kind in ("sgd", "gauss_step"):
            var = _moments(cell["stationary"].sel(kind=kind).values, x)[1]
            assert var == pytest.approx(lr / (2 - lr), rel=0.01), (lr, kind)
        assert _moments(cell["stationary"].sel(kind="ito").values, x)[1] == pytest.approx(lr / 2, rel=0.01)
        tau = cell["relaxation_time"]
        assert np.isnan(float(tau.sel({"method": "sgd"})))  # Monte Carlo: no operator
        assert float(tau.sel({"method": "fp"})) == pytest.approx(1.0, rel=1e-3)
        if lr < 1:
            for m in ("sgd_op", "gauss_step"):
                assert float(tau.sel({"method": m})) == pytest.approx(-lr / math.log(1 - lr), rel=1e-3)
    # The accessor: the kind named like a method, basin masses of the stationary law.
    acc = ds.sel(lr=1.0).sgd
    tv = float(acc.distance_to_stationary("sgd_op", "sgd", t="last"))
    assert tv < 0.05  # at η·h = 1 one step lands on a centre c_B: stationary from step 1 on
    assert float(acc.basin_masses("stationary:sgd").sum()) == pytest.approx(1.0, abs=1e-9)
    with pytest.raises(KeyError, match="stationary:KIND"):
        acc.source("no_such_source")
    fig = plots.cell_densities(ds.sel(lr=1.0))
    labels = fig.axes[0].get_legend_handles_labels()[1]
    assert "stationary SGD (operator)" in labels
    assert any(label.startswith("SGD (transfer operator)") for label in labels)


def test_relaxation_time_does_not_depend_on_earlier_solves():
    """The seed model's far-left plateau is deterministic: its upwind block is non-normal and
    Arnoldi converges to slightly different values from different start vectors. The start
    is fixed, so a second solve in the same process (another ARPACK state) gives the same
    bits, as a cell must whichever worker runs it."""
    from sgdsweep.landscapes.grid import Grid1D
    from sgdsweep.landscapes.landscape import build_landscape
    from sgdsweep.transfer.transfer1d import sgd_transfer

    land = build_landscape(yaml.safe_load((REPO / "conf" / "landscape" / "seed_two_point.yaml").read_text()))
    op = sgd_transfer(land, Grid1D(-1.0, 4.0, 250), 0.02)
    first = op.relaxation()
    sgd_transfer(land, Grid1D(-1.0, 4.0, 100), 0.03).relaxation()  # moves ARPACK's own generator
    assert op.relaxation() == first


def test_numerical_diffusion_is_flagged_where_the_grid_is_too_coarse():
    """Two-point quadratic at η = 0.1 (minibatch spread η·1 = 0.1) on coarse cells with the
    refinement capped at 1, dx = 0.075: the projection's variance per step (up to dx²/3) is
    of the order of the minibatch variance 0.01, far above the 1 % target: flagged, listed."""
    from sgdsweep.cell.schema import operator_diffusion_cells

    cell = _two_point_cell(0.1)
    cell.update(density_grid={"lower": -1.5, "upper": 1.5, "cells": 40},
                operator={"max_refine": 1, "relaxation": False})
    ds = sgdsweep.run_cell(cell)
    ratio = float(ds["operator_diffusion_ratio"].sel({"method": "sgd_op"}))
    assert 0.01 < ratio <= 0.075**2 / 3 / 0.01 + 1e-12  # the kick is at most dx²/3
    assert bool(ds["operator_diffusion_flag"].sel({"method": "sgd_op"}))
    assert np.isnan(float(ds["relaxation_time"].sel({"method": "sgd_op"})))  # relaxation: false
    assert operator_diffusion_cells(ds) == [({}, "sgd_op", ratio)]
    # The default refinement meets the target on the same grid.
    cell.update(operator={"relaxation": False})
    ds = sgdsweep.run_cell(cell)
    assert not bool(ds["operator_diffusion_flag"].sel({"method": "sgd_op"}))
    assert operator_diffusion_cells(ds) == []


def test_relaxation_below_round_off_is_not_a_small_number():
    """A birth–death generator of two 20-cell blocks joined by a rate 1e-60: the true
    relaxation time is ~1e60, far below what double precision resolves. The answer must be
    "unknown" (NaN) or huge, never a fast mode the Arnoldi search did not find."""
    import scipy.sparse as sp

    from sgdsweep.transfer import markov

    n = 40
    up = np.full(n - 1, 3.0)
    down = np.full(n - 1, 3.0)
    up[n // 2 - 1] = down[n // 2 - 1] = 1e-60
    M = sp.diags([up, down], [-1, 1], shape=(n, n), format="lil")  # M[j+1, j] = up, M[j, j+1] = down
    M.setdiag(-np.asarray(M.sum(axis=0)).ravel())
    rel = markov.generator_relaxation(sp.csc_matrix(M))
    assert not rel.time < 1e12, rel


# --------------------------------------------------------------------------- 2-D


FOUR_CORNERS = {"dim": 2, "datapoints": [[{"kind": "quadratic", "curvature": 1.0, "centre": [sx, sy]}]
                                          for sx in (-1.0, 1.0) for sy in (-1.0, 1.0)]}
#: conf/landscape/anisotropic_2d.yaml: H = diag(1, 4), 8 centres along (1, 1)/√2 with population
#: std 0.5, so Cov(c) = 0.125·[[1, 1], [1, 1]] and Σ = H Cov(c) H (b = 1, with replacement).
ANISOTROPIC = {"name": "anisotropic_2d", "dim": 2,
               "reference": [{"kind": "quadratic", "curvature": [1.0, 4.0], "centre": [0.0, 0.0]}],
               "shifts": {"n": 8, "std": 0.5, "direction": [1.0, 1.0]}}
H_ANISO = np.diag([1.0, 4.0])
SIGMA_ANISO = H_ANISO @ np.full((2, 2), 0.125) @ H_ANISO


def _moments_2d(p: np.ndarray, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (2,) and covariance (2, 2) of a density p (nx, ny) by cell-centre quadrature."""
    w = p * (x[1] - x[0]) * (y[1] - y[0])
    X, Y = np.meshgrid(x, y, indexing="ij")
    m = np.array([(w * X).sum(), (w * Y).sum()]) / w.sum()
    dX, dY = X - m[0], Y - m[1]
    c = np.array([[(w * dX * dX).sum(), (w * dX * dY).sum()], [(w * dX * dY).sum(), (w * dY * dY).sum()]])
    return m, c / w.sum()


def test_2d_sgd_op_four_corners_in_a_cell():
    """c = (±1, ±1), b = 1, η = ½: per axis the IFS θ ← ½θ ± ½, so the stationary kind ``sgd``
    is uniform on [−1, 1]² (TV < 0.03 on 60 × 60 cells), variance 1/3 per axis (1 %), no
    correlation; the mean contracts by exactly ½ a step (the bilinear split keeps first
    moments: 1e-9); the chain relaxes as −η/ln(1 − η) (1e-5)."""
    lr = 0.5
    ds = sgdsweep.run_cell({"landscape": FOUR_CORNERS, "lr": lr, "methods": ["sgd_op"],
                            "init": {"kind": "normal", "mean": [0.3, -0.2], "std": 0.1},
                            "density_grid": {"lower": -1.5, "upper": 1.5, "cells": 60},
                            "time": {"t_end": 2.0, "snapshots": 3}})
    x, y = ds["x"].values, ds["y"].values
    dx = x[1] - x[0]
    p = ds["stationary"].sel(kind="sgd").values
    assert p.shape == (60, 60) and p.min() >= 0 and p.sum() * dx * dx == pytest.approx(1.0, abs=1e-12)
    inside = (np.abs(x) < 1)[:, None] & (np.abs(y) < 1)[None, :]
    assert 0.5 * np.abs(p * dx * dx - np.where(inside, 1.0 / inside.sum(), 0.0)).sum() < 0.03
    mean, cov = _moments_2d(p, x, y)
    np.testing.assert_allclose(mean, 0.0, atol=1e-12)
    np.testing.assert_allclose(np.diag(cov), lr / (2 - lr), rtol=0.01)
    assert abs(cov[0, 1]) < 1e-12
    sel = {"method": "sgd_op"}
    m = ds["mean"].sel(sel).values  # (t, axis) at steps 0, 2, 4
    np.testing.assert_allclose(m[1:], m[0] * np.array([[0.25], [0.0625]]), rtol=1e-9)
    assert float(ds["relaxation_time"].sel(sel)) == pytest.approx(-lr / math.log(1 - lr), rel=1e-5)
    assert int(ds["operator_classes"].sel(sel)) == 1 and int(ds["operator_refine"].sel(sel)) == 1
    assert int(ds["operator_minibatches"].sel(sel)) == 4
    assert np.isnan(float(ds["escape_time_operator"].sel(sel)))  # no threshold in 2-D


def test_2d_sgd_op_non_commuting_noise_matches_the_discrete_lyapunov_covariance():
    """The tilted quadratic at η = 0.3: SGD's exact stationary covariance C = A C Aᵀ + η²Σ,
    A = I − ηH (scipy's discrete Lyapunov solver). On 60 × 40 cells the bilinear split adds
    about dx²/6 a step per axis (1 % of η²Σ_xx here): variances within 1.5 %, the covariance
    (which the split does not touch) to 1e-9; relaxation −η/ln(1 − η h_x) (1e-6). The Itô
    FP in the same cell relaxes at the slowest OU rate h_x = 1 (1 %): τ = 1."""
    import scipy.linalg

    lr = 0.3
    base = {"landscape": ANISOTROPIC, "lr": lr, "methods": ["fp", "sgd_op"],
            "init": {"kind": "normal", "mean": [0.1, -0.2], "std": 0.1},
            "density_grid": {"lower": [-0.75, -2.0], "upper": [0.75, 2.0], "cells": [60, 40]},
            "time": {"t_end": 1.0, "snapshots": 2}}
    ds = sgdsweep.run_cell(base)
    A = np.eye(2) - lr * H_ANISO
    exact = scipy.linalg.solve_discrete_lyapunov(A, lr**2 * SIGMA_ANISO)
    mean, cov = _moments_2d(ds["stationary"].sel(kind="sgd").values, ds["x"].values, ds["y"].values)
    np.testing.assert_allclose(mean, 0.0, atol=1e-12)
    np.testing.assert_allclose(np.diag(cov), np.diag(exact), rtol=0.015)
    assert cov[0, 1] == pytest.approx(exact[0, 1], rel=1e-9)
    # ... and SGD's is not the SDE's: the Itô FP's C solves HC + CH = ηΣ (x variance 14 % lower).
    assert cov[0, 0] > 1.1 * _moments_2d(ds["stationary"].sel(kind="ito").values, ds["x"].values,
                                         ds["y"].values)[1][0, 0]
    tau = ds["relaxation_time"]
    assert float(tau.sel({"method": "sgd_op"})) == pytest.approx(-lr / math.log(1 - lr), rel=1e-6)
    assert float(tau.sel({"method": "fp"})) == pytest.approx(1.0, rel=0.01)
    assert float(ds["operator_diffusion_ratio"].sel({"method": "sgd_op"})) < 0.01
    assert not bool(ds["operator_diffusion_flag"].sel({"method": "sgd_op"}))
    # Half the cells per axis: four times the numerical diffusion, flagged.
    coarse = sgdsweep.run_cell({**base, "methods": ["sgd_op"], "density_grid": {**base["density_grid"],
                                                                                 "cells": [30, 20]},
                                "operator": {"relaxation": False}})
    assert float(coarse["operator_diffusion_ratio"].sel({"method": "sgd_op"})) > 0.03
    assert bool(coarse["operator_diffusion_flag"].sel({"method": "sgd_op"}))


@pytest.mark.integration
def test_2d_sweep_with_sgd_op_into_a_store(tmp_path: Path):
    """``python -m pipeline sweep`` of the tilted quadratic with methods [sgd, sgd_op] over two
    learning rates, read back with plain xarray: the stationary kind ``sgd`` on (x, y) has the
    discrete Lyapunov covariance (variances 2 %, covariance 1e-9), and Monte Carlo SGD's mean
    at the last snapshot agrees with the operator's within 4 standard errors."""
    import scipy.linalg

    res = run_pipeline("sweep", "landscape=anisotropic_2d", "methods=[sgd,sgd_op]", "grid.lr=[0.3,0.4]",
                       "operator.relaxation=true", "init={kind: normal, mean: [0.1, -0.2], std: 0.1}",
                       "density_grid={lower: [-0.75, -3.0], upper: [0.75, 3.0], cells: [60, 60]}",
                       "time={t_end: 1.0, snapshots: 3}", "mc.chains=2000", "cluster.n_workers=1",
                       "store=op2d.zarr", cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    ds = open_store(tmp_path / "op2d.zarr")
    assert ds["done"].all()
    assert list(ds["kind"].values)[-1] == "sgd" and ds["stationary"].dims[-3:] == ("kind", "x", "y")
    assert ds["density"].dims[-4:] == ("method", "t", "x", "y")
    for lr in (0.3, 0.4):
        cell = ds.sel(lr=lr)
        exact = scipy.linalg.solve_discrete_lyapunov(np.eye(2) - lr * H_ANISO, lr**2 * SIGMA_ANISO)
        _, cov = _moments_2d(cell["stationary"].sel(kind="sgd").values, ds["x"].values, ds["y"].values)
        np.testing.assert_allclose(np.diag(cov), np.diag(exact), rtol=0.02)
        assert cov[0, 1] == pytest.approx(exact[0, 1], rel=1e-9)
        last = cell.isel(t=-1)
        se = last["std"].sel({"method": "sgd"}).values / math.sqrt(2000)
        diff = last["mean"].sel({"method": "sgd"}).values - last["mean"].sel({"method": "sgd_op"}).values
        assert np.all(np.abs(diff) < 4 * se), (lr, diff, se)
        assert float(cell["relaxation_time"].sel({"method": "sgd_op"})) == pytest.approx(
            -lr / math.log(1 - lr), rel=1e-6)
