"""A sweep store on object storage (``s3://``) against the same store in a local directory.

The S3 server is moto's (``python -m moto.server``, a separate process on a loopback
port: real HTTP, no network latency — a cloud bucket adds ~10–50 ms per request).
Baseline, measured in the same run: the local directory on this machine's disk.

1. Write cost per cell, in process (the pipeline's ``CellWriter``, the same 200 real
   tiny cells, no cluster): a shard at a time (the sweep's default: every cell of a
   shard buffered, then one PUT per variable), and the per-cell layout
   (``shard_cells=1``: one object per cell and variable).
2. End to end: ``python -m pipeline sweep`` of the same 200 cells on a LocalCluster
   of 2 workers, client writes and worker writes, local vs S3: cells/s over the
   cluster phase, the client's store write per cell, and the CPU seconds the moto
   server itself spent (it shares this machine's cores with the sweep; a real S3
   does not).

Usage: python benchmarks/bench_store_url.py [--cells 200] [--workers 2] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("NUMBA_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import xarray as xr

REPO = Path(__file__).resolve().parents[1]
TINY = ["time.t_end=0.4", "time.snapshots=3", "density_grid.cells=60", "methods=[sgd]", "mc.chains=16"]
BUCKET = "bench"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server() -> tuple[subprocess.Popen, dict[str, str]]:
    """moto's S3 server on a free port, with one bucket; the environment that reaches it."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "bench",
           "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"}
    os.environ.update(env)
    import s3fs

    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    for _ in range(300):
        try:
            fs.call_s3("create_bucket", Bucket=BUCKET)
            return proc, env
        except Exception:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("moto server did not start")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def grid(cells: int) -> list[str]:
    lrs = 10 if cells % 10 == 0 else 1
    return [f"grid.lr=[{','.join(f'{0.005 + 0.002 * i:g}' for i in range(lrs))}]",
            f"grid.seed=[{','.join(str(s) for s in range(cells // lrs))}]"]


def sweep(store: str, cells: int, workers: int, extra: list[str], env: dict[str, str], cwd: Path) -> dict:
    cmd = [sys.executable, "-m", "pipeline", "sweep", *TINY, *grid(cells), f"store={store}", "overwrite=true",
           f"cluster.n_workers={workers}", "cluster.dashboard_address=null", *extra]
    t = time.perf_counter()
    res = subprocess.run(cmd, cwd=cwd, env={**os.environ, **env}, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if res.returncode:
        raise RuntimeError(res.stdout[-2000:] + res.stderr[-2000:])
    m = re.search(r"\(([\d.]+) s on the cluster; ([\d.]+) cells/s", res.stdout)
    w = re.search(r"store write: ([\d.]+) ms per cell", res.stdout)
    return {"wall": wall, "cluster": float(m.group(1)), "rate": float(m.group(2)),
            "write_ms": float(w.group(1)) if w else float("nan")}


def write_costs(source: Path, target: str, shard_cells: int, buffered: bool) -> tuple[float, int]:
    """ms per cell to write every cell of the finished store ``source`` into a new store at
    ``target`` (a path or URL) with the pipeline's writer, metadata consolidation included;
    and the number of files (objects) of the new store."""
    from pipeline.store import integrity, location
    from pipeline.store import store as stores

    src = xr.open_zarr(str(source))
    ds = src.load()
    dims = list(src.attrs["sweep_dims"])
    shape = tuple(src.sizes[d] for d in dims)
    shard = stores.shard_shape(shape, shard_cells)
    template = src.drop_vars([v for v in src.data_vars if src[v].dims[:len(dims)] != tuple(dims)])
    template = template.chunk(dict(zip(dims, shard, strict=True)))
    template.attrs = {"sweep_dims": dims}
    for v in template.data_vars.values():
        cell_shape = v.shape[len(dims):]
        v.encoding = {"chunks": (1,) * len(dims) + cell_shape}
        if shard != (1,) * len(dims):
            v.encoding["shards"] = shard + cell_shape
    loc = location.parse(target)
    if loc.exists():
        loc.clear(keep=lambda name: False)
    with stores.quiet_zarr():
        integrity.with_checksums(template).to_zarr(loc.zarr_store, mode="w", compute=False, zarr_format=3,
                                                   consolidated=False)
    writer = stores.CellWriter(loc, template, dims, buffer=buffered)
    index = [tuple(int(i) for i in idx) for idx in np.ndindex(*shape)]
    cells = [ds.isel(dict(zip(dims, idx, strict=True))).drop_vars(["done", "error", *dims]) for idx in index]
    writer.expect(index)
    t = time.perf_counter()
    for idx, c in zip(index, cells, strict=True):
        writer.write(idx, c)
    writer.finish({})
    ms = 1e3 * (time.perf_counter() - t) / len(cells)
    files = sum(1 for _ in loc.files(""))
    with stores.quiet_zarr():
        assert bool(xr.open_zarr(loc.zarr_store)["done"].all())
    return ms, files


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", type=int, default=200)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3, help="in-process write measurements: best of")
    args = ap.parse_args()
    print(f"machine: {cpu_model()}, {os.cpu_count()} cores; load average {os.getloadavg()[0]:.1f}")
    server, env = start_server()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            cwd = Path(tmp)
            print(f"\nend to end: {args.cells} tiny cells, {args.workers} workers (cells/s over the cluster "
                  "phase; client store write per cell)")
            print(f"{'writer':8} {'store':6} {'cells/s':>8} {'cluster s':>9} {'write ms/cell':>13} "
                  f"{'server CPU s':>12}")
            source = None
            for writer in ("client", "workers"):
                for where in ("local", "s3"):
                    store = str(cwd / f"{writer}.zarr") if where == "local" else f"s3://{BUCKET}/{writer}.zarr"
                    c0 = cpu_seconds(server.pid)
                    r = sweep(store, args.cells, args.workers, [f"store_writer={writer}"], env, cwd)
                    print(f"{writer:8} {where:6} {r['rate']:8.1f} {r['cluster']:9.1f} {r['write_ms']:13.1f} "
                          f"{cpu_seconds(server.pid) - c0:12.1f}", flush=True)
                    if where == "local" and writer == "client":
                        source = Path(store)
            print(f"\nin process: the {args.cells} cells written by CellWriter (best of {args.repeat}; "
                  "ms per cell, files/objects of the store)")
            print(f"{'layout':34} {'local ms':>9} {'S3 ms':>8} {'S3/local':>9} {'files':>6}")
            for label, shard_cells, buffered in (("shards, a shard at a time (sweep)", 1024, True),
                                                 ("a file per cell and variable", 1, True)):
                best = {}
                for where in ("local", "s3"):
                    target = str(cwd / "w.zarr") if where == "local" else f"s3://{BUCKET}/w.zarr"
                    runs = [write_costs(source, target, shard_cells, buffered) for _ in range(args.repeat)]
                    best[where] = min(r[0] for r in runs), runs[0][1]
                ratio = best["s3"][0] / best["local"][0]
                print(f"{label:34} {best['local'][0]:9.2f} {best['s3'][0]:8.2f} {ratio:9.1f} "
                      f"{best['s3'][1]:6d}", flush=True)
    finally:
        server.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
