"""The Zarr store: template, cell writes, failures, resume checks, provenance (in process)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import xarray as xr
import zarr

import sgdsweep
from pipeline.cli.status import describe
from pipeline.config import compose, expand
from pipeline.run.sweep import templates
from pipeline.store import store as stores
from pipeline.store.location import parse
from sgdsweep.errors import ConfigError
from tests.conftest import TINY, snapshot

GRID = ["grid.lr=[0.01,0.02]", "grid.batch_size=[1,2]"]


@pytest.fixture
def fresh(tmp_path):
    """A plan of 2 × 2 tiny cells and its freshly created store."""
    plan = expand(compose([*TINY, *GRID]))
    cell = templates(plan)
    tmpl = stores.build_template(plan, cell, stores.provenance(plan, cell.attrs, ["sweep", "test"]))
    path = tmp_path / "s.zarr"
    assert not stores.inspect(parse(path), plan, overwrite=False).exists
    stores.create(parse(path), tmpl, replace=False)
    return plan, tmpl, path


def test_template_layout_and_provenance(fresh):
    plan, _, path = fresh
    ds = xr.open_zarr(str(path), consolidated=False)
    assert ds["density"].dims == ("lr", "batch_size", "method", "t", "x")
    assert ds["done"].dims == ("lr", "batch_size") and not ds["done"].values.any()
    assert (ds["error"].values == "").all()
    assert np.isnan(ds["density"].values).all()
    np.testing.assert_array_equal(ds["lr"].values, [0.01, 0.02])
    assert ds["lr"].attrs["config_path"] == "lr"
    g = zarr.open_group(str(path), mode="r")
    assert g["density"].chunks == (1, 1, 3, 3, 60)
    assert g["done"].chunks == (1, 1) and g.metadata.zarr_format == 3
    attrs = ds.attrs
    assert attrs["config_hash"] == plan.config_hash
    assert "landscape:" in attrs["config"] and "lr:" in attrs["config"]
    assert {"sgdsweep", "numpy", "numba", "xarray", "zarr", "dask"} <= set(json.loads(attrs["versions"]))
    assert attrs["command_line"].endswith("-m pipeline sweep test")
    assert attrs["created"].endswith("+00:00") and "git_commit" in attrs
    assert ds["density"].attrs["units"] == "1/θ"


def test_cells_land_in_their_region_done_last(fresh):
    plan, tmpl, path = fresh
    writer = stores.CellWriter(parse(path), tmpl, ["lr", "batch_size"])
    cell = sgdsweep.run_cell(plan.cells[1])  # lr = 0.01, batch_size = 2
    writer.write(plan.index(1), cell)
    writer.fail(plan.index(2), "RuntimeError: the solver gave up")
    writer.finish({"runs": "[]"})
    ds = xr.open_zarr(str(path), consolidated=True).load()
    np.testing.assert_array_equal(ds["done"].values, [[False, True], [False, False]])
    assert ds["error"].values[1, 0] == "RuntimeError: the solver gave up"
    got = ds.sel(lr=0.01, batch_size=2)
    for name in cell.data_vars:
        np.testing.assert_array_equal(got[name].values, cell[name].values, err_msg=name)
    assert np.isnan(ds["density"].sel(lr=0.02).values).all()
    text, n_done, total = describe(parse(path))
    assert (n_done, total) == (1, 4)
    assert "1/4 done, 1 failed, 2 pending" in text
    assert "lr=0.02, batch_size=1: RuntimeError: the solver gave up" in text


def test_resume_check(fresh):
    plan, tmpl, path = fresh
    writer = stores.CellWriter(parse(path), tmpl, ["lr", "batch_size"])
    writer.write(plan.index(0), sgdsweep.run_cell(plan.cells[0]))
    before = snapshot(path)
    state = stores.inspect(parse(path), plan, overwrite=False)
    assert state.exists and state.done.tolist() == [[True, False], [False, False]]
    other = expand(compose([*TINY, "grid.lr=[0.01,0.02]", "grid.batch_size=[1]"]))
    with pytest.raises(ConfigError, match=r"^store: .* holds a different sweep \(config hash"):
        stores.inspect(parse(path), other, overwrite=False)
    assert stores.inspect(parse(path), other, overwrite=True).done is None  # replaced only when asked
    assert snapshot(path) == before


def test_basin_labels_united_across_cells(fresh):
    plan, _, _ = fresh
    a = sgdsweep.cell_template(plan.cells[0])
    assert list(a.basin.values) == ["b0", "b1"]
    b = a.isel(basin=[1]).assign_coords(basin=["b7"])
    united = stores.union_template([a, b])
    assert list(united.basin.values) == ["b0", "b1", "b7"]
    assert np.isnan(united["basin_mass"].values).all()
    with pytest.raises(ConfigError, match=r"^grid: the swept values change the cell coordinate 'x'"):
        stores.union_template([a, a.assign_coords(x=a.x.values + 1.0)])


def test_cell_with_fewer_basins_is_padded_with_nan(tmp_path):
    plan = expand(compose([*TINY, "grid.lr=[0.01]"]))
    real = sgdsweep.run_cell(plan.cells[0])
    wider = stores.union_template([sgdsweep.cell_template(plan.cells[0]),
                                   real.isel(basin=[0]).assign_coords(basin=["b9"])])
    tmpl = stores.build_template(plan, wider, {})
    path = tmp_path / "w.zarr"
    stores.create(parse(path), tmpl, replace=False)
    stores.CellWriter(parse(path), tmpl, ["lr"]).write((0,), real)
    ds = xr.open_zarr(str(path), consolidated=False).load()
    np.testing.assert_array_equal(ds["basin_mass"].sel(lr=0.01, basin=["b0", "b1"]).values,
                                  real["basin_mass"].values)
    assert np.isnan(ds["basin_mass"].sel(lr=0.01, basin="b9").values).all()
