"""Orchestration overhead of ``python -m pipeline sweep``.

A sweep of N cells of about 1 s each (replicates of the seed model over
``grid.seed``) on a LocalCluster of W worker processes. Baseline, measured in the
same run: the sum of the cells' own runtimes (the store's ``runtime`` variable).

    parallel efficiency = Σ runtime / (W × wall time on the cluster)
    lost worker time per cell = (W × wall − Σ runtime) / N       [ms]
    store write per cell  (direct chunk writes, as the pipeline does)  [ms]
    store write per cell  with xarray ``to_zarr(region=…)``, for comparison  [ms]
    store layout: files per cell and write cost per cell, one file per cell and
                  variable (``shard_cells=1``, the layout before sharding) vs shards
                  of 1024 cells written a shard at a time (the default), same cells

``--tiny``: cells of ~10–20 ms (one method, 16 chains, no calibration), 10,000 by
default, with automatic batching (``cells_per_task`` unset).

Usage: python benchmarks/bench_pipeline.py [--cells 200] [--workers 2] [--cell-seconds 1.0]
       python benchmarks/bench_pipeline.py --tiny [--cells 10000]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Calibrate cells on one thread, as the workers run them.
os.environ.setdefault("NUMBA_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import xarray as xr

REPO = Path(__file__).resolve().parents[1]
CELL = ["time.t_end=2.0", "time.snapshots=5", "density_grid.cells=100", "methods=[sgd,sde,fp]"]
TINY = ["time.t_end=0.4", "time.snapshots=3", "density_grid.cells=60", "methods=[sgd]", "mc.chains=16"]


def calibrate_chains(target: float) -> int:
    """Chains giving a cell of about ``target`` seconds (one thread, after compiling)."""
    import sgdsweep
    from pipeline.config import compose, expand

    def seconds(chains: int) -> float:
        cell = expand(compose([*CELL, f"mc.chains={chains}", "grid.lr=[0.02]"])).cells[0]
        sgdsweep.run_cell(cell)  # compile / load the cache
        t = time.perf_counter()
        sgdsweep.run_cell(cell)
        return time.perf_counter() - t

    chains = 2000
    for _ in range(3):
        t = seconds(chains)
        chains = max(16, round(chains * target / t))
    return chains


def region_write_ms(store: Path, n: int = 20) -> tuple[float, float]:
    """Per-cell write time: direct chunk writes vs xarray region writes (same cells)."""
    from pipeline.store import store as stores
    from pipeline.store.location import parse

    ds = xr.open_zarr(str(store)).isel(seed=slice(0, n)).load()
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "copy.zarr"
        template = xr.open_zarr(str(store)).isel(seed=slice(0, n)).chunk({"seed": 1})
        template.attrs = {}
        for v in template.variables.values():  # the unsharded layout: a chunk file per cell
            v.encoding = {}
        with stores.quiet_zarr():
            template.to_zarr(str(copy), mode="w-", compute=False, zarr_format=3, consolidated=False)
        writer = stores.CellWriter(parse(copy), template, ["seed"])
        cells = [ds.isel(seed=i).drop_vars(["done", "error", "seed"]) for i in range(n)]
        t = time.perf_counter()
        for i, c in enumerate(cells):
            writer.write((i,), c)
        direct = (time.perf_counter() - t) / n
        drop = [v for v in ds.variables if "seed" not in ds[v].dims]
        t = time.perf_counter()
        with stores.quiet_zarr():
            for i in range(n):
                ds.isel(seed=[i]).drop_vars(drop).to_zarr(str(copy), region={"seed": slice(i, i + 1)},
                                                          mode="r+", consolidated=False)
        via_xarray = (time.perf_counter() - t) / n
    return 1e3 * direct, 1e3 * via_xarray


def layout_costs(store: Path, n: int, shard_cells: int) -> tuple[float, float]:
    """Write the first ``n`` cells of ``store`` into a new store of the given shard size
    with the pipeline's writer (every cell expected, as in a sweep): ms per cell
    (incl. the final flush and consolidation) and files per cell (every file of the store)."""
    from pipeline.store import integrity
    from pipeline.store import store as stores
    from pipeline.store.location import parse

    src = xr.open_zarr(str(store)).isel(seed=slice(0, n))
    ds = src.load()
    shard = stores.shard_shape((n,), shard_cells)[0]
    template = src.drop_vars([v for v in src.data_vars if "seed" not in src[v].dims]).chunk({"seed": shard})
    template.attrs = {"sweep_dims": ["seed"]}
    for v in template.data_vars.values():
        cell_shape = v.shape[1:]
        v.encoding = {"chunks": (1, *cell_shape)}
        if shard > 1:
            v.encoding["shards"] = (shard, *cell_shape)
    cells = [ds.isel(seed=i).drop_vars(["done", "error", "seed"]) for i in range(n)]
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "copy.zarr"
        with stores.quiet_zarr():
            integrity.with_checksums(template).to_zarr(str(copy), mode="w-", compute=False, zarr_format=3,
                                                       consolidated=False)
        writer = stores.CellWriter(parse(copy), template, ["seed"])
        writer.expect([(i,) for i in range(n)])
        t = time.perf_counter()
        for i, c in enumerate(cells):
            writer.write((i,), c)
        writer.finish({})
        ms = 1e3 * (time.perf_counter() - t) / n
        files = sum(1 for p in copy.rglob("*") if p.is_file())
        assert bool(xr.open_zarr(str(copy))["done"].all())
    return ms, files / n


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", type=int, default=None, help="200; 10,000 with --tiny")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--cell-seconds", type=float, default=1.0)
    ap.add_argument("--tiny", action="store_true", help="cells of ~10-20 ms, automatic batching")
    ap.add_argument("--store-writer", default="client", choices=["client", "workers"])
    ap.add_argument("--layout-cells", type=int, default=None, help="cells for the layout comparison")
    args = ap.parse_args()
    args.cells = args.cells or (10_000 if args.tiny else 200)

    if args.tiny:
        cell, chains = TINY, 16
    else:
        chains = calibrate_chains(args.cell_seconds)
        cell = [*CELL, f"mc.chains={chains}"]
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "bench.zarr"
        cmd = [sys.executable, "-m", "pipeline", "sweep", *cell, "~grid.lr",
               f"grid.seed=[{','.join(str(s) for s in range(args.cells))}]",
               f"cluster.n_workers={args.workers}", f"store={store}", f"store_writer={args.store_writer}"]
        env = {**os.environ, "NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
        t = time.perf_counter()
        res = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
        total_wall = time.perf_counter() - t
        if res.returncode != 0:
            sys.stderr.write(res.stdout + res.stderr)
            return 1
        cluster_wall = float(re.search(r"\(([\d.]+) s on the cluster", res.stdout).group(1))
        m = re.search(r"store write: ([\d.]+) ms per cell", res.stdout)
        write_ms_run = float(m.group(1)) if m else float("nan")  # nan: written by the workers
        ds = xr.open_zarr(str(store))
        runtime = ds["runtime"].values
        assert bool(ds["done"].all()), "not every cell finished"
        direct_ms, xarray_ms = region_write_ms(store)
        n_layout = min(args.cells, args.layout_cells or 1000)
        before_ms, before_files = layout_costs(store, n_layout, 1)
        after_ms, after_files = layout_costs(store, n_layout, 1024)
        run_files = sum(1 for p in store.rglob("*") if p.is_file())
        load_after = os.getloadavg()

    busy = float(runtime.sum())
    w, n = args.workers, args.cells
    print(f"machine          : {os.cpu_count()} cores ({cpu_model()}), shared; load average "
          f"{load_before[0]:.1f} before, {load_after[0]:.1f} after (1 min)")
    print(f"sweep            : {n} cells on {w} workers, mc.chains={chains},"
          f" store_writer={args.store_writer}")
    print(f"cell runtime     : mean {runtime.mean():.3f} s, min {runtime.min():.3f}, max {runtime.max():.3f},"
          f" sum {busy:.1f} s (baseline)")
    print(f"wall time        : {cluster_wall:.1f} s on the cluster, {total_wall:.1f} s end to end"
          " (incl. start-up, validation, store creation)")
    print(f"efficiency       : {busy / (w * cluster_wall):.1%} of the cluster phase,"
          f" {busy / (w * total_wall):.1%} end to end")
    print(f"lost worker time : {1e3 * (w * cluster_wall - busy) / n:.0f} ms per cell (scheduling, transfer,"
          " idle tail)")
    print(f"store write      : {write_ms_run:.1f} ms per cell in the run (client process, overlapped)")
    print(f"store write      : {direct_ms:.1f} ms per cell direct vs {xarray_ms:.1f} ms with "
          f"xarray to_zarr(region=…) (ratio {xarray_ms / direct_ms:.1f}x)")
    print(f"store files      : {run_files} files for {n} cells ({run_files / n:.3f} per cell)"
          " in the run's store")
    print(f"layout ({n_layout} cells): a file per cell: {before_ms:.2f} ms/cell, "
          f"{before_files:.2f} files/cell;"
          f" shards of 1024: {after_ms:.2f} ms/cell, {after_files:.3f} files/cell"
          f" ({before_ms / after_ms:.1f}x cheaper, {before_files / after_files:.0f}x fewer files)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
