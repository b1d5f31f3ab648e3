"""A 10⁵-cell store: planning, template and store creation, shard writes, status, verify.

Not a compute benchmark: the sweep's cells are planned and validated as ``sweep`` does
(``expand``: every cell parsed), the store is made as ``sweep`` makes it, and one real
cell's result is written into every cell with the pipeline's writer (a shard at a
time, as a sweep does), so the figures are the store's and the client's costs at
10⁵ cells. Then ``python -m pipeline status`` (and ``--verify``) on the store, as
subprocesses. Peak memory of this process (the client's part) is reported.

``--sweep``: the same grid run for real, end to end, as a user runs it: ``python -m
pipeline sweep`` on a LocalCluster of 2 workers, the workers writing their shards,
cells of ~10–20 ms batched automatically (``cells_per_task`` unset). The client's
resident memory is sampled every 2 s; the sweep is SIGKILLed (client, scheduler and
workers) once ``--kill-at`` of the cells are done, then resumed with the same
command; then ``status``, ``status --verify`` and ``report`` on the store, and a
sample of cells recomputed in this process with ``run_cell`` and compared bit for bit.

Usage: python benchmarks/bench_scale.py [--cells 100000]
       python benchmarks/bench_scale.py --sweep [--cells 100000] [--kill-at 0.4] [--keep DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("NUMBA_NUM_THREADS", "1")

REPO = Path(__file__).resolve().parents[1]
TINY = ["time.t_end=0.4", "time.snapshots=3", "density_grid.cells=60", "methods=[sgd]", "mc.chains=16"]


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def grid(n: int, rows: int = 100) -> list[str]:
    """``n`` cells: ``rows`` learning rates x ``n // rows`` seeds."""
    seeds = ",".join(str(s) for s in range(n // rows))
    return [f"grid.lr={{start: 0.001, stop: 0.1, num: {rows}}}", f"grid.seed=[{seeds}]"]


def done_count(store: Path) -> int:
    import numpy as np
    import zarr
    try:
        return int(np.asarray(zarr.open_group(str(store), mode="r")["done"][...]).sum())
    except Exception:  # not created yet
        return 0


def run_watched(cmd: list[str], store: Path, kill_at: int | None) -> dict:
    """Run ``cmd`` in its own session, sampling the client's RSS (MiB) every 2 s; SIGKILL
    the whole session once ``kill_at`` cells are done. Returns samples and output."""
    import psutil

    log = store.with_suffix(f".{int(time.time())}.log")
    with open(log, "w") as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=store.parent, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        client = psutil.Process(proc.pid)
        samples: list[tuple[float, float, int]] = []  # (s, RSS MiB, cells done)
        killed = False
        while proc.poll() is None:
            time.sleep(2.0)
            try:
                rss = client.memory_info().rss / 2**20
            except psutil.NoSuchProcess:
                break
            done = done_count(store)
            samples.append((time.perf_counter() - t0, rss, done))
            if kill_at is not None and done >= kill_at:
                os.killpg(proc.pid, signal.SIGKILL)
                killed = True
                break
        proc.wait()
        wall = time.perf_counter() - t0
    return {"samples": samples, "wall": wall, "killed": killed, "rc": proc.returncode,
            "out": log.read_text()}


def rss_summary(samples: list[tuple[float, float, int]]) -> str:
    """RSS when computing started, at each fifth of the run, and the max."""
    running = [s for s in samples if s[2] > 0] or samples
    picks = [running[round(f * (len(running) - 1))] for f in (0, 0.25, 0.5, 0.75, 1)]
    return (", ".join(f"{r:.0f} MiB @ {d} done" for _, r, d in picks)
            + f"; max {max(s[1] for s in samples):.0f} MiB")


def sweep_main(args: argparse.Namespace) -> int:
    import numpy as np
    import xarray as xr

    import sgdsweep
    from pipeline.config import compose, expand

    n = args.cells
    tmp = Path(args.keep or tempfile.mkdtemp(dir=os.environ.get("BENCH_DIR")))
    tmp.mkdir(parents=True, exist_ok=True)
    store = tmp / "sweep1e5.zarr"
    overrides = [*TINY, *grid(n), "cluster.n_workers=2", "store_writer=workers", f"store={store.name}"]
    cmd = [sys.executable, "-m", "pipeline", "sweep", *overrides]
    shown = [o if not o.startswith("grid.seed=") else f"grid.seed=[0,...,{n // 100 - 1}]" for o in overrides]
    print(f"sweep            : {n} cells, {' '.join(shown)}")

    first = run_watched(cmd, store, kill_at=int(args.kill_at * n))
    killed_at = done_count(store)
    print(f"first run        : SIGKILLed after {first['wall']:.0f} s with {killed_at} cells done; client RSS "
          f"{rss_summary(first['samples'])}")
    setup = [s for s in first["samples"] if s[2] == 0]
    print(f"  to first cell  : {setup[-1][0] if setup else 0:.0f} s (plan, template, store, cluster)")

    second = run_watched(cmd, store, kill_at=None)
    tail = "\n".join(line for line in second["out"].splitlines() if ":" in line and "[" not in line)
    print(f"resumed run      : exit {second['rc']}, {second['wall']:.0f} s; client RSS "
          f"{rss_summary(second['samples'])}")
    print("\n".join(f"  {line}" for line in tail.splitlines()))
    for cmd2 in (["status", store.name], ["status", store.name, "--verify"], ["report", store.name]):
        t = time.perf_counter()
        res = subprocess.run([sys.executable, "-m", "pipeline", *cmd2], capture_output=True, text=True,
                             cwd=tmp)
        name = " ".join(cmd2[:1] + cmd2[2:])
        print(f"{name:17s}: {time.perf_counter() - t:.1f} s (exit {res.returncode}); "
              + " | ".join(line for line in (res.stdout + res.stderr).splitlines()[:2]))
    files = sum(1 for p in store.rglob("*") if p.is_file())
    size = sum(p.stat().st_size for p in store.rglob("*") if p.is_file())
    print(f"store            : {files} files ({files / n:.4f} per cell), {size / 2**20:.0f} MiB")

    # Bit for bit against cells recomputed here, spread over the first and the resumed run.
    plan = expand(compose([*TINY, *grid(n)]))
    ds = xr.open_zarr(store)
    dims = [a.name for a in plan.axes]
    rng = np.random.default_rng(0)
    sample = sorted(rng.choice(n, size=args.check, replace=False).tolist())
    mismatched = 0
    for flat in sample:
        mine = sgdsweep.run_cell(plan.parsed[flat])
        stored = ds.isel(dict(zip(dims, plan.index(flat), strict=True)))
        for name, var in mine.data_vars.items():
            if name == "runtime":
                continue
            a = np.asarray(var.transpose(*stored[name].dims).values)
            b = np.asarray(stored[name].values)
            if not np.array_equal(a, b, equal_nan=True):
                mismatched += 1
                print(f"  MISMATCH cell {flat} variable {name}")
                break
    print(f"bit for bit      : {len(sample) - mismatched}/{len(sample)} sampled cells equal run_cell "
          "in this process")
    return 0 if second["rc"] == 0 and mismatched == 0 else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", type=int, default=100_000)
    ap.add_argument("--sweep", action="store_true", help="run the sweep end to end (kill, resume)")
    ap.add_argument("--kill-at", type=float, default=0.4, help="fraction of cells done at the SIGKILL")
    ap.add_argument("--check", type=int, default=200, help="cells recomputed and compared (--sweep)")
    ap.add_argument("--keep", default=None, help="directory for the store (kept); default a temporary one")
    ap.add_argument("--plain-cell-bytes", type=int, default=None,
                    help="store numeric cells up to this size uncompressed (0: every cell compressed, "
                         "the layout before 2026-12-03); default the pipeline's")
    args = ap.parse_args()
    if args.sweep:
        return sweep_main(args)

    import sgdsweep
    from pipeline.config import compose, expand
    from pipeline.run.sweep import templates
    from pipeline.store import store as stores
    from pipeline.store.location import parse

    n = args.cells
    cfg = compose([*TINY, *grid(n)])
    t = time.perf_counter()
    plan = expand(cfg)
    t_plan = time.perf_counter() - t
    print(f"plan             : {len(plan.cells)} cells planned and parsed in {t_plan:.1f} s "
          f"({1e3 * t_plan / len(plan.cells):.2f} ms/cell); peak RSS {rss_mib():.0f} MiB")
    t = time.perf_counter()
    cell = templates(plan)
    layout = {} if args.plain_cell_bytes is None else {"plain_cell_bytes": args.plain_cell_bytes}
    tmpl = stores.build_template(plan, cell, stores.provenance(plan, cell.attrs, ["bench"]), **layout)
    with contextlib.ExitStack() as stack:
        if args.keep:
            tmp = args.keep
            Path(tmp).mkdir(parents=True, exist_ok=True)
        else:
            tmp = stack.enter_context(tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")))
        path = Path(tmp) / "scale.zarr"
        stores.create(parse(path), tmpl, replace=False)
        t_create = time.perf_counter() - t
        print(f"template + store : {t_create:.1f} s")
        one = sgdsweep.run_cell(plan.parsed[0])
        writer = stores.CellWriter(parse(path), tmpl, [a.name for a in plan.axes])
        writer.expect([plan.index(i) for i in range(len(plan.cells))])
        t = time.perf_counter()
        rss = []
        for i in range(len(plan.cells)):
            writer.write(plan.index(i), one)
            if i % 10_000 == 0:
                rss.append(rss_mib())
        writer.finish({"runs": "[]"})
        t_write = time.perf_counter() - t
        files = sum(1 for p in path.rglob("*") if p.is_file())
        size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
        print(f"writes           : {1e3 * t_write / n:.2f} ms/cell ({t_write:.1f} s); {files} files "
              f"({files / n:.4f} per cell), {size / 2**20:.0f} MiB; peak RSS every 10⁴ cells "
              f"{', '.join(f'{r:.0f}' for r in rss)} MiB")
        for cmd in (["status", str(path)], ["status", str(path), "--verify"],
                    ["report", str(path), "--out", str(Path(tmp) / "report")]):
            t = time.perf_counter()
            res = subprocess.run([sys.executable, "-m", "pipeline", *cmd], capture_output=True, text=True,
                                 cwd=REPO)
            name = " ".join(c for c in cmd[:1] + cmd[2:] if c.startswith("-") or c == cmd[0])
            print(f"{name:17s}: {time.perf_counter() - t:.1f} s wall, a fresh process "
                  f"(exit {res.returncode}); "
                  + " | ".join(line for line in res.stdout.splitlines()[:2]))
        probe = ("import time, sys; t = time.perf_counter(); from sgdsweep import open_sweep; "
                 "t1 = time.perf_counter(); ds = open_sweep(sys.argv[1]); t2 = time.perf_counter(); "
                 "ds.escape_time_mle.values; t3 = time.perf_counter(); "
                 "print(f'{t1 - t:.1f} {t2 - t1:.2f} {t3 - t2:.2f}')")
        res = subprocess.run([sys.executable, "-c", probe, str(path)], capture_output=True, text=True,
                             cwd=REPO, check=True)
        imp, opened, one = res.stdout.split()
        print(f"open_sweep       : {opened} s (imports {imp} s before it), then one per-cell scalar "
              f"of every cell read in {one} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
