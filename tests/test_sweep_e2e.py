"""End to end: ``python -m pipeline sweep`` as a user runs it, on real Dask clusters.

All runs share one small grid (TINY cells of the seed model, lr × batch_size × seed)
and are compared with one uninterrupted 2-worker run, bit for bit.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

from tests.conftest import (
    ENV,
    REPO,
    SMALL_GRID,
    TINY,
    assert_same_numbers,
    free_port,
    open_store,
    pipeline_cmd,
    run_main,
    run_pipeline,
)

pytestmark = pytest.mark.integration


def test_store_complete_and_normalised(reference_store: Path):
    ds = open_store(reference_store)
    assert ds["done"].all()
    assert (ds["error"] == "").all()
    np.testing.assert_array_equal(ds["lr"].values, [0.01, 0.02])
    np.testing.assert_array_equal(ds["batch_size"].values, [1, 2])
    np.testing.assert_array_equal(ds["seed"].values, [0, 1])
    assert ds["density"].dims[:3] == ("lr", "batch_size", "seed")
    # Density grid: 60 cells on the seed model's [-0.8, 3.2] (conf/domain/seed_two_point.yaml), centres.
    dx = 4.0 / 60
    np.testing.assert_allclose(ds["x"].values, -0.8 + dx * (np.arange(60) + 0.5), rtol=0, atol=1e-12)
    np.testing.assert_allclose(ds["t"].values, [0.0, 0.2, 0.4], rtol=0, atol=1e-12)
    assert list(ds["method"].values) == ["sgd", "sde", "fp"]
    # Every density integrates to the mass still on the grid.
    mass = ds["density"].sum("x") * dx
    np.testing.assert_allclose(mass, 1.0 - ds["lost_fraction"], rtol=0, atol=1e-9)
    assert (ds["runtime"] > 0).all()
    # Chunks: one cell per chunk along the sweep axes, whole along the cell's own dims.
    arr = zarr.open_group(str(reference_store), mode="r")["density"]
    assert arr.chunks == (1, 1, 1, 3, 3, 60)
    assert "config_hash" in ds.attrs and "lr:" in ds.attrs["config"]


def test_one_worker_gives_identical_store(reference_store: Path, tmp_path: Path):
    # in this process: its LocalCluster's one worker process is as real as the reference's two
    res = run_main("sweep", *TINY, *SMALL_GRID, "cluster.n_workers=1", "store=one.zarr", cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert_same_numbers(open_store(tmp_path / "one.zarr"), open_store(reference_store))


def _done_count(path: Path) -> int:
    try:
        return int(np.asarray(zarr.open_group(str(path), mode="r")["done"][...]).sum())
    except Exception:  # the template is still being written
        return 0


@pytest.mark.parametrize("writer", ["client", "workers"])
def test_kill_and_resume_gives_identical_store(reference_store: Path, tmp_path: Path, writer: str):
    """SIGKILL of the client and its workers once a cell is done; shards of 2 cells (a
    single shard would be written only once complete)."""
    store = tmp_path / "resumed.zarr"
    args = ["sweep", *TINY, *SMALL_GRID, "cluster.n_workers=2", f"store={store.name}", "shard_cells=2",
            f"store_writer={writer}"]
    proc = subprocess.Popen(pipeline_cmd(*args), cwd=tmp_path, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while _done_count(store) < 1:
            assert proc.poll() is None, "the sweep finished before it could be interrupted"
            assert time.monotonic() < deadline
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the client and its LocalCluster workers
        proc.wait()
    done_before = _done_count(store)
    assert 1 <= done_before < 8

    res = run_pipeline(*args, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    m = re.search(r"cells\s*: 8 total, (\d+) computed now, (\d+) already done, 0 failed", res.stdout)
    assert m, res.stdout
    assert int(m.group(2)) >= done_before  # cells finished while being killed count too
    assert int(m.group(1)) == 8 - int(m.group(2)) < 8
    assert_same_numbers(open_store(store), open_store(reference_store))

    # Once complete, the same command (in this process) computes nothing.
    again = run_main(*args, cwd=tmp_path)
    assert again.returncode == 0 and "0 computed now, 8 already done" in again.stdout


def test_workers_write_their_shards_and_survive_a_killed_worker(reference_store: Path, tmp_path: Path):
    """store_writer=workers: each task writes its shard; a worker SIGKILLed mid-sweep
    (its task rerun elsewhere, the shard rewritten whole) still gives the reference store."""
    import psutil

    store = tmp_path / "w.zarr"
    args = ["sweep", *TINY, *SMALL_GRID, "cluster.n_workers=2", f"store={store.name}", "store_writer=workers"]
    proc = subprocess.Popen(pipeline_cmd(*args), cwd=tmp_path, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True, text=True)
    killed = None
    try:
        deadline = time.monotonic() + 300
        while _done_count(store) < 1:
            assert proc.poll() is None, "the sweep finished before a worker could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.02)
        workers = [c for c in psutil.Process(proc.pid).children(recursive=True)
                   if "multiprocessing" in " ".join(c.cmdline())
                   and "resource_tracker" not in " ".join(c.cmdline())]
        assert workers, "no worker process found"
        killed = workers[0].pid
        os.kill(killed, signal.SIGKILL)
        out, _ = proc.communicate(timeout=300)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert proc.returncode == 0, out
    assert "cells      : 8 total, 8 computed now, 0 already done, 0 failed" in out
    assert_same_numbers(open_store(store), open_store(reference_store))
    # One task per shard: 8 cells -> "shards" of one cell, i.e. no sharding (>= 16 tasks asked for).
    assert zarr.open_group(str(store), mode="r")["density"].shards is None


def test_address_cluster_of_real_processes(reference_store: Path, tmp_path: Path):
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    procs = [subprocess.Popen(["dask", "scheduler", "--host", "127.0.0.1", "--port", str(port),
                               "--dashboard-address", "127.0.0.1:0"], env=ENV, cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)]
    try:
        for _ in range(2):
            procs.append(subprocess.Popen(["dask", "worker", address, "--nthreads", "1", "--nworkers", "1",
                                           "--host", "127.0.0.1", "--dashboard-address", "127.0.0.1:0"],
                                          env=ENV, cwd=tmp_path, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL, start_new_session=True))
        # Cells batched three to a task (8 cells: tasks of 3, 3, 2) change nothing in the numbers.
        res = run_pipeline("sweep", *TINY, *SMALL_GRID, "cluster=address", f"cluster.address={address}",
                           "cells_per_task=3", "store=addr.zarr", cwd=tmp_path)
        assert res.returncode == 0, res.stdout + res.stderr
        assert f"scheduler {address}" in res.stdout
        assert_same_numbers(open_store(tmp_path / "addr.zarr"), open_store(reference_store))
    finally:
        for p in procs:
            os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()



def test_failing_cell_is_recorded_and_the_sweep_goes_on(tmp_path: Path):
    args = ["sweep", *TINY, "+landscape._target_=tests.conftest.landscape_failing_on_workers",
            "+landscape.fail=0", "grid.lr=[0.02]", "grid.fail=[0,1]", "retries=1", "cluster.n_workers=2",
            "store=f.zarr"]
    env = {**ENV, "PYTHONPATH": str(REPO)}  # workers import the builder from tests/
    res = subprocess.run(pipeline_cmd(*args), cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "cells      : 2 total, 1 computed now, 0 already done, 1 failed" in res.stdout
    # The landscape is built in the client (workers get the parsed cell); it fails where it runs.
    reason = "RuntimeError: landscape data unavailable on this worker (fail=1)"
    assert f"fail=1: {reason}" in res.stdout
    ds = open_store(tmp_path / "f.zarr")
    np.testing.assert_array_equal(ds["done"].values, [[True, False]])
    assert ds["error"].values[0, 1] == reason
    assert np.isnan(ds["density"].sel(fail=1).values).all()
    np.testing.assert_allclose(ds["density"].sel(fail=0).sum("x") * ds.attrs["dx"],
                               1 - ds["lost_fraction"].sel(fail=0), rtol=0, atol=1e-9)

    # status and the rerun in this process (the same entry point; the rerun's LocalCluster
    # has real worker processes, which import the builder from tests/ as well).
    status = run_main("status", "f.zarr", cwd=tmp_path)
    assert status.returncode == 1
    assert "1/2 done, 1 failed, 0 pending" in status.stdout
    assert f"lr=0.02, fail=1: {reason}" in status.stdout

    # A rerun retries only the failed cell.
    again = run_main(*args, cwd=tmp_path, env={"PYTHONPATH": str(REPO)})
    assert again.returncode == 1, again.stdout + again.stderr
    assert "cells      : 2 total, 0 computed now, 1 already done, 1 failed" in again.stdout
