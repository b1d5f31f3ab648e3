"""Figures and ``python -m pipeline report`` on a real (small) sweep store.

The store is written by the pipeline's own template and cell writer with the
real ``run_cell`` (serially, no cluster): the seed model over lr × batch size ×
initial spread, with one cell failed and one never computed, so the report is
exercised on a partially finished sweep. The page is then rendered in headless
Chromium (Debian's ``chromium``).
"""

from __future__ import annotations

import base64
import io
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from matplotlib.figure import Figure

import sgdsweep
from pipeline.cli.report import report_main, swept_config
from pipeline.config import compose, expand
from pipeline.run.sweep import templates
from pipeline.store import store as stores
from pipeline.store.location import parse
from sgdsweep.analysis import plots
from sgdsweep.analysis.reductions import open_sweep

# The methods of the schema's default (the default sweep adds sgd_op, whose figures the
# synthetic stores below test): the store and its figures stay what they were.
OVERRIDES = ["methods=[sgd,sde,langevin,gd,fp,fp_drift]", "density_grid.lower=-1.0", "density_grid.upper=4.0",
             "mc.chains=200", "time.t_end=2.0", "time.snapshots=5", "density_grid.cells=100",
             "grid.lr=[0.02,0.04]", "grid.batch_size=[1,2]", "grid.seed=[0,1]"]
FAILED, PENDING = 5, 7  # flat cell indices
FAIL_MESSAGE = "ValueError: a failure recorded for the report"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("report") / "seed.zarr"
    cfg = compose(OVERRIDES)
    plan = expand(cfg, reserved={"x", "y", "t", "method", "kind", "basin", "axis"})
    cell = templates(plan)
    template = stores.build_template(plan, cell, stores.provenance(plan, cell.attrs, ["sweep", *OVERRIDES]))
    stores.create(parse(path), template, replace=False)
    writer = stores.CellWriter(parse(path), template, [a.name for a in plan.axes])
    for i, c in enumerate(plan.cells):
        if i == PENDING:
            continue
        if i == FAILED:
            writer.fail(plan.index(i), FAIL_MESSAGE)
            continue
        writer.write(plan.index(i), sgdsweep.run_cell(c))
    writer.finish({"last_run_finished": stores.now()})
    return path


@pytest.fixture(scope="module")
def report(store, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("out") / "rep"
    assert report_main([str(store), "--out", str(out)]) == 0
    return out


def test_figures_show_the_accessor_numbers(store):
    ds = open_sweep(store)
    assert ds.sgd.sweep_dims == ("lr", "batch_size", "seed")
    fig = plots.sde_validity_map(ds)
    expected = ds.sgd.sde_validity().compute()
    # panels: seed = 0, 1; image rows batch_size, columns lr
    for k in range(2):
        shown = np.ma.filled(fig.axes[k].images[0].get_array(), np.nan)
        np.testing.assert_allclose(shown, expected.isel(seed=k).transpose("batch_size", "lr").values,
                                   rtol=1e-12)
    # the failed and the pending cell are masked (NaN) in the map
    assert np.isnan(expected.values).sum() == 2
    fig = plots.basin_heatmaps(ds)
    gibbs = np.log10(ds.sgd.basin_ratio("gibbs").compute())
    shown = np.ma.filled(fig.axes[1].images[0].get_array(), np.nan)
    lim = fig.axes[1].images[0].norm.vmax
    np.testing.assert_allclose(shown, np.clip(gibbs.isel(seed=0).transpose("batch_size", "lr").values,
                                              -lim, lim), rtol=1e-12)


def test_figures_degrade_gracefully(store):
    ds = open_sweep(store)
    subsets = {
        "no batch_size axis": ds.isel(batch_size=0),
        "lr only": ds.isel(batch_size=0, seed=0),
        "no sweep axis": ds.isel(lr=0, batch_size=0, seed=0),
    }
    for what, sub in subsets.items():
        for name, plot in plots.FIGURES.items():
            fig = plot(sub)
            assert isinstance(fig, Figure), (what, name)
            fig.savefig(io.BytesIO(), format="png")
    # only unfinished cells selected: a figure that says so instead of an empty plot
    none_done = ds.isel(lr=[1], batch_size=[1], seed=[1])
    assert not bool(none_done.done.any())
    fig = plots.density_evolution(none_done)
    assert "no finished cell" in fig.texts[0].get_text()
    # one run_cell result on its own (no sweep dims, no done)
    cell = sgdsweep.run_cell({"landscape": {"name": "q", "dim": 1, "datapoints": [
        [{"kind": "quadratic", "curvature": 1.0, "centre": -0.5}],
        [{"kind": "quadratic", "curvature": 1.0, "centre": 0.5}]]},
        "mc": {"chains": 100}, "time": {"t_end": 1.0, "snapshots": 3}, "density_grid": {"cells": 80},
        "methods": ["sgd", "fp"]})
    fig = plots.density_evolution(cell)
    assert len([a for a in fig.axes if a.lines]) == 3  # three snapshots, FP + SGD each


def test_figures_of_a_2d_cell_show_marginals():
    cell = sgdsweep.run_cell({"landscape": {"name": "q2", "dim": 2, "reference": [
        {"kind": "quadratic", "curvature": [1.0, 4.0], "centre": [0.0, 0.0]}],
        "shifts": {"n": 4, "std": 0.5, "direction": [1.0, 1.0]}},
        "methods": ["sgd", "gd"], "mc": {"chains": 100}, "time": {"t_end": 1.0, "snapshots": 3},
        "density_grid": {"lower": -2.0, "upper": 2.0, "cells": 40},
        "init": {"kind": "normal", "mean": 0.0, "std": 0.2}})
    fig = plots.density_evolution(cell)
    dx = float(cell.x[1] - cell.x[0])
    for ax in [a for a in fig.axes if a.lines]:
        line = ax.lines[0]  # SGD: the θ₁ marginal of a normalised 2-D histogram integrates to 1
        assert float(np.sum(line.get_ydata()) * dx) == pytest.approx(1.0, abs=1e-12)
    for name, plot in plots.FIGURES.items():
        assert isinstance(plot(cell), Figure), name


def test_report_files_and_html(store, report):
    for name in plots.FIGURES:
        data = (report / f"{name}.png").read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 10_000, name
    page = (report / "report.html").read_text(encoding="utf-8")
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == len(plots.FIGURES)
    assert base64.b64decode(images[0]).startswith(PNG_MAGIC)
    assert "<script" not in page and "http://" not in page and "https://" not in page
    assert "6 / 8" in page  # cells done / total
    assert FAIL_MESSAGE in page and "pending" in page and "not finished" in page
    ds = open_sweep(store)
    tv = float(ds.sgd.sde_validity().sel(lr=0.02, batch_size=1, seed=0))
    assert f"{tv:.3g}" in page  # TV(SGD, FP) of the first cell in the cell table
    assert "<h3>Escapes</h3>" in page
    assert "Resolved configuration" in page and "seed_two_point" in page
    assert ds.attrs["git_commit"] in page
    # swept keys show their axis, not the single default of the config file
    assert "\nlr: swept over axis lr = [0.02, 0.04]\nbatch_size: swept over axis batch_size = [1, 2]\n" \
        in swept_config(ds)
    assert "lr: swept over axis lr = [0.02, 0.04]" in page and "\nlr: 0.02\n" not in page


def test_escape_times_show_sgd_op_exact_time_and_the_swept_values():
    from tests.test_accessor import _escape_store

    fig = plots.escape_times(_escape_store())
    ax = fig.axes[0]
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels == ["exact: Itô SDE", "exact: SGD (transfer operator)", "SGD (Monte Carlo)",
                      "SDE (Euler–Maruyama)"]
    op = next(ln for ln in ax.lines if ln.get_label() == "exact: SGD (transfer operator)")
    np.testing.assert_array_equal(op.get_ydata(), [5.0, 2.5])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0.01", "0.02"]
    assert ax.get_xlabel() == "learning rate η\nhollow, escaped fraction: sde 0.01: 50%"
    assert not ax.texts  # no labels beside the markers (they overlapped)


def test_legend_below_fits_the_figure_width():
    from sgdsweep.analysis.figure import LEGEND_CHAR_IN, LEGEND_HANDLE_IN, _figure, _legend_below

    for width, n in ((3.4, 4), (13.6, 4)):
        fig = _figure(1, width=width)
        ax = fig.axes[0]
        for k in range(n):
            ax.plot([0, 1], [k, k], label=f"stationary reference number {k}")
        _legend_below(fig, ax)
        entry = LEGEND_HANDLE_IN + LEGEND_CHAR_IN * len("stationary reference number 0")
        assert fig.legends[0]._ncols == min(n, int(width // entry))


def test_method_densities_2d_shows_each_method_beside_sgds_stationary_law():
    from sgdsweep.analysis.plots2d import method_densities_2d

    x, y = np.linspace(-1, 1, 6), np.linspace(-1, 1, 5)
    p = np.exp(-(x[:, None] ** 2 + y[None, :] ** 2))
    methods = ["sgd", "fp", "sgd_op"]
    ds = xr.Dataset(
        {"density": (("lr", "method", "t", "x", "y"), np.broadcast_to(p, (1, 3, 2, 6, 5)).copy()),
         "stationary": (("lr", "kind", "x", "y"), np.broadcast_to(p, (1, 2, 6, 5)).copy()),
         "tv": (("lr", "method", "t"), np.full((1, 3, 2), 0.125)),
         "done": (("lr",), [True])},
        coords={"lr": [0.1], "method": methods, "t": [0.0, 1.0], "x": x, "y": y, "kind": ["ito", "sgd"]})
    fig = method_densities_2d(ds)
    titles = [ax.get_title() for ax in fig.axes if ax.get_visible() and ax.get_title()]
    assert titles == ["SGD's exact stationary law (sgd_op)", "SGD (Monte Carlo), t = 1\nTV to FP 0.125",
                      "Fokker–Planck (Itô), t = 1", "SGD (transfer operator), t = 1\nTV to FP 0.125"]
    without = method_densities_2d(ds.sel(kind=["ito"]))
    assert without.axes[0].get_title() == "stationary FP (ito)"


def test_report_default_out_dir(store):
    out = store.with_name(store.stem + "_report")
    assert report_main([str(store)]) == 0
    assert (out / "report.html").is_file()


def test_report_bad_input(tmp_path, capsys):
    assert report_main([str(tmp_path / "missing.zarr")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "missing.zarr" in err
    xr.Dataset({"a": ("x", [1.0])}).to_zarr(str(tmp_path / "other.zarr"))
    assert report_main([str(tmp_path / "other.zarr")]) == 2
    assert "not a sweep store" in capsys.readouterr().err
    # through the CLI: one line, no traceback
    proc = subprocess.run([sys.executable, "-m", "pipeline", "report", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert "Traceback" not in proc.stderr


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.mark.integration
@pytest.mark.skipif(CHROMIUM is None and os.environ.get("CI") != "true",
                    reason="chromium not installed (apt-get install -y chromium); required in CI")
def test_report_renders_in_headless_chromium(report, tmp_path):
    from PIL import Image

    assert CHROMIUM is not None, "CI=true but chromium is not installed"
    url = (report / "report.html").resolve().as_uri()
    shot = tmp_path / "report.png"
    with tempfile.TemporaryDirectory() as profile:
        proc = subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                               "--enable-logging=stderr", "--v=0", f"--screenshot={shot}",
                               "--window-size=1280,2000", url],
                              capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Uncaught" not in proc.stderr and "CONSOLE" not in proc.stderr, proc.stderr[-2000:]
    img = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert img.shape == (2000, 1280)
    # not blank: text and figures give many dark pixels and a wide spread of grey levels
    assert (img < 128).mean() > 0.01 and img.std() > 20
    with tempfile.TemporaryDirectory() as profile:
        dom = subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom", url],
                             capture_output=True, text=True, timeout=120).stdout
    assert dom.count("<img") == len(plots.FIGURES) and "<h1>sgdsweep report" in dom


def test_report_shows_the_most_informative_cell(store, report):
    """One-cell figures show the finished cell with the largest TV(SGD, FP) at the last
    snapshot (computed here with numpy from the plain-xarray store), and the page says so."""
    raw = xr.open_zarr(str(store)).load()
    p = raw.density.sel({"method": "sgd"}).isel(t=-1).values
    q = raw.density.sel({"method": "fp"}).isel(t=-1).values
    tv = 0.5 * np.abs(p - q).sum(axis=-1) * float(raw.x[1] - raw.x[0])
    tv = np.where(raw.done.values, tv, np.nan)
    idx = np.unravel_index(int(np.nanargmax(tv)), tv.shape)
    expected = {d: raw[d].values[i] for d, i in zip(raw.done.dims, idx, strict=True)}
    first = np.unravel_index(int(np.argmax(raw.done.values)), tv.shape)
    assert idx != first  # otherwise the first-cell default would pass too

    ds = open_sweep(store)
    cell, where = plots.most_informative_cell(ds)
    assert where == expected
    assert float(cell.sgd.sde_validity().squeeze()) == pytest.approx(float(np.nanmax(tv)), rel=1e-12)
    fig = plots.density_evolution(cell)
    assert all(f"{d} = {plots._fmt(v)}" in fig._suptitle.get_text() for d, v in expected.items())
    page = (report / "report.html").read_text(encoding="utf-8")
    label = ", ".join(f"{d} = {float(v):.4g}" for d, v in expected.items())
    assert f"The one-cell figures show the cell {label}" in page
    assert f"TV(SGD, FP) = {np.nanmax(tv):.3g} at the last snapshot (the largest in the sweep)" in page
    # without an FP reference the choice falls back to the first finished cell
    assert plots.most_informative_cell(ds.sel({"method": ["sgd", "sde"]}))[1] == {
        d: ds[d].values[i] for d, i in zip(raw.done.dims, first, strict=True)}


def test_cell_densities_and_explore(store, monkeypatch):
    """The interactive view redraws the selected cell and time; the figure shows the stored
    densities; without ipywidgets, an ImportError that says what to install."""
    pytest.importorskip("ipywidgets", reason="ipywidgets is in the dev extra")
    ds = open_sweep(store)
    raw = xr.open_zarr(str(store)).load()
    box = ds.sgd.explore()
    assert set(box.sliders) == {"lr", "batch_size", "seed", "t"}
    box.sliders["lr"].value = 0.04
    box.sliders["t"].value = float(raw.t[1])
    fig = box.figure
    assert "lr = 0.04, batch_size = 1, seed = 0" in fig._suptitle.get_text()
    lines = {ln.get_label().split(" (")[0]: ln for ln in fig.axes[0].lines}
    cell = raw.sel(lr=0.04, batch_size=1, seed=0).isel(t=1)
    np.testing.assert_array_equal(lines["SGD"].get_ydata(), cell.density.sel({"method": "sgd"}))
    np.testing.assert_array_equal(lines["Fokker–Planck"].get_ydata(), cell.density.sel({"method": "fp"}))
    np.testing.assert_array_equal(lines["Gibbs ∝ exp(−L/T)"].get_ydata(), cell.stationary.sel(kind="gibbs"))
    tv = 0.5 * float(np.abs(cell.density.sel({"method": "sgd"}) - cell.density.sel({"method": "fp"})).sum()) \
        * float(raw.x[1] - raw.x[0])
    sgd_label = next(ln.get_label() for ln in fig.axes[0].lines if ln.get_label().startswith("SGD"))
    assert sgd_label.endswith(f"(TV to FP {tv:.3f})")
    box.picker.value = ("sgd",)
    assert [ln.get_label() for ln in box.figure.axes[0].lines][-1] == "SGD (Monte Carlo)"

    monkeypatch.setitem(sys.modules, "ipywidgets", None)  # as if not installed
    with pytest.raises(ImportError, match=r"needs ipywidgets: pip install ipywidgets"):
        ds.sgd.explore()


def test_status_and_report_import_no_planner_nor_cell_runner():
    """``status`` and ``report`` only read a store: importing them must not bring Hydra,
    dask.distributed, scipy.integrate or the cell runner (numba kernels, scipy solvers),
    ~1 s of a 10⁵-cell ``report``'s start-up. ``sgdsweep.run_cell`` still resolves."""
    code = ("import sys, pipeline.cli.main, pipeline.cli.status, pipeline.cli.report; "
            "heavy = ('hydra', 'distributed', 'scipy.integrate', 'sgdsweep.cell.run'); "
            "print([m for m in heavy if m in sys.modules]); "
            "import sgdsweep; print(sgdsweep.run_cell.__module__, 'run_cell' in dir(sgdsweep))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)})
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == ["[]", "sgdsweep.cell.run True"], res.stdout
