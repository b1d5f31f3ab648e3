"""Checksummed chunks: plain xarray detects damage, verify maps it to cells, resume and
report treat a corrupt cell as not done (real stores, real cells, in process)."""

from __future__ import annotations

import io
import json
import warnings

import numpy as np
import pytest
import xarray as xr
import zarr

import sgdsweep
from pipeline.cli.main import main
from pipeline.cli.report import write_report
from pipeline.cli.status import describe, status_main
from pipeline.config import compose, expand
from pipeline.run.sweep import templates
from pipeline.store import integrity
from pipeline.store import store as stores
from pipeline.store.location import parse
from sgdsweep.errors import ConfigError
from tests.conftest import TINY

GRID = ["grid.lr=[0.01,0.02]", "grid.batch_size=[1,2]"]


def chunk(path, var: str, idx: tuple[int, ...]):
    """(file, offset, length) of the chunk of ``var`` holding the cell ``idx``: a chunk
    file, or the cell's inner chunk inside a shard (found through the shard's index)."""
    return integrity.chunk_span(parse(path), var, idx)


def flip_bit(span) -> None:
    """Flip one bit in the middle of the chunk."""
    f, off, n = span
    b = bytearray(f.read_bytes())
    b[off + n // 2] ^= 0x04
    f.write_bytes(bytes(b))


def truncate(span, n: int = 10) -> None:
    """Keep the first ``n`` bytes of the chunk: a chunk file is cut short; inside a
    shard (whose other cells must survive) the rest of the chunk is zeroed."""
    f, off, size = span
    b = bytearray(f.read_bytes())
    if off == 0 and size == len(b):
        f.write_bytes(bytes(b[:n]))
    else:
        b[off + n:off + size] = bytes(size - n)
        f.write_bytes(bytes(b))


@pytest.fixture(scope="module")
def cells():
    plan = expand(compose([*TINY, *GRID]))
    return plan, [sgdsweep.run_cell(c) for c in plan.cells]


def _store(tmp_path, cells, checksums: bool = True, shard_cells: int = stores.SHARD_CELLS):
    """A finished 2 × 2 store of real cells (one shard per variable; ``shard_cells=1``:
    one file per cell, the layout of older stores); ``checksums=False`` writes it as
    before the checksum codec (zarr's default codecs)."""
    plan, results = cells
    cell = templates(plan)
    shard_cells = shard_cells if checksums else 1  # stores made before checksums had no shards
    tmpl = stores.build_template(plan, cell, stores.provenance(plan, cell.attrs, ["sweep", "test"]),
                                 shard_cells=shard_cells)
    path = tmp_path / "s.zarr"
    if checksums:
        stores.create(parse(path), tmpl, replace=False)
    else:
        with stores.quiet_zarr():
            tmpl.to_zarr(str(path), mode="w-", compute=False, zarr_format=3, consolidated=False)
    writer = stores.CellWriter(parse(path), tmpl, ["lr", "batch_size"])
    for i, ds in enumerate(results):
        writer.write(plan.index(i), ds)
    writer.finish({"runs": "[]"})
    return plan, tmpl, path


def test_every_array_is_checksummed_and_plain_xarray_detects_a_flipped_bit(tmp_path, cells):
    _, _, path = _store(tmp_path, cells)
    group = zarr.open_group(str(path), mode="r")
    assert all(integrity.has_checksums(a) for _, a in group.arrays())
    clean = xr.open_zarr(str(path)).load()  # opens and decodes with plain xarray
    assert clean["done"].values.all()
    flip_bit(chunk(path, "density", (1, 0)))
    ds = xr.open_zarr(str(path))
    with pytest.raises(ValueError, match="checksum"):
        ds["density"].values  # noqa: B018
    np.testing.assert_array_equal(ds["mean"].values, clean["mean"].values)  # other variables unaffected


def test_verify_names_exactly_the_damaged_cells(tmp_path, cells):
    _, _, path = _store(tmp_path, cells)
    assert integrity.verify(parse(path)).clean
    truncate(chunk(path, "density", (0, 1)), 100)
    flip_bit(chunk(path, "mean", (1, 0)))
    flip_bit(chunk(path, "density", (1, 0)))
    damage = integrity.verify(parse(path))
    assert damage.cells == {(0, 1): ["density"], (1, 0): ["density", "mean"]}
    assert damage.arrays == [] and damage.checksummed
    lines, _ = integrity.status_lines(parse(path))
    assert "corrupt : lr=0.01, batch_size=2: unreadable chunk of density" in lines
    assert "corrupt : lr=0.02, batch_size=1: unreadable chunk of density, mean" in lines


def test_checksum_path_agrees_with_decoding_every_chunk(tmp_path, cells):
    _, _, path = _store(tmp_path, cells)
    truncate(chunk(path, "density", (0, 1)), 100)
    flip_bit(chunk(path, "std", (1, 1)))
    flip_bit(chunk(path, "done", (1, 0)))
    group = zarr.open_group(str(path), mode="r")
    decoded: dict[tuple[int, ...], list[str]] = {}
    for name in sorted(group.array_keys()):
        if group[name].metadata.dimension_names[:2] == ("lr", "batch_size"):
            bad: set[tuple[int, ...]] = set()
            integrity.read_cells(group[name], 2, damaged=bad)  # through zarr's own decoding
            for idx in bad:
                decoded.setdefault(idx, []).append(name)
    assert integrity.verify(parse(path)).cells == dict(sorted(decoded.items())) == {
        (0, 1): ["density"], (1, 0): ["done"], (1, 1): ["std"]}


def test_verify_reads_slab_by_slab(tmp_path, cells, monkeypatch):
    """Without checksums every chunk is decoded; slabs of one row each give the same answer."""
    _, _, path = _store(tmp_path, cells, checksums=False)
    truncate(chunk(path, "std", (1, 1)), 20)
    monkeypatch.setattr(integrity, "SLAB_BYTES", 1)
    assert integrity.verify(parse(path)).cells == {(1, 1): ["std"]}


def test_corrupt_cell_is_not_done_on_resume(tmp_path, cells):
    plan, tmpl, path = _store(tmp_path, cells)
    truncate(chunk(path, "density", (1, 1)), 100)
    truncate(chunk(path, "done", (0, 1)), 3)  # a flag chunk itself
    state = stores.inspect(parse(path), plan, overwrite=False)
    assert state.done.tolist() == [[True, False], [True, True]]  # the corrupt flag reads as not done
    said: list[str] = []
    done = integrity.recheck_done(parse(path), state.done, said.append)
    assert done.tolist() == [[True, False], [True, False]]
    assert said[0].startswith("verify: 1 done cell(s) with corrupt or missing chunks will be recomputed")
    assert said[1] == "verify: lr=0.02, batch_size=2: unreadable chunk of density"
    # Recomputing rewrites every chunk of the cell: the store is whole again.
    writer = stores.CellWriter(parse(path), tmpl, ["lr", "batch_size"])
    for i in (1, 3):
        writer.write(plan.index(i), cells[1][i])
    assert integrity.verify(parse(path)).clean
    ds = xr.open_zarr(str(path)).load()
    for i, idx in enumerate(np.ndindex(2, 2)):
        np.testing.assert_array_equal(ds["density"].values[idx], cells[1][i]["density"].values)


def test_status_verify_and_report_name_the_corrupt_cell(tmp_path, cells, capsys):
    _, _, path = _store(tmp_path, cells)
    flip_bit(chunk(path, "density", (0, 0)))
    assert status_main([str(path)], out=io.StringIO()) == 0  # without --verify the flags say done
    buf = io.StringIO()
    assert status_main([str(path), "--verify"], out=buf) == 1
    out = buf.getvalue()
    assert "1 corrupt cell(s)" in out and "(crc32c checksums)" in out
    assert "corrupt : lr=0.01, batch_size=1: unreadable chunk of density" in out
    page = write_report(parse(path), tmp_path / "rep")
    err = capsys.readouterr().err
    assert err.count("warning: corrupt cell lr=0.01, batch_size=1: unreadable chunk of density") == 1
    html = page.read_text()
    assert "corrupt chunk of density: rerun the sweep to recompute the cell" in html
    assert "3 / 4" in html  # the other cells are reported
    assert html.count('<img alt="') >= 3  # figures drawn from the sound cells


def test_store_without_checksums_still_opens_resumes_and_verifies(tmp_path, cells):
    plan, _, path = _store(tmp_path, cells, checksums=False)
    group = zarr.open_group(str(path), mode="r")
    assert not any(integrity.has_checksums(a) for _, a in group.arrays())
    assert xr.open_zarr(str(path)).load()["done"].values.all()
    truncate(chunk(path, "density", (1, 0)), 100)  # breaks the zstd frame: found without a checksum
    damage = integrity.verify(parse(path))
    assert damage.cells == {(1, 0): ["density"]} and not damage.checksummed
    state = stores.inspect(parse(path), plan, overwrite=False)
    done = integrity.recheck_done(parse(path), state.done, lambda s: None)
    assert done.tolist() == [[True, True], [False, True]]
    _, n_done, _ = describe(parse(path))
    assert n_done == 4


def test_store_without_checksums_resumes_in_its_own_codecs(tmp_path, cells):
    plan, tmpl, path = _store(tmp_path, cells, checksums=False)
    truncate(chunk(path, "density", (0, 0)), 50)
    state = stores.inspect(parse(path), plan, overwrite=False)
    done = integrity.recheck_done(parse(path), state.done, lambda s: None)
    assert done.tolist() == [[False, True], [True, True]]
    stores.CellWriter(parse(path), tmpl, ["lr", "batch_size"]).write(plan.index(0), cells[1][0])
    group = zarr.open_group(str(path), mode="r")
    assert not integrity.has_checksums(group["density"])  # written as the store was made
    assert integrity.verify(parse(path)).clean
    np.testing.assert_array_equal(xr.open_zarr(str(path))["density"].values[0, 0],
                                  cells[1][0]["density"].values)


# --------------------------------------------------------------------------- other readers


def _open_quietly(path) -> xr.Dataset:
    """Plain ``xarray.open_zarr``, asserting that it warns of nothing."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = xr.open_zarr(str(path))
    assert [str(w.message) for w in caught] == []
    return ds


def test_a_second_zarr_implementation_reads_every_number_and_no_string_is_unspecified(tmp_path, cells):
    import tensorstore as ts

    plan, tmpl, path = _store(tmp_path, cells)
    message = "ValueError: the cell failed — ünïcode survives"
    writer = stores.CellWriter(parse(path), tmpl, ["lr", "batch_size"])
    writer.fail(plan.index(3), message)
    writer.finish({"runs": "[]"})
    ds = _open_quietly(path).load()
    group = zarr.open_group(str(path), mode="r")
    numeric = 0
    for name in sorted(group.array_keys()):
        meta = json.loads((path / name / "zarr.json").read_text())
        if ds[name].dtype.kind in "biuf":
            t = ts.open({"driver": "zarr3", "kvstore": {"driver": "file", "path": str(path / name)}},
                        read=True).result()
            values = t.read().result()
            assert values.dtype == ds[name].dtype, name
            np.testing.assert_array_equal(values, ds[name].values, err_msg=name)
            numeric += 1
        else:  # Zarr v3's variable-length UTF-8 string (zarr-extensions), not fixed_length_utf32
            assert meta["data_type"] == "string", name
    assert numeric == len(list(group.array_keys())) - 4  # all but error, method, kind, basin
    assert ds["method"].values.tolist() == ["sgd", "sde", "fp"]
    assert ds["error"].values.tolist() == [["", ""], ["", message]]
    assert ds["done"].values.tolist() == [[True, True], [True, False]]
    np.testing.assert_array_equal(integrity.bookkeeping(parse(path))[1], ds["error"].values)
    assert "utf32" not in "".join(p.read_text() for p in path.rglob("zarr.json"))


def test_plain_open_is_quiet_from_creation_on(tmp_path, cells):
    """Consolidated metadata from the store's creation: no warning while a sweep still
    writes it, nor after; one metadata file read for the whole store."""
    plan, results = cells
    cell = templates(plan)
    tmpl = stores.build_template(plan, cell, stores.provenance(plan, cell.attrs, ["sweep", "test"]))
    path = tmp_path / "s.zarr"
    stores.create(parse(path), tmpl, replace=False)
    assert set(_open_quietly(path).data_vars) == set(tmpl.data_vars)  # created, not a cell written
    writer = stores.CellWriter(parse(path), tmpl, ["lr", "batch_size"])
    writer.write(plan.index(0), results[0])
    assert _open_quietly(path)["done"].values.tolist() == [[True, False], [False, False]]
    xr.open_zarr(str(path), consolidated=True)  # raises if the consolidated metadata is absent
    writer.finish({"runs": "[]"})
    assert _open_quietly(path).attrs["runs"] == "[]"


# --------------------------------------------------------------------------- data gone


@pytest.mark.parametrize("shard_cells", [2, 1])
def test_a_done_cell_whose_data_file_is_deleted_is_reported_and_recomputed(tmp_path, cells, shard_cells):
    """Zarr reads an absent chunk as its fill value (NaN): verify names the done cells
    whose chunk or shard file is gone, and the rerun recomputes exactly them."""
    plan, tmpl, path = _store(tmp_path, cells, shard_cells=shard_cells)
    chunk(path, "density", (1, 0))[0].unlink()  # a shard of two cells, or one cell's chunk file
    chunk(path, "std", (0, 1))[0].unlink()
    assert np.isnan(xr.open_zarr(str(path))["density"].values[1, 0]).all()  # silently NaN to zarr
    lost = set(np.ndindex(2, 2)) if shard_cells == 2 else {(1, 0), (0, 1)}  # shards are rows
    damage = integrity.verify(parse(path))
    assert set(damage.missing) == lost and damage.cells == {} and damage.arrays == []
    assert damage.missing[(1, 0)] == ["density"]
    buf = io.StringIO()
    assert status_main([str(path), "--verify"], out=buf) == 1
    out = buf.getvalue()
    assert f"0 corrupt cell(s), {len(lost)} done cell(s) with data missing" in out
    assert "corrupt : lr=0.02, batch_size=1: done, but its data is missing (no chunk of density)" in out
    assert "corrupt : lr=0.01, batch_size=2: done, but its data is missing (no chunk of std)" in out
    state = stores.inspect(parse(path), plan, overwrite=False)
    done = integrity.recheck_done(parse(path), state.done, lambda s: None)
    assert {idx for idx in np.ndindex(2, 2) if not done[idx]} == lost
    writer = stores.CellWriter(parse(path), tmpl, ["lr", "batch_size"])
    for i, idx in enumerate(np.ndindex(2, 2)):
        if idx in lost:
            writer.write(idx, cells[1][i])
    writer.flush()
    assert integrity.verify(parse(path)).clean
    ds = xr.open_zarr(str(path)).load()
    for i, idx in enumerate(np.ndindex(2, 2)):
        np.testing.assert_array_equal(ds["density"].values[idx], cells[1][i]["density"].values)
        np.testing.assert_array_equal(ds["std"].values[idx], cells[1][i]["std"].values)


def test_a_deleted_coordinate_chunk_is_named_and_rebuilt(tmp_path, cells):
    _, _, path = _store(tmp_path, cells)
    x = xr.open_zarr(str(path))["x"].values
    (path / "x" / "c" / "0").unlink()
    damage = integrity.verify(parse(path))
    assert damage.arrays == ["x"] and damage.why["x"] == "chunk file x/c/0 is missing"
    lines, _ = integrity.status_lines(parse(path))
    assert "corrupt : array 'x' (not a cell's): chunk file x/c/0 is missing" in lines
    with pytest.raises(ConfigError, match="array 'x' is corrupt"):
        integrity.recheck_done(parse(path), np.ones((2, 2), bool), lambda s: None)
    buf = io.StringIO()
    assert status_main([str(path), "--verify", "--repair"], out=buf) == 0
    assert f"repair  : {path}/x: coordinate rewritten from the config in the run record" in buf.getvalue()
    assert integrity.verify(parse(path)).clean
    np.testing.assert_array_equal(xr.open_zarr(str(path))["x"].values, x)


# --------------------------------------------------------------------------- metadata


def _docs(path) -> dict[str, dict]:
    return {str(p.relative_to(path)): json.loads(p.read_text()) for p in sorted(path.rglob("zarr.json"))}


def test_damaged_zarr_json_is_named_and_rebuilt_from_the_run_record(tmp_path, cells, capsys):
    plan, _, path = _store(tmp_path, cells)
    before, clean = _docs(path), xr.open_zarr(str(path)).load()
    shown = str(path)
    # An array's metadata garbled: the store still opens (the root's consolidated copy), verify names it.
    (path / "density" / "zarr.json").write_text((path / "density" / "zarr.json").read_text()[:300])
    buf = io.StringIO()
    assert status_main([shown, "--verify"], out=buf) == 1
    assert f"metadata: {shown}/density/zarr.json: not valid JSON (" in buf.getvalue()
    # The root too: nothing opens; every command names the file and offers the repair.
    (path / "zarr.json").write_text("{}")
    for argv in (["status", shown], ["report", shown, "--out", str(tmp_path / "rep")]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: store: {shown}/zarr.json: not Zarr v3 metadata")
        assert err.count("\n") == 1
        assert f"status {shown} --verify --repair rebuilds the metadata from the run record" in err
    with pytest.raises(ConfigError, match=r"zarr.json: not Zarr v3 metadata .* overwrite=true"):
        stores.inspect(parse(path), plan, overwrite=False)  # a rerun of the sweep says the same
    # The repair: the root from the run record, the array (its copy lost with the root) from the config.
    buf = io.StringIO()
    assert status_main([shown, "--verify", "--repair"], out=buf) == 0
    out = buf.getvalue()
    assert f"repair  : {shown}/density/zarr.json: rewritten from the config in the run record" in out
    assert f"repair  : {shown}/zarr.json: rewritten from the run record" in out
    assert "0 corrupt cell(s), 0 done cell(s) with data missing" in out
    after = _docs(path)
    assert after == before  # every document as the sweep wrote it, the consolidated copies included
    ds = _open_quietly(path).load()
    assert ds.attrs == clean.attrs
    for name in clean.variables:
        np.testing.assert_array_equal(ds[name].values, clean[name].values, err_msg=name)
    # Root and run record both gone: said, nothing written.
    (path / "zarr.json").write_text("{")
    (path / integrity.RECORD / "zarr.json").unlink()
    assert main(["status", shown, "--verify", "--repair"]) == 2
    assert "run record (run_record/zarr.json) too; recreate the store" in capsys.readouterr().err


def test_a_sweep_axis_coordinate_is_not_a_cell_array():
    """A 1-D sweep's axis coordinate starts with the sweep axis but is one chunk: its
    one chunk file is not the first cell's, and the other cells are not missing it."""
    coord = zarr.create_array({}, shape=(3,), chunks=(3,), dtype=float, dimension_names=["lr"])
    cell = zarr.create_array({}, shape=(3, 5), chunks=(1, 5), dtype=float, dimension_names=["lr", "x"])
    assert not integrity._cell_array(coord, ["lr"]) and integrity._cell_array(cell, ["lr"])
