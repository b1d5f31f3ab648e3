"""The method registry: built-ins declared once, a method plugged in from outside the package.

The plug-in (``tests/heavy_ball.py``, Polyak momentum) goes through
``python -m pipeline sweep`` into a store and the report, as a user's method would.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

import sgdsweep
from sgdsweep.methods import get_method, method_table, registered
from tests.conftest import REPO, open_store, run_pipeline

BUILTINS = {"sgd": "ensemble", "sde": "ensemble", "langevin": "ensemble", "gd": "ensemble",
            "fp": "density", "fp_drift": "density", "svag": "ensemble", "sgd_noise": "ensemble",
            "sme2": "ensemble", "fp_sme2": "density", "sgd_op": "density", "gauss_step": "density"}


def test_builtins_are_registered_once_with_their_kind():
    assert {n: m.kind for n, m in registered().items() if n in BUILTINS} == BUILTINS
    assert get_method("fp").dims == (1, 2) and get_method("sgd").dims == (1, 2)
    with pytest.raises(sgdsweep.ConfigError, match=r"^methods: unknown method 'adam'"):
        get_method("adam")


def test_registering_a_different_method_under_a_taken_name_fails():
    with pytest.raises(ValueError, match="already registered"):
        sgdsweep.register_method(name="sgd", kind="density", fill=lambda ctx, ds, name: None)


def test_methods_page_table_is_the_registry():
    page = (REPO / "docs" / "guide" / "methods.md").read_text()
    table = method_table()
    # The methods page holds the built-in methods exactly as the registry describes them.
    builtin_rows = [r for r in table.splitlines()
                    if not r.startswith("| `") or r.split("`")[1] in BUILTINS]
    assert "\n".join(builtin_rows) in page


def test_method_only_for_its_dimensions():
    # A method declared 1-D only (the built-ins all run in 2-D now) is refused on a 2-D landscape.
    sgdsweep.register_method(name="one_d_only_probe", kind="density", dims=(1,),
                             fill=lambda ctx, ds, name: None)
    land = {"name": "q2", "dim": 2, "reference": [{"kind": "quadratic", "curvature": [1.0, 1.0],
                                                    "centre": [0.0, 0.0]}],
            "shifts": {"n": 4, "std": 0.5}}
    with pytest.raises(sgdsweep.ConfigError,
                       match=r"^methods: one_d_only_probe supports 1-D landscapes only"):
        sgdsweep.parse_cell({"landscape": land, "methods": ["sgd", "one_d_only_probe"],
                             "init": {"mean": 0.0},
                             "density_grid": {"lower": -3.0, "upper": 3.0, "cells": 30}})


QUADRATIC = ["landscape=quadratic", "init.mean=1.0", "init.std=0.2", "density_grid.lower=-4.0",
             "density_grid.upper=4.0", "density_grid.cells=80", "mc.chains=64", "time.t_end=2.0",
             "time.snapshots=5", "cluster.n_workers=1"]


@pytest.mark.integration
def test_plugged_in_method_runs_through_the_sweep_and_the_report(tmp_path: Path):
    res = run_pipeline("sweep", "plugins=[tests.heavy_ball]", "methods=[gd,heavy_ball,fp]", *QUADRATIC,
                       "grid={lr: [0.1], heavy_ball.momentum: [0.0, 0.5]}", "store=hb.zarr",
                       cwd=tmp_path, env={"PYTHONPATH": str(REPO)})  # the plugin lives in tests/
    assert res.returncode == 0, res.stdout + res.stderr
    ds = open_store(tmp_path / "hb.zarr")
    assert ds["done"].all() and list(ds["method"].values) == ["gd", "heavy_ball", "fp"]
    hb = ds.sel({"method": "heavy_ball"}).isel(lr=0)
    gd = ds.sel({"method": "gd"}).isel(lr=0)
    # Without momentum heavy ball is gradient descent: the same iterates, so the same histogram;
    # moments agree to rounding (NumPy sums pairwise, the compiled kernel in chain order).
    np.testing.assert_array_equal(hb["density"].sel(momentum=0.0).values,
                                  gd["density"].sel(momentum=0.0).values)
    for v in ("mean", "std"):
        np.testing.assert_allclose(hb[v].sel(momentum=0.0).values, gd[v].sel(momentum=0.0).values,
                                   rtol=1e-13, atol=1e-15)
    # With momentum on L = h/2 θ² (h = 1; the ensemble mean follows the same linear recurrence
    # as each chain): m_{k+1} = (1 + β − η h) m_k − β m_{k−1}, m_{−1} = m_0.
    eta, beta = 0.1, 0.5
    steps = np.rint(ds["t"].values / eta).astype(int)
    m0 = float(hb["mean"].sel(momentum=beta).values[0])
    m = [m0, m0]  # m_{-1}, m_0
    for _ in range(steps[-1]):
        m.append((1 + beta - eta) * m[-1] - beta * m[-2])
    np.testing.assert_allclose(hb["mean"].sel(momentum=beta).values, np.array(m[1:])[steps],
                               rtol=1e-12, atol=1e-12)
    assert not np.allclose(hb["mean"].sel(momentum=beta).values, gd["mean"].sel(momentum=beta).values)
    # Its own variable and its distance to the FP density, like every method.
    assert float(ds["heavy_ball_speed"].sel(momentum=0.5).isel(lr=0)) > 0
    assert np.isfinite(hb["tv"].values[..., -1]).all()

    rep = run_pipeline("report", "hb.zarr", cwd=tmp_path)
    assert rep.returncode == 0, rep.stderr
    html = (tmp_path / "hb_report" / "report.html").read_text()
    assert re.search(r"<td[^>]*>heavy_ball</td>", html)


def test_unknown_plugin_is_one_line(tmp_path: Path):
    res = run_pipeline("sweep", "plugins=[tests.no_such_module]", cwd=tmp_path)
    assert res.returncode == 2
    assert res.stderr.startswith("error: plugins: cannot import 'tests.no_such_module'"), res.stderr
