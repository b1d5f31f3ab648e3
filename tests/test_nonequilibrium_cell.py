"""2-D cells through ``run_cell`` and the pipeline: the stored stationary density, current and
summary numbers against exact Ornstein–Uhlenbeck results, SGD's stationary covariance against
the discrete Lyapunov equation, and the 1-D stationary current with walls.

The landscape is :func:`sgdsweep.landscapes.tilted.tilted_quadratic`: L = ½ θᵀHθ, H = diag(h_x, h_y),
constant gradient noise Σ = H S H (S the shifts' covariance turned by ``tilt``), so the Itô
SDE is an OU process with D = η Σ_b / 2: stationary law N(0, C), HC + CH = η Σ_b, current
J = (−Hθ + D C⁻¹θ) p, circulation −Q₀₁ / (2π sqrt(det C)), Q = (CH − HC)/2.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg as sl

import sgdsweep
from sgdsweep.landscapes.tilted import tilted_quadratic
from tests.conftest import open_store, run_pipeline

H = np.diag([1.0, 2.0])
LAND = {"_target_": "sgdsweep.landscapes.tilted.tilted_quadratic", "tilt": 30.0, "h_x": 1.0, "h_y": 2.0,
        "spread": 2.0, "aspect": 0.6, "n": 8}


def sigma(tilt: float) -> np.ndarray:
    land = tilted_quadratic(tilt, h_x=1.0, h_y=2.0, spread=2.0, aspect=0.6, n=8)
    cov = land.evaluate(np.array([[0.0, 0.0], [0.7, -0.3]]))["cov"]
    np.testing.assert_allclose(cov[0], cov[1], atol=1e-12)  # the noise is constant
    return cov[0]


def cell(tilt: float, cells: int, methods: list[str], lr: float = 0.1, **extra) -> dict:
    return {"landscape": {**LAND, "tilt": tilt}, "methods": methods, "lr": lr, "batch_size": 1,
            "init": {"kind": "normal", "mean": [0.5, 0.5], "std": [0.3, 0.3]},
            # dy/dx = 1.5 ≈ sqrt(Σ_yy/Σ_xx): the scheme is monotone on every face (walls too)
            "density_grid": {"lower": [-2.4, -2.4], "upper": [2.4, 2.4], "cells": [3 * cells // 2, cells]},
            "time": {"t_end": 2.0, "snapshots": 3}, "fp": {"dt": 0.05}, **extra}


def centres(ds) -> np.ndarray:
    X, Y = np.meshgrid(ds["x"].values, ds["y"].values, indexing="ij")
    return np.stack([X, Y], axis=-1)


def exact(th: np.ndarray, C: np.ndarray, D: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    Ci = np.linalg.inv(C)
    q = np.einsum("...i,ij,...j->...", th, Ci, th)
    p = np.exp(-0.5 * q) / (2 * math.pi * math.sqrt(np.linalg.det(C)))
    J = (th @ (-H + D @ Ci).T) * p[..., None]
    return p, J


def test_stored_stationary_density_and_current_are_ou_to_second_order():
    lr = 0.1
    D = lr * sigma(30.0) / 2
    C = sl.solve_continuous_lyapunov(H, 2 * D)  # HC + CH = η Σ_b
    assert not np.allclose(H @ D, D @ H)
    errs_p, errs_j, errs_c = [], [], []
    for n in (24, 48):
        ds = sgdsweep.run_cell(cell(30.0, n, ["fp"], lr))
        area = float((ds.x[1] - ds.x[0]) * (ds.y[1] - ds.y[0]))
        p_ex, J_ex = exact(centres(ds), C, D)
        p = ds["stationary"].sel(kind="ito").values
        J = ds["stationary_current"].sel(kind="ito").transpose("x", "y", "axis").values
        errs_p.append(np.abs(p - p_ex).sum() * area)
        errs_j.append(np.abs(J - J_ex).sum() / np.abs(J_ex).sum())
        # The face bound holds everywhere; far out in the tails the drift's Scharfetter–Gummel
        # weights still leave some negative off-diagonals: tiny negative values, never clipped.
        assert ds["fp_monotone_violation"].item() == 0.0 and ds["fp_negative_offdiag"].item() > 0
        assert -1e-6 * p.max() < ds["stationary_min_density"].item() <= 0.0
        # Mass 1 to round-off, in the stored density of fp at every snapshot too.
        np.testing.assert_allclose(p.sum() * area, 1.0, atol=1e-12)
        fp_mass = ds["density"].sel({"method": "fp"}).sum(("x", "y")) * area
        np.testing.assert_allclose(fp_mass, 1.0, atol=1e-10)
        # Circulation: −Q₀₁ / (2π sqrt(det C)).
        Q = (C @ H - H @ C) / 2
        circ = -Q[0, 1] / (2 * math.pi * math.sqrt(np.linalg.det(C)))
        errs_c.append(abs(ds["stationary_circulation"].item() / circ - 1))
    # Second order: halving the cell divides each error by 4 (measured 4.04, 3.86, 3.97; on the
    # 72 × 48 grid, dx = 0.067, dy = 0.1, stationary std ≈ 0.42 / 0.48, the errors are 0.2 % of
    # the density, 2.9 % of the current, 1.4 % of the circulation). The ratio is 4·(1 + O(h²))
    # from the next term of the expansion; 4/3 either way (observed order between 1.58 and
    # 2.42) separates that from first order (ratio 2) and from convergence to a wrong limit
    # (ratio → 1), so the error goes to 0 at second order and the absolute levels follow from it.
    print("L1 errors (24, 48 cells): density", errs_p, "current", errs_j, "circulation", errs_c)
    for name, errs in (("density", errs_p), ("current", errs_j), ("circulation", errs_c)):
        assert 3.0 < errs[0] / errs[1] < 16 / 3, (name, errs)


def test_commuting_noise_has_no_current_but_is_not_gibbs():
    # tilt 0: Σ and H both diagonal, Q = 0: J = 0 in the continuum, to discretisation error here.
    ds0 = sgdsweep.run_cell(cell(0.0, 32, ["fp"]))
    ds30 = sgdsweep.run_cell(cell(30.0, 32, ["fp"]))
    j0, j30 = ds0["stationary_mean_abs_current"].item(), ds30["stationary_mean_abs_current"].item()
    assert j30 > 0.05 and j0 < 1e-3 * j30, (j0, j30)
    assert abs(ds0["stationary_circulation"].item()) < 1e-3 * abs(ds30["stationary_circulation"].item())
    # Gibbs at T = tr(D)/2 is N(0, T H⁻¹); the Itô law N(0, C), C = D H⁻¹ here: exact Gaussian KL.
    D = 0.1 * sigma(0.0) / 2
    C, G = D @ np.linalg.inv(H), np.trace(D) / 2 * np.linalg.inv(H)
    kl = 0.5 * (np.trace(np.linalg.solve(G, C)) - 2 + math.log(np.linalg.det(G) / np.linalg.det(C)))
    np.testing.assert_allclose(ds0["stationary_kl_gibbs"].item(), kl, rtol=0.03)
    assert ds30["stationary_kl_gibbs"].item() > ds0["stationary_kl_gibbs"].item()


def test_sgd_stationary_covariance_is_the_discrete_lyapunov_one():
    lr, n = 0.4, 20000
    sig = sigma(30.0)
    A = np.eye(2) - lr * H
    C_disc = sl.solve_discrete_lyapunov(A, lr**2 * sig)  # C = A C Aᵀ + η² Σ_b
    C_sde = sl.solve_continuous_lyapunov(H, lr * sig)
    cfg = cell(30.0, 64, ["sgd", "fp"], lr, mc={"chains": n})
    cfg["density_grid"] = {"lower": -4.8, "upper": 4.8, "cells": 64}
    cfg["time"] = {"t_end": 12.0, "snapshots": 7}
    ds = sgdsweep.run_cell(cfg)
    late = ds["std"].isel(t=slice(3, None))  # t ≥ 6: six relaxation times 1/h_x
    sgd = late.sel({"method": "sgd"}).values
    # Standard error of a std from n chains ≈ std/sqrt(2n) = 0.5 %; 4 snapshots, 3 σ ≈ 1.5 %.
    np.testing.assert_allclose(sgd, np.broadcast_to(np.sqrt(np.diag(C_disc)), sgd.shape), rtol=0.02)
    # The FP follows the SDE's continuous Lyapunov law (grid error ≪ 1 %), 12–30 % narrower here.
    fp = late.sel({"method": "fp"}).values[-1]
    np.testing.assert_allclose(fp, np.sqrt(np.diag(C_sde)), rtol=0.01)
    assert np.all(np.sqrt(np.diag(C_disc)) / np.sqrt(np.diag(C_sde)) > 1.1)
    # SGD's histogram: distances to FP are stored in 2-D too (w1: mean of the marginals' W1).
    tv, w1 = ds["tv"].sel({"method": "sgd"}).values[-1], ds["w1"].sel({"method": "sgd"}).values[-1]
    assert 0.1 < tv < 1 and 0 < w1 < 0.5


def test_one_d_stationary_ito_current_vanishes_with_walls():
    land = {"name": "q", "dim": 1, "reference": [{"kind": "quadratic", "curvature": 1.0, "centre": 0.0},
                                                  {"kind": "gaussian", "amplitude": 0.5, "centre": 0.7,
                                                   "width": 0.4}],
            "shifts": {"n": 6, "std": 0.8}}
    ds = sgdsweep.run_cell({"landscape": land, "methods": ["fp"], "lr": 0.2,
                            "init": {"kind": "normal", "mean": 1.0, "std": 0.3},
                            "density_grid": {"lower": -4.0, "upper": 4.0, "cells": 80},
                            "time": {"t_end": 1.0, "snapshots": 3}})
    for kind in ("ito", "stratonovich", "isothermal"):
        J = ds["stationary_current"].sel(kind=kind).values
        p = ds["stationary"].sel(kind=kind).values
        # Round-off: the flux is a difference of two terms of size ~ D p / dx.
        scale = float(ds["diffusion"].max()) * p.max() / float(ds.x[1] - ds.x[0])
        assert np.abs(J).max() < 1e-12 * scale, (kind, np.abs(J).max(), scale)
    assert np.isnan(ds["stationary_current"].sel(kind="gibbs")).all()
    # Away from stationarity the current is not zero, and carries the mass towards the minimum:
    # at t = 0 the mean moves left, ∫J dθ = d(mean)/dt < 0.
    J0 = ds["current"].sel({"method": "fp"}).isel(t=0).values
    dx = float(ds.x[1] - ds.x[0])
    assert J0.sum() * dx < -0.1
    assert ds["stationary_mean_abs_current"].item() < 1e-10
    assert np.isnan(ds["stationary_circulation"].item())


@pytest.mark.integration
def test_tiny_2d_sweep_and_report(tmp_path: Path):
    res = run_pipeline("sweep", "landscape=tilted_2d", "methods=[sgd,fp]",
                       "grid={lr: [0.1], tilt: [0.0, 45.0]}",
                       "init={kind: normal, mean: [0.5, 0.5], std: [0.3, 0.3]}",
                       "density_grid={lower: -2.4, upper: 2.4, cells: [24, 20]}",
                       "time={t_end: 1.0, snapshots: 3}", "fp.dt=0.05", "mc.chains=500",
                       "cluster.n_workers=1", "store=ne.zarr", cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    ds = open_store(tmp_path / "ne.zarr")
    assert ds["done"].all()
    assert ds["current"].dims[-4:] == ("t", "x", "y", "axis")
    assert ds["stationary_current"].dims[-3:] == ("x", "y", "axis")
    circ = ds["stationary_circulation"].values.ravel()
    assert abs(circ[0]) < 1e-3 * abs(circ[1])  # tilt 0: none; tilt 45: a vortex
    # The marginals are plain 1-D densities for the 1-D tools.
    marg = ds.sgd.marginal("y")
    assert marg["density"].dims[-1] == "x" and marg.sizes["x"] == 20
    np.testing.assert_allclose(marg["density"].sel({"method": "fp"}).sum("x") * marg.sgd.dx, 1.0, atol=1e-10)
    assert np.isfinite(marg.sgd.distance("sgd", "fp", metric="w1", t="last").values).all()
    res = run_pipeline("report", "ne.zarr", cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    out = tmp_path / "ne_report"
    assert (out / "current_2d.png").stat().st_size > 10_000
    assert "current_2d" in (out / "report.html").read_text()


def test_tilted_shifts_have_the_stated_covariance_and_bad_input_is_one_line():
    from sgdsweep.landscapes.tilted import tilted_shifts

    for tilt in (0.0, 30.0, 90.0, 137.0):
        s = tilted_shifts(tilt, 2.0, 0.6, 8)
        c, n = math.cos(math.radians(tilt)), math.sin(math.radians(tilt))
        R = np.array([[c, -n], [n, c]])
        np.testing.assert_allclose(s.mean(axis=0), 0.0, atol=1e-14)
        np.testing.assert_allclose(np.cov(s.T, bias=True), R @ np.diag([4.0, 1.44]) @ R.T, atol=1e-13)
    # Σ commutes with H exactly at 0° and 90°, not at 30°.
    for tilt, commutes in ((0.0, True), (90.0, True), (30.0, False)):
        S = sigma(tilt)
        assert np.allclose(S @ H, H @ S, atol=1e-12) == commutes
    with pytest.raises(sgdsweep.ConfigError, match=r"^landscape.tilt: must be a finite number"):
        sgdsweep.build_landscape({"_target_": "sgdsweep.landscapes.tilted.tilted_quadratic", "tilt": "steep"})
    with pytest.raises(sgdsweep.ConfigError, match=r"^landscape.aspect: must be a number > 0"):
        sgdsweep.build_landscape({"_target_": "sgdsweep.landscapes.tilted.tilted_quadratic", "aspect": 0.0})
