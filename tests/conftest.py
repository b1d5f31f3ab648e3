"""Shared helpers for the pipeline tests: tiny cells, CLI subprocesses, store snapshots."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

REPO = Path(__file__).resolve().parent.parent

#: Overrides that make a cell take a fraction of a second (after compilation).
TINY = ["mc.chains=64", "time.t_end=0.4", "time.snapshots=3", "density_grid.cells=60",
        "methods=[sgd,sde,fp]"]
#: The small sweep the integration tests share: 2 x 3 cells of the seed model.
SMALL_GRID = ["grid.lr=[0.01,0.02]", "grid.batch_size=[1,2]", "grid.seed=[0,1]"]
#: Workers and this process: one thread each (2 cores shared by everything).
ENV = {**os.environ, "NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def pipeline_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "pipeline", *args]


def run_pipeline(*args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    """``python -m pipeline ARGS`` as a real subprocess, output captured."""
    return subprocess.run(pipeline_cmd(*args), cwd=cwd, env=ENV, capture_output=True, text=True,
                          timeout=timeout)


def snapshot(path: Path) -> dict[str, tuple[str, int]]:
    """Every file under ``path``: content hash and mtime (to prove a store untouched)."""
    out = {}
    for p in sorted(Path(path).rglob("*")):
        if p.is_file():
            out[str(p.relative_to(path))] = (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def open_store(path: Path) -> xr.Dataset:
    """Plain xarray, as a user would open it."""
    return xr.open_zarr(str(path)).load()


def assert_same_numbers(a: xr.Dataset, b: xr.Dataset) -> None:
    """Bit-identical results (runtime excepted: it is wall time)."""
    assert set(a.data_vars) == set(b.data_vars)
    for name in a.data_vars:
        if name == "runtime":
            continue
        np.testing.assert_array_equal(a[name].values, b[name].values, err_msg=name)
    for name in a.coords:
        np.testing.assert_array_equal(a[name].values, b[name].values, err_msg=name)


@pytest.fixture(scope="session")
def reference_store(tmp_path_factory) -> Path:
    """An uninterrupted SMALL_GRID sweep on a LocalCluster of 2 worker processes."""
    cwd = tmp_path_factory.mktemp("reference")
    res = run_pipeline("sweep", *TINY, *SMALL_GRID, "cluster.n_workers=2", "store=ref.zarr", cwd=cwd)
    assert res.returncode == 0, res.stdout + res.stderr
    return cwd / "ref.zarr"


def landscape_failing_on_workers(fail: int = 0, **spec):
    """A ``landscape._target_`` builder that works where the sweep is validated but
    raises inside a Dask worker when ``fail`` is set — like data or code that only
    the submitting machine has. The landscape itself is ``spec`` (e.g. the seed model)."""
    from distributed import get_worker

    from sgdsweep import build_landscape

    if fail:
        try:
            get_worker()
        except ValueError:  # not in a worker: validation in the client
            pass
        else:
            raise RuntimeError(f"landscape data unavailable on this worker (fail={fail})")
    return build_landscape(spec)


def landscape_killing_its_worker(kill: int = 0, **spec):
    """A ``landscape._target_`` builder that SIGKILLs the Dask worker process running it
    when ``kill`` is set (every attempt: a cell that brings its worker down)."""
    import signal

    from distributed import get_worker

    from sgdsweep import build_landscape

    if kill:
        try:
            get_worker()
        except ValueError:  # validation in the client
            pass
        else:
            os.kill(os.getpid(), signal.SIGKILL)
    return build_landscape(spec)
