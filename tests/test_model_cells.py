"""Cells on models with many parameters: run_cell against exact moments, and the whole path
sweep → store → status → report on a real dataset."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from sgdsweep import parse_cell, run_cell
from sgdsweep.cell.model_config import ModelCellConfig
from sgdsweep.cell.model_context import ModelContext
from sgdsweep.models import moments
from tests.conftest import run_pipeline

DIABETES = {"family": "model", "name": "linreg_diabetes", "kind": "linear_regression",
            "dataset": "diabetes", "l2": 0.0, "bias": True, "seed": 0}


def _cell(lr: float, b: int, sampling: str, chains: int, steps: int,
          methods: tuple[str, ...] = ("sgd",), **extra) -> dict:
    return {"landscape": DIABETES, "lr": lr, "batch_size": b, "sampling": sampling,
            "methods": list(methods), "seed": 3,
            "time": {"t_end": steps * lr, "snapshots": 3}, "mc": {"chains": chains, "sde_substeps": 4},
            "density_grid": {"lower": -0.6, "upper": 0.6, "cells": 240},
            "models": {"directions": 3, "sharpness_chains": 2}, **extra}


@pytest.mark.parametrize(("b", "sampling", "frac"), [(1, "with_replacement", 0.3),
                                                     (8, "without_replacement", 0.8),
                                                     (32, "with_replacement", 0.8)])
def test_sgd_variance_along_hessian_directions_is_the_exact_recursions(b, sampling, frac):
    """SGD's Monte Carlo variance of (θ − θ*)·v_k at the last snapshot against the exact
    discrete-time second moment after the same number of steps from θ* (the transient
    recursion, exact for least squares, so no stationarity assumption is needed).

    Tolerance: 5 standard errors of a variance estimate from C independent chains,
    SE = sqrt((m₄ − σ⁴)/C), with the fourth moment m₄ of the projection taken from the
    stored histogram (its grid covers the chains: lost_fraction is 0)."""
    cell = parse_cell(_cell(0.01, b, sampling, chains=4000, steps=10))
    assert isinstance(cell, ModelCellConfig)
    edge = moments.ms_edge(cell.model, b, sampling)
    lr = frac * edge
    steps = 300
    ds = run_cell(_cell(lr, b, sampling, chains=4000, steps=steps))
    assert float(ds["ms_edge"]) == pytest.approx(edge, rel=1e-12)
    assert float(ds["gd_edge"]) >= edge * (1 - 1e-9)  # below GD's 2/λ_max when curvatures differ
    sgd = ds.sel({"method": "sgd"}).isel(t=-1)
    assert float(sgd["lost_fraction"]) == 0.0
    d = cell.model.d
    M = moments.sgd_moments(cell.model, lr, b, sampling, np.zeros(d), np.zeros((d, d)), steps).cov[-1]
    V = ModelContext(parse_cell(_cell(lr, b, sampling, chains=4000, steps=steps))).directions
    x, dx = ds["x"].values, float(ds["x"][1] - ds["x"][0])
    for k, v in enumerate(V):
        exact = float(v @ M @ v)
        p = sgd["density"].isel(direction=k).values
        m4 = float(np.sum(x**4 * p) * dx)
        se = np.sqrt(max(m4 - exact**2, 2 * exact**2) / 4000)
        got = float(sgd["proj_var"].isel(direction=k))
        assert abs(got - exact) < 5 * se, (k, got, exact, se)


def test_neither_sgd_nor_its_sde_is_gibbs():
    """The exact stationary variances along the top Hessian directions: SGD's, the SDE's and
    Gibbs' at the matched temperature differ by more than any rounding, direction by direction
    (the temperature each needs is not one number)."""
    ds = run_cell(_cell(0.05, 1, "with_replacement", chains=200, steps=20))
    st = ds["stationary_proj_var"]
    ratio_sgd = (st.sel(kind="sgd") / st.sel(kind="gibbs")).values
    ratio_ito = (st.sel(kind="ito") / st.sel(kind="gibbs")).values
    assert np.all(np.isfinite(ratio_sgd)) and np.all(np.isfinite(ratio_ito))
    assert np.ptp(ratio_sgd) > 0.05 and np.ptp(ratio_ito) > 0.05
    # discrete time inflates the variance over the SDE's along the sharpest direction
    assert ratio_sgd[0] > ratio_ito[0]
    td = ds["temperature_direction"].sel(kind="sgd").values
    assert np.ptp(td) / np.mean(td) > 0.05
    # Σ*'s spectrum: the top eigenvalues of the dense per-sample gradient covariance at θ*
    model = parse_cell(_cell(0.05, 1, "with_replacement", chains=200, steps=20)).model
    exact = np.linalg.eigvalsh(model.noise_cov(ds["theta_star"].values))[::-1][:3]
    np.testing.assert_allclose(ds["noise_eig"].values, exact, rtol=1e-10)
    assert ds["rank"].values.tolist() == [1, 2, 3]


def test_projections_on_directions_of_ones_own(tmp_path):
    """``models.project_on``: a parameter axis e_j (from a .npy file, unscaled) and the sharpest
    Hessian direction h1 (inline, scaled by 3) become u1, u2. Along e_j every projected number is
    the parameter's own (variance = the stored covariance's diagonal, curvature = H*_jj, the exact
    stationary variance = the exact covariance's diagonal); along 3·h1 they are h1's (the same
    chains, the same unit vector), up to the rounding of the rescaling."""
    base = _cell(0.05, 8, "with_replacement", chains=300, steps=40)
    v1 = ModelContext(parse_cell(base)).directions[0]
    j = 4
    e = np.zeros(v1.size)
    e[j] = 2.0
    np.save(tmp_path / "axis.npy", e)
    ds = run_cell({**base, "models": {**base["models"], "project_on": str(tmp_path / "axis.npy")}})
    both = run_cell({**base, "models": {**base["models"], "project_on": [e.tolist(), (3 * v1).tolist()]}})
    assert ds["direction"].values.tolist() == ["h1", "h2", "h3", "u1"]
    assert both["direction"].values.tolist() == ["h1", "h2", "h3", "u1", "u2"]
    sgd = both.sel({"method": "sgd"})
    np.testing.assert_allclose(sgd["proj_var"].sel(direction="u1"),
                               sgd["cov"].isel(param=j, param2=j), rtol=1e-10, atol=1e-20)
    np.testing.assert_allclose(both["stationary_proj_var"].sel(direction="u1"),
                               both["stationary_cov"].isel(param=j, param2=j), rtol=1e-12)
    H = parse_cell(base).model.hessian(both["theta_star"].values)
    assert float(both["hessian_eig"].sel(direction="u1")) == pytest.approx(H[j, j], rel=1e-12)
    assert float(both["hessian_eig"].sel(direction="u2")) == pytest.approx(
        float(both["hessian_eig"].sel(direction="h1")), rel=1e-10)
    np.testing.assert_allclose(sgd["proj_var"].sel(direction="u2"), sgd["proj_var"].sel(direction="h1"),
                               rtol=1e-10, atol=1e-20)
    np.testing.assert_allclose(sgd["density"].sel(direction="u2"), sgd["density"].sel(direction="h1"),
                               atol=1e-9)
    # a temperature only along eigenvectors
    assert np.all(np.isnan(both["temperature_direction"].sel(direction=["u1", "u2"])))
    # the file's direction gives what the inline one gives
    np.testing.assert_array_equal(ds["proj_var"].sel(direction="u1"), both["proj_var"].sel(direction="u1"))


@pytest.mark.integration
def test_sweep_status_report_on_a_model_store(tmp_path):
    """A d-dimensional sweep through the CLI: lr × batch_size on diabetes, then a swept MLP width
    (the parameter axis is the union; a narrower model reads NaN beyond its d)."""
    args = ["landscape=linreg_diabetes", "grid.lr=[0.01,0.05]", "grid.batch_size=[1,8]",
            "mc.chains=64", "time.t_end=1.0", "time.snapshots=3", "models.sharpness_chains=1",
            "cluster.n_workers=2", "cluster.dashboard_address=null", "store=lin.zarr"]
    res = run_pipeline("sweep", *args, cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    ds = xr.open_zarr(tmp_path / "lin.zarr")
    assert bool(ds["done"].all())
    assert ds.attrs["dataset"] == "diabetes" and ds.attrs["dataset_n"] == 442
    assert ds.sizes["param"] == 11 and ds.sizes["direction"] == 4
    assert np.isfinite(ds["proj_var"].sel({"method": "sgd"}).isel(t=-1).values).all()
    # the exact references are per cell and in the store
    assert np.isfinite(ds["ms_edge"].values).all() and np.isfinite(ds["stationary_cov"].values).all()
    res = run_pipeline("status", "lin.zarr", cwd=tmp_path)
    assert res.returncode == 0 and "4/4" in res.stdout.replace(" ", ""), res.stdout
    res = run_pipeline("report", "lin.zarr", "--out", "rep", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    page = (tmp_path / "rep" / "report.html").read_text()
    for fig in ("projection_variance", "projection_densities", "sharpness_loss", "noise_geometry"):
        assert (tmp_path / "rep" / f"{fig}.png").stat().st_size > 5000
        assert f'id="{fig}"' in page
    args = ["landscape=mlp_wine", "grid.hidden=[2,3]", "grid.lr=[0.05]", "mc.chains=16", "time.t_end=0.5",
            "time.snapshots=2", "models.sharpness_chains=1", "models.directions=2",
            "cluster.n_workers=1", "cluster.dashboard_address=null", "store=mlp.zarr"]
    res = run_pipeline("sweep", *args, cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    ds = xr.open_zarr(tmp_path / "mlp.zarr")
    assert ds.sizes["param"] == 3 * (13 + 2) + 1
    narrow = ds["theta_star"].sel(hidden=2, lr=0.05).values
    assert np.isfinite(narrow[: 2 * 15 + 1]).all() and np.isnan(narrow[2 * 15 + 1:]).all()


ONE_PARAMETER = {"family": "model", "name": "teacher_1d", "kind": "linear_regression",
                 "dataset": "teacher_student", "n": 50, "features": 1, "noise": 0.5, "bias": False, "seed": 0}


@pytest.mark.parametrize("frac", [1.2, 1.5])
def test_hill_tail_index_of_sgd_is_kesten_beyond_the_edge(frac):
    """One parameter, b = 1, η beyond the mean-square edge: SGD's stationary law has a power
    tail with the exact index α solving E|1 − η a_B|^α = 1 (stored as ``kesten_index``, < 2
    here). Hill's estimate from 5,000 chains after 2,000 steps (top 5 % of the chains not
    lost: k ≈ 250) agrees within 3 of its standard errors α/√k. Hill's own finite-k bias is
    downward and grows with α (about 7 % at α = 2 with 20,000 chains), which is why the check
    stays at α < 1.5, where it is below one standard error."""
    base = {"landscape": ONE_PARAMETER, "batch_size": 1, "methods": ["sgd"], "seed": 1,
            "density_grid": {"lower": -1.0, "upper": 1.0, "cells": 10},
            "mc": {"chains": 5000, "max_steps": 10**6}, "models": {"sharpness_chains": 0}}
    cell = parse_cell({**base, "lr": 0.1, "time": {"t_end": 1.0, "snapshots": 2}})
    lr = frac * moments.ms_edge(cell.model, 1, "with_replacement")
    ds = run_cell({**base, "lr": lr, "time": {"t_end": 2000 * lr, "snapshots": 2}})
    alpha = float(ds["kesten_index"])
    assert alpha < 2.0
    hill = float(ds["tail_index"].sel({"method": "sgd"}).squeeze())
    se = float(ds["tail_index_se"].sel({"method": "sgd"}).squeeze())
    alive = round(5000 * (1 - float(ds["lost_fraction"].sel({"method": "sgd"}).isel(t=-1))))
    assert se == pytest.approx(hill / np.sqrt(np.ceil(0.05 * alive)), rel=1e-12)
    assert abs(hill - alpha) < 3 * se, (hill, alpha, se)


BAD_MODEL = [
    (["landscape=linreg_diabetes", "landscape.dataset=nope"], "landscape.dataset"),
    (["landscape=linreg_diabetes", "landscape.path=/no/such.npz", "landscape.dataset=file"],
     "landscape.path"),
    (["landscape=mlp_wine", "landscape.hidden=0"], "landscape.hidden"),
    (["landscape=linreg_diabetes", "batch_size=443", "~grid.lr", "grid.seed=[0]"], "batch_size"),
    (["landscape=linreg_diabetes", "models.directions=12"], "models.directions"),
    (["landscape=linreg_diabetes", "methods=[sgd,fp]"], "methods"),
    (["landscape=linreg_diabetes", "models.project_on=[1,2]"], "models.project_on"),
    (["landscape=linreg_diabetes", "models.project_on=[0,0,0,0,0,0,0,0,0,0]"], "models.project_on"),
    (["landscape=linreg_diabetes", "models.project_on=/no/such.npy"], "models.project_on"),
    # 16 hidden units on wine: d = 241 > n = 178; without l2 its minima are not isolated
    (["landscape=mlp_wine", "landscape.l2=0.0"], "landscape.l2: an MLP with more parameters than samples"),
    # memory: 10¹⁰ chains of 10 parameters; a network of 10⁹ hidden units (its data part alone)
    (["landscape=linreg_diabetes", "mc.chains=10000000000"], "mc.chains: a cell needs at least"),
    (["landscape=mlp_wine", "landscape.hidden=1000000000"], "landscape: a cell needs at least"),
]


@pytest.mark.parametrize(("args", "field"), BAD_MODEL, ids=[a[-1] for a, _ in BAD_MODEL])
def test_bad_model_input_is_one_line_and_writes_nothing(tmp_path, capsys, monkeypatch, args, field):
    """Bad model settings: one ``error:`` line naming the field, exit 2, no store."""
    from pipeline.cli.main import main

    monkeypatch.chdir(tmp_path)
    assert main(["sweep", *args, "store=bad.zarr"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"error: {field}") and err.count("\n") == 1, err
    assert not (tmp_path / "bad.zarr").exists()
