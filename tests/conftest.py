"""Shared helpers for the pipeline tests: tiny cells, CLI subprocesses, store snapshots."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from sgdsweep import Landscape, build_landscape

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


@contextlib.contextmanager
def pipeline_session(*args: str, cwd: Path, env: dict[str, str] | None = None) -> Iterator[subprocess.Popen]:
    """``python -m pipeline ARGS`` started in its own session (text output piped; ``env``:
    the whole environment, default :data:`ENV`); on exit the session is killed, with whatever
    the process left running (the workers of a killed or stopped client)."""
    proc = subprocess.Popen(pipeline_cmd(*args), cwd=cwd, env=env or ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


def run_pipeline(*args: str, cwd: Path, timeout: float = 600,
                 env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``python -m pipeline ARGS`` as a real subprocess, output captured (``env`` adds variables)."""
    return subprocess.run(pipeline_cmd(*args), cwd=cwd, env={**ENV, **(env or {})}, capture_output=True,
                          text=True, timeout=timeout)


def run_main(*args: str, cwd: Path, env: dict[str, str] | None = None,
             unset: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """``python -m pipeline ARGS`` in this process: :func:`pipeline.cli.main.main` with ``cwd``
    as the working directory, ``env`` added to the environment (``unset`` taken out of it) and
    stdout/stderr captured —
    the code a subprocess runs, without a fresh interpreter's start-up (importing Python,
    Dask and Numba: ~8–10 s on the 2-core machine). A sweep's LocalCluster still starts real
    worker processes, which inherit ``env``. fsspec's cached file systems are dropped before
    and after, so that a URL store sees ``env``'s credentials as a new process would. Each
    feature keeps at least one real subprocess test (:func:`run_pipeline`)."""
    from pipeline.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    saved_env, saved_cwd = dict(os.environ), os.getcwd()
    _drop_cached_filesystems()
    # Numba reads NUMBA_NUM_THREADS again at every compile and refuses a value other than the
    # one its thread pool started with: this process keeps its own (the cluster's worker
    # processes get theirs from pipeline.cluster.local.WORKER_ENV, not from here).
    os.environ.update({k: v for k, v in (env or {}).items() if k != "NUMBA_NUM_THREADS"})
    for name in unset:
        os.environ.pop(name, None)
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(list(args))
    finally:
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
        _drop_cached_filesystems()
    return subprocess.CompletedProcess(["pipeline", *args], code, out.getvalue(), err.getvalue())


def _drop_cached_filesystems() -> None:
    import fsspec

    for cls in list(fsspec.registry.values()):  # the file system classes imported so far
        cls.clear_instance_cache()


def snapshot(path: Path) -> dict[str, tuple[str, int]]:
    """Every file under ``path``: content hash and mtime (to prove a store untouched)."""
    out = {}
    for p in sorted(Path(path).rglob("*")):
        if p.is_file():
            out[str(p.relative_to(path))] = (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
    return out


def store_files(path: Path) -> dict[str, bytes]:
    """Every file of a local store by its path inside the store: the bytes."""
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(Path(path).rglob("*")) if p.is_file()}


#: The store attrs that tell one run of a config from another: when, its command line and
#: resolved config (they name the store and the cluster), the runs' record.
RUN_ATTRS = ("created", "command_line", "config", "runs", "last_run_finished")


def same_bytes(files: dict[str, bytes]) -> dict[str, bytes]:
    """``files`` (:func:`store_files`) as two sweeps of one config write them alike: without
    each cell's wall time (``runtime``) and the :data:`RUN_ATTRS` of the root and the run record
    (their documents otherwise compared, canonical JSON)."""
    out = {}
    for key, data in files.items():
        if key.startswith("runtime/c/"):
            continue
        if key in ("zarr.json", "run_record/zarr.json"):
            doc = json.loads(data)
            meta = doc.get("consolidated_metadata", {}).get("metadata", {})
            for attrs in (doc.get("attributes", {}), meta.get("run_record", {}).get("attributes", {})):
                for name in RUN_ATTRS:
                    attrs.pop(name, None)
            data = json.dumps(doc, sort_keys=True).encode()
        out[key] = data
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


@pytest.fixture(scope="session")
def workers_reference_store(tmp_path_factory) -> Path:
    """An uninterrupted SMALL_GRID sweep, ``store_writer=workers`` (a shard per cell): what
    every sweep of that config writes, byte for byte (:func:`same_bytes`). In this process."""
    cwd = tmp_path_factory.mktemp("workers-reference")
    res = run_main("sweep", *TINY, *SMALL_GRID, "store_writer=workers", "cluster.n_workers=2",
                   "cluster.dashboard_address=null", "store=ref.zarr", cwd=cwd)
    assert res.returncode == 0, res.stdout + res.stderr
    return cwd / "ref.zarr"


def _in_worker() -> bool:
    from distributed import get_worker

    try:
        get_worker()
    except ValueError:  # not in a worker: validation in the client
        return False
    return True


class WorkerFailingLandscape(Landscape):
    """A landscape whose evaluation raises inside a Dask worker — like code or data that
    only the submitting machine has. Validation and the store layout (in the client) work."""

    def evaluate(self, points):
        if _in_worker():
            raise RuntimeError(f"landscape data unavailable on this worker (fail={self.params['fail']})")
        return super().evaluate(points)


#: In a worker's environment: a :class:`WorkerFailingWhileSetLandscape` fails there.
FAIL_ON_WORKERS_ENV = "SGDSWEEP_TEST_FAIL_ON_WORKERS"


class WorkerFailingWhileSetLandscape(WorkerFailingLandscape):
    """:class:`WorkerFailingLandscape` while :data:`FAIL_ON_WORKERS_ENV` is set in the worker's
    environment, the plain landscape otherwise: a fault that goes away, the config unchanged."""

    def evaluate(self, points):
        if os.environ.get(FAIL_ON_WORKERS_ENV):
            return super().evaluate(points)
        return Landscape.evaluate(self, points)


class WorkerKillingLandscape(Landscape):
    """A landscape whose evaluation SIGKILLs the Dask worker process running it (every
    attempt: a cell that brings its worker down)."""

    def evaluate(self, points):
        if _in_worker():
            os.kill(os.getpid(), signal.SIGKILL)
        return super().evaluate(points)


def _with_params(cls: type[Landscape], land: Landscape, **params) -> Landscape:
    return cls(**{**{f: getattr(land, f) for f in land.__dataclass_fields__},
                  "params": {**land.params, **params}})


def landscape_failing_on_workers(fail: int = 0, **spec):
    """A ``landscape._target_`` builder: the landscape ``spec`` (e.g. the seed model), which
    fails to evaluate inside a worker when ``fail`` is set (the parsed cell, landscape
    included, is what the workers get: the failure must come from running it there)."""
    land = build_landscape(spec)
    return _with_params(WorkerFailingLandscape, land, fail=fail) if fail else land


def landscape_killing_its_worker(kill: int = 0, **spec):
    """A ``landscape._target_`` builder: the landscape ``spec``, which kills the worker that
    evaluates it when ``kill`` is set."""
    land = build_landscape(spec)
    return _with_params(WorkerKillingLandscape, land, kill=kill) if kill else land


def landscape_failing_while_set(fail: int = 0, **spec):
    """A ``landscape._target_`` builder: :func:`landscape_failing_on_workers`, failing only while
    :data:`FAIL_ON_WORKERS_ENV` is set in the workers' environment."""
    land = build_landscape(spec)
    return _with_params(WorkerFailingWhileSetLandscape, land, fail=fail) if fail else land
