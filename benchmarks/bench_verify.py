"""Cost of ``status --verify`` (reading and checking every chunk) on a 1,000-cell store.

The store is made as the sweep makes it (the template of a real 10 × 100 plan (lr × seed),
crc32c on every chunk) and every cell is filled with the bytes of one real cell
of the default config (6 methods, 21 snapshots, 250 density cells: ~0.3 MB of
chunks a cell) — computing 1,000 cells would take an hour here and change nothing
in what is read. Measured in the same run:

    verify (checksums)         pipeline.store.integrity.verify: every chunk file read, its CRC-32C checked,
                               mapped to cells
    resume recheck             integrity.recheck_done on an all-done store (what a rerun pays)
    xarray load (baseline)     plain ``xr.open_zarr(store).load()``: the same chunks decoded by xarray/dask
    raw bytes (floor)          reading every chunk file without decoding
    verify, no checksums       the same store written without the crc32c codec (an older store):
                               every chunk decoded through zarr

Usage: python benchmarks/bench_verify.py [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import numpy as np
import xarray as xr

import sgdsweep
from pipeline.config import compose, expand
from pipeline.run.sweep import templates
from pipeline.store import integrity
from pipeline.store import store as stores
from pipeline.store.location import parse

GRID = ["grid.lr={start: 0.005, stop: 0.05, num: 10}", f"grid.seed=[{','.join(map(str, range(100)))}]"]


def best(fn, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def make(path: Path, checksums: bool) -> tuple[int, float]:
    t0 = time.perf_counter()
    cfg = compose(GRID)
    plan = expand(cfg)
    t_plan = time.perf_counter() - t0
    cell = templates(plan)
    tmpl = stores.build_template(plan, cell, stores.provenance(plan, cell.attrs, ["bench"]))
    if checksums:
        stores.create(parse(path), tmpl, replace=False)
    else:
        with stores.quiet_zarr():
            tmpl.to_zarr(str(path), mode="w-", compute=False, zarr_format=3, consolidated=False)
    one = sgdsweep.run_cell(plan.cells[0])
    writer = stores.CellWriter(parse(path), tmpl, [a.name for a in plan.axes])
    writer.expect([plan.index(i) for i in range(len(plan.cells))])  # a shard at a time, as a sweep
    for i in range(len(plan.cells)):
        writer.write(plan.index(i), one)
    writer.finish({"runs": "[]"})
    return len(plan.cells), t_plan


def raw_read(path: Path) -> int:
    n = 0
    for p in path.rglob("*"):
        if p.is_file():
            n += len(p.read_bytes())
    return n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--keep", default=None, help="make the stores in this directory and keep them")
    args = ap.parse_args()
    root = Path(args.keep or tempfile.mkdtemp(prefix="bench_verify_"))
    try:
        a, b = root / "crc.zarr", root / "plain.zarr"
        n, t_plan = make(a, True)
        make(b, False)
        size = raw_read(a)
        files = sum(1 for p in a.rglob("*") if p.is_file())
        print(f"{n} cells, {files} files, {size / 2**20:.0f} MiB; planning {n} cells took {t_plan:.1f} s "
              f"({1e3 * t_plan / n:.2f} ms/cell)")
        t_verify = best(lambda: integrity.verify(parse(a)))
        assert integrity.verify(parse(a)).clean
        done = np.ones((10, 100), bool)
        t_resume = best(lambda: integrity.recheck_done(parse(a), done, print))
        with stores.quiet_zarr():
            t_xr = best(lambda: xr.open_zarr(str(a)).load())
        t_raw = best(lambda: raw_read(a))
        t_plain = best(lambda: integrity.verify(parse(b)))
        print(f"verify (checksums)      : {t_verify:6.2f} s  ({1e3 * t_verify / n:.2f} ms/cell)")
        print(f"resume recheck          : {t_resume:6.2f} s")
        print(f"xarray load (baseline)  : {t_xr:6.2f} s  -> verify / xarray = {t_verify / t_xr:.2f}")
        print(f"raw bytes (floor)       : {t_raw:6.2f} s  -> verify / raw = {t_verify / t_raw:.2f}")
        print(f"verify, no checksums    : {t_plain:6.2f} s  (decodes every chunk; "
              f"{t_plain / t_verify:.1f}x the checksum path)")
    finally:
        if not args.keep:
            shutil.rmtree(root)


if __name__ == "__main__":
    main()
