"""A 10⁵-cell store: planning, template and store creation, shard writes, status, verify.

Not a compute benchmark: the sweep's cells are planned and validated as ``sweep`` does
(``expand``: every cell parsed), the store is made as ``sweep`` makes it, and one real
cell's result is written into every cell with the pipeline's writer (a shard at a
time, as a sweep does), so the figures are the store's and the client's costs at
10⁵ cells. Then ``python -m pipeline status`` (and ``--verify``) on the store, as
subprocesses. Peak memory of this process (the client's part) is reported.

Usage: python benchmarks/bench_scale.py [--cells 100000]
"""

from __future__ import annotations

import argparse
import os
import resource
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", type=int, default=100_000)
    args = ap.parse_args()

    import sgdsweep
    from pipeline import store as stores
    from pipeline.config import compose, expand
    from pipeline.sweep import templates

    n = args.cells
    rows = 100
    seeds = ",".join(str(s) for s in range(n // rows))
    cfg = compose([*TINY, f"grid.lr={{start: 0.001, stop: 0.1, num: {rows}}}", f"grid.seed=[{seeds}]"])
    t = time.perf_counter()
    plan = expand(cfg)
    t_plan = time.perf_counter() - t
    print(f"plan             : {len(plan.cells)} cells planned and parsed in {t_plan:.1f} s "
          f"({1e3 * t_plan / len(plan.cells):.2f} ms/cell); peak RSS {rss_mib():.0f} MiB")
    t = time.perf_counter()
    cell = templates(plan)
    tmpl = stores.build_template(plan, cell, stores.provenance(plan, cell.attrs, ["bench"]))
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as tmp:
        path = Path(tmp) / "scale.zarr"
        stores.create(path, tmpl, replace=False)
        t_create = time.perf_counter() - t
        print(f"template + store : {t_create:.1f} s")
        one = sgdsweep.run_cell(plan.parsed[0])
        writer = stores.CellWriter(path, tmpl, [a.name for a in plan.axes])
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
        for cmd in (["status", str(path)], ["status", str(path), "--verify"]):
            t = time.perf_counter()
            res = subprocess.run([sys.executable, "-m", "pipeline", *cmd], capture_output=True, text=True,
                                 cwd=REPO)
            name = " ".join(cmd[:1] + cmd[2:])
            print(f"{name:17s}: {time.perf_counter() - t:.1f} s (exit {res.returncode}); "
                  + " | ".join(line for line in res.stdout.splitlines()[:3]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
