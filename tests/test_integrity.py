"""Checksummed chunks: plain xarray detects damage, verify maps it to cells, resume and
report treat a corrupt cell as not done (real stores, real cells, in process)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import xarray as xr
import zarr

import sgdsweep
from pipeline.cli.report import write_report
from pipeline.cli.status import describe, status_main
from pipeline.config import compose, expand
from pipeline.run.sweep import templates
from pipeline.store import integrity
from pipeline.store import store as stores
from pipeline.store.location import parse
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
    assert said[0].startswith("verify: 1 done cell(s) with corrupt chunks will be recomputed")
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
