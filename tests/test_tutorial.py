"""docs/tutorial.ipynb runs from top to bottom in a real Jupyter kernel (nbclient), on the
small sweep it makes and on another store; its figures are there, and the numbers it
prints — and the claims of its "what did we learn" notes — are checked here against the
store read with plain xarray and numpy, and against the exact references."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import numpy as np
import pytest
import xarray as xr
from nbclient import NotebookClient

from sgdsweep.fokker_planck.references import (
    sde_quadratic_stationary_variance,
    sgd_quadratic_stationary_variance,
)
from tests.conftest import REPO

NOTEBOOK = REPO / "docs" / "tutorial.ipynb"
CELL_TIMEOUT = 180  # seconds per cell; the whole notebook takes ~40 s on 2 shared cores
FIGURE_CALLS = ("plots.density_evolution", "plots.moments", "plots.stationary_densities",
                "plots.basin_heatmaps", "plots.escape_times", "plots.sde_validity_map")


def execute(cwd: Path, store: Path | None = None) -> nbformat.NotebookNode:
    """The executed notebook; a failing cell raises CellExecutionError (and fails the test)."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    if store is not None:
        params = next(c for c in nb.cells if c.cell_type == "code" and "STORE = None" in c.source)
        params.source = params.source.replace("STORE = None", f"STORE = {str(store)!r}")
    NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3",
                   resources={"metadata": {"path": str(cwd)}}).execute()
    return nb


def printed(nb: nbformat.NotebookNode) -> str:
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs
                   if o.output_type == "stream" and o.get("name") == "stdout")


def assert_figures(nb: nbformat.NotebookNode) -> None:
    for call in FIGURE_CALLS:
        cell = next(c for c in nb.cells if c.cell_type == "code" and call in c.source)
        pngs = [o for o in cell.outputs if "image/png" in o.get("data", {})]
        assert len(pngs) == 1 and len(pngs[0]["data"]["image/png"]) > 10_000, call


def test_committed_notebook_has_no_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.outputs == [] and c.execution_count is None for c in code)
    # one "what did we learn" note after each figure
    sources = [c.source for c in nb.cells]
    for call in ("plots.moments", "plots.stationary_densities", "plots.basin_heatmaps",
                 "plots.escape_times", "plots.sde_validity_map"):
        i = next(k for k, s in enumerate(sources) if call in s)
        note = next(c for c in nb.cells[i + 1:] if c.cell_type == "markdown")
        assert note.source.startswith("**What did we learn.**"), call


@pytest.fixture(scope="module")
def tutorial(tmp_path_factory) -> tuple[nbformat.NotebookNode, Path]:
    cwd = tmp_path_factory.mktemp("tutorial")
    return execute(cwd), cwd / "tutorial_results" / "tutorial.zarr"


@pytest.mark.integration
def test_tutorial_runs_with_figures(tutorial):
    nb, store = tutorial
    assert_figures(nb)
    assert "6/6 cells done" in printed(nb)
    assert bool(xr.open_zarr(str(store)).done.all())


@pytest.mark.integration
def test_tutorial_ou_numbers_are_what_the_text_says(tutorial):
    """SGD's variance within 3 MC standard errors of the exact discrete-time value, and
    clearly off the SDE/FP value, which the FP solver reproduces."""
    out = printed(tutorial[0])
    num = r"([-+]?\d+\.\d+)"
    sgd, se = map(float, re.search(rf"SGD measured variance\s+{num} \+- {num}", out).groups())
    exact = float(re.search(rf"exact discrete-time SGD\s+{num}", out).group(1))
    sde = float(re.search(rf"SDE / FP prediction\s+{num}", out).group(1))
    fp = float(re.search(rf"FP solver\s+{num}", out).group(1))
    lr, h, var_c, b, n = 0.5, 1.0, 1.0, 1, 8
    assert exact == pytest.approx(lr * h * var_c / (b * (2 - lr * h)), abs=5e-5)
    assert exact == pytest.approx(1 / 3, abs=5e-5)
    assert exact == pytest.approx(sgd_quadratic_stationary_variance(lr, h, var_c, b, n, "with_replacement"),
                                  abs=5e-5)
    assert sde == pytest.approx(sde_quadratic_stationary_variance(lr, h, var_c, b, n, "with_replacement"),
                                abs=5e-5) == pytest.approx(0.25, abs=5e-5)
    # the standard error is that of ~21 nearly independent snapshot variances of 4000 chains
    assert 0.5 * (1 / 3) * np.sqrt(2 / 4000 / 21) < se < 2 * (1 / 3) * np.sqrt(2 / 4000)
    assert abs(sgd - exact) < 3 * se, (sgd, exact, se)          # "within its Monte Carlo error"
    assert abs(sgd - sde) > 10 * se                             # the SDE picture is distinguishably low
    assert fp == pytest.approx(sde, rel=2e-3)                   # "FP reproduces ηh·Var(c)/(2b)"
    ratio = float(re.search(rf"SGD / SDE prediction = {num}", out).group(1))
    assert ratio == pytest.approx(4 / 3, rel=3 * se / sgd + 1e-3)


@pytest.mark.integration
def test_tutorial_sweep_claims_hold_in_the_store(tutorial):
    """The sweep notes' claims, from the store with plain xarray and numpy."""
    nb, path = tutorial
    out = printed(nb)
    ds = xr.open_zarr(str(path)).load()
    dx = float(ds.x[1] - ds.x[0])

    def tv(a, b):
        p = ds.density.sel({"method": a}).isel(t=-1).transpose("lr", "batch_size", "x").values
        q = ds.density.sel({"method": b}).isel(t=-1).transpose("lr", "batch_size", "x").values
        return 0.5 * np.abs(p - q).sum(axis=-1) * dx

    tv_sgd, tv_sde = tv("sgd", "fp"), tv("sde", "fp")
    chains = 500  # the notebook's sweep: mc.chains=500

    def tv_sd(method, index, kind=None):
        """Sampling sd of TV(histogram of `chains` draws, reference): parametric bootstrap from
        the stored histogram itself (2000 multinomial redraws) — the notes' "≈" means within
        3 of these."""
        def values(v):
            return v.transpose("lr", "batch_size", "x").values[index] * dx

        last = ds.density.isel(t=-1)
        p = values(last.sel({"method": method}))
        q = values(last.sel({"method": "fp"}) if kind is None else ds.stationary.sel(kind=kind))
        redraw = np.random.default_rng(0).multinomial(chains, p / p.sum(), size=2000) / chains
        sd = float((0.5 * np.abs(redraw - q).sum(axis=1)).std())
        print(f"TV sd {method} {index} {kind or 'fp'}: {sd:.4f}")
        return sd
    i, j = np.unravel_index(int(np.argmax(tv_sgd)), tv_sgd.shape)
    m = re.search(r"largest TV\(SGD, FP\) at t = 5: (\d\.\d+) in the cell "
                  r"lr = ([\d.]+), batch_size = (\d+)", out)
    assert m, out
    assert float(m.group(1)) == pytest.approx(tv_sgd[i, j], abs=5e-4)
    assert (float(m.group(2)), int(m.group(3))) == (float(ds.lr[i]), int(ds.batch_size[j]))
    # "the SDE Monte Carlo stays closer to FP than SGD does in every cell"
    assert (tv_sde < tv_sgd).all() and "cells with TV(SDE, FP) < TV(SGD, FP): 6 of 6" in out
    # validity map: "best at the smallest η with the larger batch (TV ≈ 0.08), 0.4–0.84 elsewhere"
    assert np.unravel_index(int(np.argmin(tv_sgd)), tv_sgd.shape) == (0, 1)
    assert tv_sgd[0, 1] == pytest.approx(0.08, abs=3 * tv_sd("sgd", (0, 1)))
    others = [(k, tv_sgd[k]) for k in np.ndindex(tv_sgd.shape) if k != (0, 1)]
    assert min(v + 3 * tv_sd("sgd", k) for k, v in others) >= 0.4
    assert max(v - 3 * tv_sd("sgd", k) for k, v in others) <= 0.84

    # basin masses: "falls as η grows (all at 0.01, none at 0.04); the larger batch keeps at
    # least as much (about 96 % against 25 % at η = 0.02)"
    b0 = ds.basin_mass.sel({"method": "sgd"}).isel(t=-1).sel(basin="b0").transpose("lr", "batch_size").values
    assert (np.diff(b0, axis=0) <= 1e-9).all() and (b0[:, 1] >= b0[:, 0] - 1e-9).all()
    assert b0[0].min() > 0.99 and b0[-1].max() < 0.01
    # a basin mass of `chains` chains is binomial: SE sqrt(p(1 − p)/chains) (0.009 and 0.019)
    for k, claim in (((1, 1), 0.96), ((1, 0), 0.25)):
        assert b0[k] == pytest.approx(claim, abs=3 * np.sqrt(claim * (1 - claim) / chains)), (k, b0[k])
    # "Gibbs puts essentially nothing in the pit (below 1e-5)": Gibbs density over x < barrier
    loss = ds.loss.isel(lr=0, batch_size=0).values
    x = ds.x.values
    top = x[(x > 1) & (x < 2)][np.argmax(loss[(x > 1) & (x < 2)])]
    gibbs_pit = (ds.stationary.sel(kind="gibbs").where(ds.x < top).sum("x") * dx).values
    assert gibbs_pit.max() < 1e-5
    assert float(re.search(r"Gibbs: largest mass in b0 over the sweep: (\S+)", out).group(1)) < 1e-5

    # stationary: "TV ≈ 1 in the pit at small η, ≈ 0.04 at η = 0.04" (b of the chosen cell, 2)
    ito = ds.stationary.sel(kind="ito").isel(batch_size=1).values
    sgd_last = ds.density.sel({"method": "sgd"}).isel(t=-1, batch_size=1).values
    tv_ito = 0.5 * np.abs(sgd_last - ito).sum(axis=-1) * dx
    assert tv_ito[0] > 0.95 and tv_ito[1] > 0.95
    assert tv_ito[2] == pytest.approx(0.04, abs=3 * tv_sd("sgd", (2, 1), kind="ito"))

    # escapes: "wherever every SGD chain escaped, SGD's mean is below the exact SDE time —
    # by about 2.6 at η = 0.04, b = 1 and about 10 with b = 2"
    frac = ds.escaped_fraction.sel({"method": "sgd"}).transpose("lr", "batch_size").values
    mean = ds.escape_time_mean.sel({"method": "sgd"}).transpose("lr", "batch_size").values
    exact = ds.escape_time_exact.transpose("lr", "batch_size").values
    full = frac == 1.0
    assert full.sum() >= 2 and (mean[full] < exact[full]).all()
    # The mean of `chains` passage times over a barrier (close to exponential: sd ≈ mean) has a
    # relative SE of 1/sqrt(chains) = 4.5 %; the notes' "about" means within 3 of those.
    assert exact[2, 0] / mean[2, 0] == pytest.approx(2.6, rel=3 / np.sqrt(chains))
    assert exact[2, 1] / mean[2, 1] == pytest.approx(10, rel=3 / np.sqrt(chains))


@pytest.mark.integration
def test_tutorial_on_another_store(reference_store, tmp_path):
    """Any store: three sweep axes (lr, batch_size, seed), no Langevin."""
    nb = execute(tmp_path, reference_store)
    assert_figures(nb)
    assert not (tmp_path / "tutorial_results").exists()  # the sweep cell was skipped
    assert f"store {reference_store}: 8/8 cells done" in printed(nb)
