"""Workers writing their own shards (``store_writer=workers``): end-to-end throughput, local
directory and S3 (moto's server), and what the staged write costs per shard on S3.

1. End to end: ``python -m pipeline sweep`` of ``--cells`` tiny cells on a LocalCluster of
   ``--workers`` workers, ``store_writer=workers``, into a local directory and into
   ``s3://bench/…`` (cells/s over the cluster phase, best of ``--repeat``). Run it once with
   ``PYTHONPATH`` at the code before a change and once after to compare. ``--keep DIR``
   copies the local store there (for ``benchmarks/compare_stores.py``).
2. ``--shards``: per shard of 34 objects (one per variable; the sizes of a 13-cell shard),
   on moto: the direct write (34 concurrent PUTs, as a worker wrote before staging) against
   the staged one (34 concurrent PUTs under ``.staging/``, then the client's 34 concurrent
   server-side copies into place and one batch delete), and the same on a local directory
   (tmp file + rename, then a rename into place). ``--repeat 0`` skips part 1.

Usage: python benchmarks/bench_fence.py [--cells 200] [--workers 2] [--repeat 2] [--keep DIR] [--shards N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_store_url import BUCKET, cpu_model, cpu_seconds, start_server, sweep

#: Bytes of the 34 shard objects of a 13-cell shard of the tiny benchmark cells (roughly).
SIZES = [40_000] * 8 + [4_000] * 24 + [200, 100]


def shard_costs(loc, n: int, staged_key) -> tuple[float, float]:
    """Seconds per shard: a direct write of the 34 objects, and a staged one moved into place."""
    payload = [(f"v{k}/c/{{}}/0", os.urandom(size)) for k, size in enumerate(SIZES)]
    t = time.perf_counter()
    for s in range(n):
        loc.write_many((key.format(s), data) for key, data in payload)
    direct = (time.perf_counter() - t) / n
    t = time.perf_counter()
    for s in range(n):
        stage = f".staging/bench/{s}"
        loc.write_many((staged_key(f"{stage}/0", key.format(s)), data) for key, data in payload)
        loc.move_many([[(staged_key(f"{stage}/0", key.format(s)), key.format(s)) for key, _ in payload]])
        if loc.local_path is not None:
            loc.remove_tree(stage)
    staged = (time.perf_counter() - t) / n
    return direct, staged


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", type=int, default=200)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--keep", type=Path, default=None)
    ap.add_argument("--shards", type=int, default=0, help="also time N shard writes direct vs staged")
    args = ap.parse_args()
    print(f"machine: {cpu_model()}, {os.cpu_count()} cores; load average {os.getloadavg()[0]:.1f}")
    server, env = start_server()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            cwd = Path(tmp)
            if args.repeat:
                print(f"\nend to end, store_writer=workers: {args.cells} tiny cells, {args.workers} workers")
                print(f"{'store':6} {'cells/s (each run)':>24} {'best':>6} {'server CPU s':>12}")
            for where in ("local", "s3") if args.repeat else ():
                store = str(cwd / "w.zarr") if where == "local" else f"s3://{BUCKET}/w.zarr"
                rates, c0 = [], cpu_seconds(server.pid)
                for _ in range(args.repeat):
                    r = sweep(store, args.cells, args.workers, ["store_writer=workers"], env, cwd)
                    rates.append(r["rate"])
                cpu = (cpu_seconds(server.pid) - c0) / args.repeat
                print(f"{where:6} {'; '.join(f'{r:.1f}' for r in rates):>24} {max(rates):6.1f} {cpu:12.1f}",
                      flush=True)
                if where == "local" and args.keep:
                    shutil.rmtree(args.keep, ignore_errors=True)
                    shutil.copytree(store, args.keep)
            if args.shards:
                from pipeline.store import location
                from pipeline.store.store import staged_key

                print(f"\nper shard of {len(SIZES)} objects ({sum(SIZES) // 1000} kB), mean of {args.shards}")
                print(f"{'store':6} {'direct ms':>10} {'staged ms':>10} {'extra ms':>9}")
                for where in ("local", "s3"):
                    loc = location.parse(str(cwd / "s.zarr") if where == "local" else f"s3://{BUCKET}/s.zarr")
                    loc.make_dir()
                    direct, staged = shard_costs(loc, args.shards, staged_key)
                    extra = 1e3 * (staged - direct)
                    print(f"{where:6} {1e3 * direct:10.1f} {1e3 * staged:10.1f} {extra:9.1f}", flush=True)
    finally:
        server.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
