"""Sharded stores: few files, one cell readable alone, buffered shard writes, verify
naming the damaged cells of a shard (real cells written by the pipeline's writer)."""

from __future__ import annotations

import time

import dask.array as da
import numpy as np
import pytest
import xarray as xr
import zarr

import sgdsweep
from pipeline.config import compose, expand
from pipeline.run.sweep import templates
from pipeline.store import integrity
from pipeline.store import store as stores
from pipeline.store.location import parse
from sgdsweep.analysis.reductions import load_variables
from sgdsweep.store import shards
from tests.conftest import TINY
from tests.test_integrity import chunk, flip_bit

SEEDS = 10
SHARD = 4  # cells per shard: shards [0, 4), [4, 8), [8, 10)


@pytest.fixture(scope="module")
def cells():
    plan = expand(compose([*TINY, "~grid.lr", f"grid.seed=[{','.join(str(s) for s in range(SEEDS))}]"]))
    return plan, [sgdsweep.run_cell(c) for c in plan.cells]


def _empty(tmp_path, cells):
    plan, _ = cells
    cell = templates(plan)
    tmpl = stores.build_template(plan, cell, stores.provenance(plan, cell.attrs, ["sweep", "test"]),
                                 shard_cells=SHARD)
    path = tmp_path / "s.zarr"
    stores.create(parse(path), tmpl, replace=False)
    return plan, tmpl, path


def _on_disk_done(path) -> list[bool]:
    return zarr.open_group(str(path), mode="r")["done"][:].tolist()


def test_shard_shape_takes_trailing_axes_first():
    assert stores.shard_shape((10,), 4) == (4,)
    assert stores.shard_shape((3, 5, 7), 1024) == (3, 5, 7)
    assert stores.shard_shape((50, 40, 30), 1024) == (1, 34, 30)
    assert stores.shard_shape((2, 3), 1) == (1, 1)


def test_cells_wait_for_their_shard_then_read_back_exactly(tmp_path, cells):
    _, tmpl, path = _empty(tmp_path, cells)
    results = cells[1]
    writer = stores.CellWriter(parse(path), tmpl, ["seed"])
    writer.expect([(i,) for i in range(SEEDS)])
    order = [5, 0, 9, 2, 1, 8, 4, 7, 6, 3]
    flushed: list[int] = []
    writes: list[tuple[int, list[int]]] = []
    for i in order:
        new = sorted(idx[0] for idx, ok in writer.write((i,), results[i]) if ok)
        if new:
            writes.append((i, new))
        flushed += new
        on_disk = _on_disk_done(path)
        assert [j for j in range(SEEDS) if on_disk[j]] == sorted(flushed)  # durable = reported
    # A shard is written when its last expected cell arrives, not before.
    assert writes == [(8, [8, 9]), (6, [4, 5, 6, 7]), (3, [0, 1, 2, 3])]
    writer.finish({"runs": "[]"})
    # At most one file per shard and variable: 3 shards of 4, 4, 2 cells (zarr writes
    # no file for a shard holding only fill values).
    group = zarr.open_group(str(path), mode="r")
    for name in tmpl.data_vars:
        files = sorted(p.name for p in (path / name / "c").iterdir()) if (path / name / "c").exists() else []
        assert set(files) <= {"0", "1", "2"}, name
        assert name not in ("density", "done") or files == ["0", "1", "2"]
        assert group[name].shards[0] == SHARD and group[name].chunks[0] == 1
    ds = xr.open_zarr(str(path)).load()  # plain xarray
    assert ds["done"].values.all() and (ds["error"].values == "").all()
    for i in range(SEEDS):
        for name in ("density", "mean", "basin_mass"):
            np.testing.assert_array_equal(ds[name].isel(seed=i).values, results[i][name].values)


def test_one_cell_reads_alone_inside_a_damaged_shard(tmp_path, cells):
    """Reading a cell decodes only its own inner chunk (found through the shard index):
    a neighbour's corrupt chunk in the same shard file does not touch it."""
    _, tmpl, path = _empty(tmp_path, cells)
    writer = stores.CellWriter(parse(path), tmpl, ["seed"])
    writer.expect([(i,) for i in range(SEEDS)])
    for i, ds in enumerate(cells[1]):
        writer.write((i,), ds)
    writer.finish({})
    flip_bit(chunk(path, "density", (1,)))
    ds = xr.open_zarr(str(path))
    np.testing.assert_array_equal(ds["density"].isel(seed=2).values, cells[1][2]["density"].values)
    with pytest.raises(ValueError, match="checksum"):
        ds["density"].isel(seed=1).values  # noqa: B018
    damage = integrity.verify(parse(path))
    assert damage.cells == {(1,): ["density"]}


def test_damaged_shard_index_damages_every_cell_of_the_shard(tmp_path, cells):
    _, tmpl, path = _empty(tmp_path, cells)
    writer = stores.CellWriter(parse(path), tmpl, ["seed"])
    writer.expect([(i,) for i in range(SEEDS)])
    for i, ds in enumerate(cells[1]):
        writer.write((i,), ds)
    writer.finish({})
    f = chunk(path, "mean", (5,))[0]  # the shard file of cells 4..7
    b = bytearray(f.read_bytes())
    b[-10] ^= 0x01  # inside the index (16 bytes per inner chunk, then its CRC-32C)
    f.write_bytes(bytes(b))
    assert integrity.verify(parse(path)).cells == {(4,): ["mean"], (5,): ["mean"], (6,): ["mean"],
                                                   (7,): ["mean"]}
    # Rewriting two cells of that shard: the two others lost their data and are not done any more.
    writer = stores.CellWriter(parse(path), tmpl, ["seed"])
    writer.write((4,), cells[1][4])
    writer.write((5,), cells[1][5])
    assert _on_disk_done(path) == [True] * 4 + [True, True, False, False] + [True] * 2
    assert integrity.verify(parse(path)).clean


def test_waiting_cells_are_written_after_flush_seconds(tmp_path, cells):
    _, tmpl, path = _empty(tmp_path, cells)
    writer = stores.CellWriter(parse(path), tmpl, ["seed"], flush_seconds=0.2)
    writer.expect([(i,) for i in range(SEEDS)])
    assert writer.write((0,), cells[1][0]) == [] and writer.poll() == []
    time.sleep(0.3)
    assert writer.poll() == [((0,), True)]
    assert writer.fail((1,), "RuntimeError: boom") == []
    assert writer.flush() == [((1,), False)]
    group = zarr.open_group(str(path), mode="r")
    assert group["done"][:4].tolist() == [True, False, False, False]
    assert group["error"][1] == "RuntimeError: boom"
    # The rest of shard 0 arrives: one more read-modify-write keeps the cells already there.
    for i in (1, 2, 3):
        writer.write((i,), cells[1][i])
    ds = xr.open_zarr(str(path)).load()
    assert ds["done"].values[:4].all() and ds["error"].values[1] == ""
    for i in range(4):
        np.testing.assert_array_equal(ds["density"].isel(seed=i).values, cells[1][i]["density"].values)


def test_files_written_aside_are_not_chunks(tmp_path, cells):
    """A writer killed mid-write leaves its temporary file (zarr's ``*.partial``, ours
    ``.N.pid.tmp``) beside the shards: verify ignores it, the cells stay whole."""
    _, tmpl, path = _empty(tmp_path, cells)
    writer = stores.CellWriter(parse(path), tmpl, ["seed"])
    writer.expect([(i,) for i in range(SEEDS)])
    for i, ds in enumerate(cells[1]):
        writer.write((i,), ds)
    writer.finish({})
    shard = chunk(path, "mean", (0,))[0]
    shard.with_name("0.9a5bbda767c44e58a90422b61b290c26.partial").write_bytes(b"torn")
    shard.with_name(f".{shard.name}.123.tmp").write_bytes(b"torn")
    assert integrity.verify(parse(path)).clean


def _written(tmp_path, cells, fail=()):
    _, tmpl, path = _empty(tmp_path, cells)
    writer = stores.CellWriter(parse(path), tmpl, ["seed"])
    writer.expect([(i,) for i in range(SEEDS) if i != 9])  # cell 9 never written
    for i, ds in enumerate(cells[1][:9]):
        writer.fail((i,), "ValueError: boom") if i in fail else writer.write((i,), ds)
    writer.finish({"runs": "[]"})
    return path


def test_shard_reader_equals_zarr_bit_for_bit(tmp_path, cells):
    """``open_sweep`` decodes shard files itself (a task per shard); every variable —
    floats, bools, fixed-width strings, cells never written, failed cells — equals what
    plain zarr decodes, and the whole-array reader of ``status`` agrees too."""
    path = _written(tmp_path, cells, fail=(2,))
    plain = xr.open_zarr(str(path), chunks=None).load()
    ds = sgdsweep.open_sweep(path)
    fast = [n for n in ds.data_vars if ds[n].chunks and ds[n].data.name.startswith(f"{n}-")]
    assert {"density", "done", "error", "basin_mass", "mean"} <= set(fast)
    assert all(ds[n].chunks[0] == (SHARD, SHARD, 2) for n in fast)  # a shard per task, not a cell
    group = zarr.open_group(str(path), mode="r")
    for name in plain.data_vars:
        a, b = ds[name].values, plain[name].values
        assert a.dtype == b.dtype, name
        np.testing.assert_array_equal(a, b, err_msg=name)
        whole = shards.read_shards(group[name], 1)
        np.testing.assert_array_equal(whole, b, err_msg=name)
    assert ds["done"].values.tolist() == [True, True, False] + [True] * 6 + [False]
    assert ds["error"].values[2] == "ValueError: boom" and np.isnan(ds["mean"].values[9]).all()
    # report's loader: each variable read whole, no Dask task per shard; the same Dataset.
    names = list(ds.data_vars)
    loaded = load_variables(str(path), ds, names)
    assert list(loaded) == names and all(not isinstance(v.data, da.Array) for v in loaded.values())
    xr.testing.assert_identical(ds.assign(loaded), sgdsweep.open_sweep(path).load())


def test_shard_reader_refuses_a_damaged_cell_as_zarr_does(tmp_path, cells):
    path = _written(tmp_path, cells)
    flip_bit(chunk(path, "density", (5,)))
    ds = sgdsweep.open_sweep(path)
    np.testing.assert_array_equal(ds["density"].isel(seed=slice(0, 4)).values,
                                  np.stack([c["density"].values for c in cells[1][:4]]))
    with pytest.raises(ValueError, match=r"'density', cell \(5,\)"):
        ds["density"].values  # noqa: B018
    with pytest.raises(ValueError, match=r"'density', cell \(5,\)"):
        load_variables(str(path), ds, ["mean", "density"])
    damaged: set = set()
    group = zarr.open_group(str(path), mode="r")
    whole = shards.read_shards(group["density"], 1, damaged=damaged)
    assert damaged == {(5,)} and np.isnan(whole[5]).all()
    np.testing.assert_array_equal(whole[4], cells[1][4]["density"].values)


def test_small_numeric_cells_are_stored_plain_and_read_with_every_check(tmp_path, cells):
    """Per-cell scalars are stored ``bytes → crc32c`` (no zstd frame to decode), larger
    cells and strings still compressed; the vectorised reader returns zarr's values, reads a
    cell never written as the fill value, and finds a flipped bit in one cell of a shard."""
    _, tmpl, path = _empty(tmp_path, cells)
    results = cells[1]
    writer = stores.CellWriter(parse(path), tmpl, ["seed"])
    writer.expect([(i,) for i in range(SEEDS - 1)])
    for i in range(SEEDS - 2):  # cell 8 fails, cell 9 is never written
        writer.write((i,), results[i])
    writer.fail((SEEDS - 2,), "boom: a cell that failed")
    writer.flush()
    group = zarr.open_group(str(path), mode="r")
    codecs = {name: [type(c).__name__ for c in group[name].metadata.codecs[0].codecs]
              for name in tmpl.data_vars}
    assert codecs["done"] == ["BytesCodec", "Crc32cCodec"]
    assert codecs["escape_time_mle"] == ["BytesCodec", "Crc32cCodec"]
    assert codecs["density"] == ["BytesCodec", "ZstdCodec", "Crc32cCodec"]
    assert codecs["error"] == ["VLenUTF8Codec", "Crc32cCodec"]
    assert group.attrs[integrity.PLAIN_ATTR] == integrity.PLAIN_CELL_BYTES
    plain = [n for n, c in codecs.items() if len(c) == 2]
    assert len(plain) >= 15
    for name in plain:
        ours = shards.read_shards(group[name], 1)
        np.testing.assert_array_equal(ours, group[name][...])  # zarr's own decoder agrees
    assert np.isnan(shards.read_shards(group["escape_time_mle"], 1)[SEEDS - 2:]).all()
    errors = shards.read_shards(group["error"], 1)
    assert errors.tolist() == group["error"][...].tolist()  # zarr's own decoder agrees
    assert errors.tolist()[:SEEDS - 2] == [""] * (SEEDS - 2)
    assert errors[SEEDS - 2] == "boom: a cell that failed"
    assert shards.read_shards(group["done"], 1).tolist() == [True] * (SEEDS - 2) + [False, False]
    # The compiled span check is the standard CRC-32C: chunks of any length sealed by
    # google_crc32c pass, a flipped byte or a span past the end fails.
    rng = np.random.default_rng(0)
    parts = [rng.integers(0, 256, size=int(n), dtype=np.uint8).tobytes() for n in rng.integers(0, 40, 50)]
    sealed = [p + shards.google_crc32c.value(p).to_bytes(4, "little") for p in parts]
    off = np.cumsum([0] + [len(c) for c in sealed[:-1]])
    size = np.array([len(c) for c in sealed])
    data = bytearray(b"".join(sealed))
    assert shards.spans_ok(bytes(data), off, size).all()
    data[off[7]] ^= 0x10
    ok = shards.spans_ok(bytes(data), off, size)
    assert np.flatnonzero(~ok).tolist() == [7]
    assert not shards.spans_ok(bytes(data), off[-1:], size[-1:] + 1).any()
    # One flipped bit in cell 5's chunk: that cell alone is damaged (strict: raises).
    flip_bit(chunk(path, "escape_time_mle", (5,)))
    group = zarr.open_group(str(path), mode="r")
    damaged: set[tuple[int, ...]] = set()
    got = shards.read_shards(group["escape_time_mle"], 1, damaged=damaged)
    assert damaged == {(5,)}
    want = np.array([float(results[i]["escape_time_mle"].values.ravel()[0]) for i in range(SEEDS - 2)])
    keep = [i for i in range(SEEDS - 2) if i != 5]
    np.testing.assert_array_equal(got[keep, ...].reshape(len(keep), -1)[:, 0], want[keep])
    with pytest.raises(ValueError, match=r"cell \(5,\)"):
        shards.read_shard(group["escape_time_mle"], 1, (1,), strict=True)
    # And in a string cell: the empty strings around it still read, the flipped one is damaged.
    flip_bit(chunk(path, "error", (2,)))
    damaged = set()
    errors = shards.read_shards(zarr.open_group(str(path), mode="r")["error"], 1, damaged=damaged)
    assert damaged == {(2,)} and errors[[0, 1, 3]].tolist() == ["", "", ""]


def test_a_lazy_read_decodes_only_the_cells_it_asks_for(tmp_path, cells):
    """open_sweep's lazy arrays read a slice of a shard without decoding its other cells: the
    values equal zarr's, and a damaged cell elsewhere in the same shard does not raise —
    asking for it does."""
    _, tmpl, path = _empty(tmp_path, cells)
    writer = stores.CellWriter(parse(path), tmpl, ["seed"])
    writer.expect([(i,) for i in range(SEEDS)])
    for i in range(SEEDS):
        writer.write((i,), cells[1][i])
    writer.flush()
    flip_bit(chunk(path, "density", (5,)))  # shard [4, 8)
    ds = sgdsweep.open_sweep(str(path))
    group = zarr.open_group(str(path), mode="r")
    for var in ("density", "escape_time_mle", "error"):
        for sl in (slice(1, 3), slice(3, 5), slice(6, 10), slice(9, 10)):
            np.testing.assert_array_equal(ds[var].isel(seed=sl).values, group[var][sl])
    with pytest.raises(ValueError, match=r"cell \(5,\)"):
        ds["density"].isel(seed=slice(4, 6)).load()
