"""Faults injected into real sweeps (real processes, real files): a client killed between a
cell's data and its ``done``, a full disk, a read-only store, corrupt chunks, a worker
killed on every attempt, and two sweeps on one store."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import zarr

from pipeline.run.faults import KILL_AFTER_WRITE_ENV, STOP_AFTER_FENCE_ENV, STOP_BEFORE_WRITE_ENV
from pipeline.store.lock import LOCK_NAME, STAGING
from tests.conftest import (
    ENV,
    REPO,
    SMALL_GRID,
    TINY,
    assert_same_numbers,
    free_port,
    open_store,
    pipeline_session,
    run_main,
    run_pipeline,
    same_bytes,
    snapshot,
    store_files,
)
from tests.test_integrity import chunk, flip_bit, truncate

pytestmark = pytest.mark.integration

ARGS = ["sweep", *TINY, *SMALL_GRID, "cluster.n_workers=2"]


def _run(*args: str, cwd: Path, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """A sweep process in its own session; whatever it leaves running (workers of a killed
    client) is killed with it."""
    with pipeline_session(*args, cwd=cwd, env=env) as proc:
        out, err = proc.communicate(timeout=timeout)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _flags(store: Path) -> np.ndarray:
    return np.asarray(zarr.open_group(str(store), mode="r")["done"][...], dtype=bool)


def _done(store: Path) -> int:
    try:
        return int(_flags(store).sum())
    except Exception:  # the template is still being written
        return 0


@pytest.mark.parametrize("shard_cells", [1, 4])
def test_client_killed_between_data_and_done(reference_store: Path, tmp_path: Path, shard_cells: int):
    """Killed after the data of a write (of a cell, or of the waiting cells of a shard
    of 4) and before its done flags: those cells are not done and are recomputed."""
    store = tmp_path / "k.zarr"
    kill_at = {1: "3", 4: "2"}[shard_cells]
    res = _run(*ARGS, f"shard_cells={shard_cells}", f"store={store.name}", cwd=tmp_path,
               env={**ENV, KILL_AFTER_WRITE_ENV: kill_at})
    assert res.returncode == -signal.SIGKILL, res.stdout + res.stderr
    done_before = int(_flags(store).sum())
    if shard_cells == 1:
        assert done_before == 2  # the third cell's data is written, its done flag is not
    else:  # the second write of 2 shards: the first shard's cells done, those of this one not
        assert 0 < done_before < 8
    assert json.loads((store / LOCK_NAME).read_text())["pid"] > 0  # left behind by the dead client

    again = run_main(*ARGS, f"store={store.name}", cwd=tmp_path)  # in this process
    assert again.returncode == 0, again.stdout + again.stderr
    assert re.search(r"lock: broke the stale lock of k\.zarr \(.*\): process \d+ no longer runs on this host",
                     again.stdout), again.stdout
    assert f"cells      : 8 total, {8 - done_before} computed now, {done_before} already done, 0 failed" \
        in again.stdout
    assert_same_numbers(open_store(store), open_store(reference_store))
    assert not (store / LOCK_NAME).exists()


def test_corrupt_cell_is_listed_reported_and_recomputed(reference_store: Path, tmp_path: Path):
    store = tmp_path / "c.zarr"
    shutil.copytree(reference_store, store)
    truncate(chunk(store, "density", (1, 0, 1)), 100)  # the truncated chunk
    flip_bit(chunk(store, "basin_mass", (0, 1, 0)))

    # status and report in this process; the rerun as a real subprocess
    status = run_main("status", store.name, "--verify", cwd=tmp_path)
    assert status.returncode == 1
    assert "2 corrupt cell(s)" in status.stdout
    assert "corrupt : lr=0.01, batch_size=2, seed=0: unreadable chunk of basin_mass" in status.stdout
    assert "corrupt : lr=0.02, batch_size=1, seed=1: unreadable chunk of density" in status.stdout

    report = run_main("report", store.name, cwd=tmp_path)
    assert report.returncode == 0 and "Traceback" not in report.stderr, report.stderr
    assert "warning: corrupt cell lr=0.02, batch_size=1, seed=1: unreadable chunk of density" in report.stderr

    again = run_pipeline(*ARGS, f"store={store.name}", cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "verify: 2 done cell(s) with corrupt or missing chunks will be recomputed" in again.stdout
    assert "cells      : 8 total, 2 computed now, 6 already done, 0 failed" in again.stdout
    assert_same_numbers(open_store(store), open_store(reference_store))
    assert "0 corrupt cell(s)" in run_main("status", store.name, "--verify", cwd=tmp_path).stdout


def test_no_space_left_then_rerun_with_space(reference_store: Path, tmp_path: Path):
    """A size-limited tmpfs (a real full file system): the write fails, a rerun after
    growing it completes the store identically."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=400k", "tmpfs", str(mnt)],
                      capture_output=True).returncode:
        pytest.skip("mounting a tmpfs needs root")
    try:
        store = mnt / "s.zarr"
        # A file per cell and variable, as the 400 kB were sized for (a sharded store of 8 tiny
        # cells fits in them).
        res = _run(*ARGS, "shard_cells=1", f"store={store}", cwd=tmp_path)
        assert res.returncode == 3, res.stdout + res.stderr
        last = res.stderr.strip().splitlines()[-1]
        assert re.fullmatch(rf"error: store: cannot write .* to {store}: No space left on device; the "
                            r"cells written so far are kept, rerun the same command once the problem "
                            r"is fixed", last)
        assert "Traceback" not in res.stderr
        assert _flags(store).sum() < 8
        subprocess.run(["mount", "-o", "remount,size=64m", str(mnt)], check=True)
        again = run_main(*ARGS, "shard_cells=1", f"store={store}", cwd=tmp_path)  # in this process
        assert again.returncode == 0, again.stdout + again.stderr
        assert_same_numbers(open_store(store), open_store(reference_store))
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=True)


def test_read_only_store_is_refused_before_computing(reference_store: Path, tmp_path: Path):
    """A read-only bind mount (as root, file permissions are not enforced)."""
    src, ro = tmp_path / "src", tmp_path / "ro"
    src.mkdir()
    ro.mkdir()
    shutil.copytree(reference_store, src / "s.zarr")
    zarr.open_group(str(src / "s.zarr"), mode="r+")["done"][1, 1, 1] = False  # one cell left to do
    if subprocess.run(["mount", "--bind", "-o", "ro", str(src), str(ro)], capture_output=True).returncode:
        pytest.skip("read-only bind mounts need root")
    try:
        before = snapshot(ro / "s.zarr")
        res = run_main(*ARGS, f"store={ro / 's.zarr'}", cwd=tmp_path)  # in this process
        assert res.returncode == 2
        assert res.stderr == f"error: store: {ro / 's.zarr'} is not writable\n"
        assert res.stdout == ""  # no cluster, nothing computed
        assert snapshot(ro / "s.zarr") == before
    finally:
        subprocess.run(["umount", str(ro)], check=True)


def test_worker_killed_on_every_attempt(tmp_path: Path):
    args = ["sweep", *TINY, "+landscape._target_=tests.conftest.landscape_killing_its_worker",
            "+landscape.kill=0", "grid.lr=[0.02]", "grid.kill=[0,1]", "retries=1", "cluster.n_workers=2",
            "store=w.zarr"]
    env = {**ENV, "PYTHONPATH": str(REPO), "DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "1"}
    res = _run(*args, cwd=tmp_path, env=env)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "cells      : 2 total, 1 computed now, 0 already done, 1 failed" in res.stdout
    ds = open_store(tmp_path / "w.zarr")
    np.testing.assert_array_equal(ds["done"].values, [[True, False]])
    reason = str(ds["error"].values[0, 1])
    assert reason.startswith("KilledWorker: "), reason
    assert f"lr=0.02, kill=1: {reason}" in res.stdout
    assert np.isnan(ds["density"].sel(kill=1).values).all()


def test_a_second_sweep_on_the_same_store_is_refused(reference_store: Path, tmp_path: Path):
    store = tmp_path / "two.zarr"
    args = ["sweep", *TINY, *SMALL_GRID, "cluster.n_workers=1", f"store={store.name}"]
    with pipeline_session(*args, cwd=tmp_path) as first:
        deadline = time.monotonic() + 120
        while not (store / LOCK_NAME).exists():
            assert first.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        second = run_main(*args, cwd=tmp_path)  # in this process, while the first process runs
        out, err = first.communicate(timeout=600)
    assert second.returncode == 2 and second.stdout == ""
    assert second.stderr.count("\n") == 1
    assert second.stderr.startswith("error: store: two.zarr is in use by another sweep (host ")
    assert f", pid {first.pid}, started " in second.stderr
    assert first.returncode == 0, out + err
    runs = json.loads(open_store(store).attrs["runs"])
    assert len(runs) == 1 and runs[0]["computed"] == 8
    assert_same_numbers(open_store(store), open_store(reference_store))


@pytest.mark.parametrize("writer", ["client", "workers"])
def test_sigterm_releases_the_lock_and_the_rerun_resumes(reference_store: Path, tmp_path: Path, writer: str):
    """scancel or a batch time limit sends SIGTERM: the sweep stops like Ctrl-C. Each run's
    record counts the cells it made durable, not the ones it was given."""
    store = tmp_path / "t.zarr"
    args = ["sweep", *TINY, *SMALL_GRID, "cluster.n_workers=1", f"store={store.name}",
            f"store_writer={writer}", "shard_cells=1"]  # cells durable one by one
    with pipeline_session(*args, cwd=tmp_path) as proc:
        deadline = time.monotonic() + 300
        while _done(store) < 1:
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, out + err
    assert "interrupted; t.zarr holds the cells finished so far" in out
    assert not (store / LOCK_NAME).exists()
    runs = json.loads(zarr.open_group(str(store), mode="r").attrs["runs"])
    done = _done(store)
    assert 1 <= done < 8, "the sweep finished before it could be interrupted"
    assert len(runs) == 1 and (runs[0]["computed"], runs[0]["failed"]) == (done, 0), runs
    again = run_main(*args, cwd=tmp_path)  # in this process
    assert again.returncode == 0 and "lock:" not in again.stdout, again.stdout + again.stderr
    assert_same_numbers(open_store(store), open_store(reference_store))
    runs = json.loads(zarr.open_group(str(store), mode="r").attrs["runs"])
    assert [(r["computed"], r["failed"]) for r in runs] == [(done, 0), (8 - done, 0)], runs


#: A worker's shard task run as its own process (the function Dask runs, on config ARGS[1]'s
#: first shard), fenced by the run token ARGS[3].
_ZOMBIE = """
import json, sys
from pipeline.config import compose, expand
from pipeline.run.writers import write_cells
from pipeline.store.location import parse
plan = expand(compose(json.loads(sys.argv[2])))
print(write_cells(parse(sys.argv[1]), [a.name for a in plan.axes],
                  [(0, plan.index(0), plan.parsed[0])], sys.argv[3]))
"""


def _stopped(pid: int) -> bool:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T"


def test_a_writer_that_outlives_its_run_writes_nothing(tmp_path: Path):
    """A worker frozen mid-task (SIGSTOP) while its sweep ends and a new sweep, of another
    config, replaces the store (overwrite=true): when it wakes (SIGCONT) its shard write is
    refused — the store's lock no longer carries its run's token — and the new store is
    byte for byte what its own sweep wrote. Unfenced, the old task wrote its cell (config A's
    numbers, marked done) into the new store."""
    from pipeline.store import lock as locks
    from pipeline.store.location import parse

    store = tmp_path / "z.zarr"
    old = [*TINY, "grid.lr=[0.01,0.02]", "grid.seed=[0,1]", "store_writer=workers"]
    new = [*TINY, "grid.lr=[0.03,0.04]", "grid.seed=[0,1]", "store_writer=workers"]
    first = run_main("sweep", *old, "cluster.n_workers=1", f"store={store.name}", cwd=tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    held = locks.acquire(parse(store), command="the old run, as its worker saw it")
    zombie = subprocess.Popen([sys.executable, "-c", _ZOMBIE, str(store), json.dumps(old),
                               held.info["token"]], cwd=tmp_path, env={**ENV, STOP_BEFORE_WRITE_ENV: "1"},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not _stopped(zombie.pid):  # computed its cell, about to write
            assert zombie.poll() is None and time.monotonic() < deadline, zombie.communicate()
            time.sleep(0.05)
        held.release()  # the old run ends
        second = run_main("sweep", *new, "cluster.n_workers=1", f"store={store.name}", "overwrite=true",
                          cwd=tmp_path)
        assert second.returncode == 0, second.stdout + second.stderr
        before = snapshot(store)
        zombie.send_signal(signal.SIGCONT)
        out, err = zombie.communicate(timeout=120)
    finally:
        zombie.kill()
    assert zombie.returncode != 0 and "no longer holds the store's lock; nothing written" in err, out + err
    assert snapshot(store) == before
    lr = open_store(store)["lr"].values.tolist()
    assert lr == [0.03, 0.04]


def test_a_client_whose_lock_was_taken_writes_nothing_more(tmp_path: Path):
    """The sweep's own process frozen (SIGSTOP, by the test hook: right before its first cell
    write) — past the stale-lock age, say — while another sweep breaks its lock and takes the
    store; woken (SIGCONT), it writes no cell, run record or metadata (every file but the lock
    unchanged, bytes and mtime), leaves the other's lock in place, and ends with an
    ``error: store: …`` line, exit 3. Unfenced, it wrote all its cells and its run record
    into the store the other sweep held (exit 0)."""
    from pipeline.store import lock as locks
    from pipeline.store.location import parse

    store = tmp_path / "c.zarr"
    args = ["sweep", *TINY, "grid.lr=[0.01,0.02]", "grid.batch_size=[1,2]", "grid.seed=[0,1,2,3,4,5,6,7]",
            "cluster.n_workers=1", "shard_cells=1", "cells_per_task=1", f"store={store.name}"]
    other = None
    with pipeline_session(*args, cwd=tmp_path, env={**ENV, STOP_BEFORE_WRITE_ENV: "1"}) as proc:
        deadline = time.monotonic() + 300
        while not _stopped(proc.pid):  # its first cell computed, about to write it
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.05)
        (store / LOCK_NAME).unlink()  # as a sweep that judged the lock stale breaks it
        other = locks.acquire(parse(store), command="another sweep")
        unlocked = {k: v for k, v in snapshot(store).items() if not k.startswith(LOCK_NAME)}
        time.sleep(0.05)  # mtimes: a later write would show
        proc.send_signal(signal.SIGCONT)
        out, err = proc.communicate(timeout=120)
    try:
        assert proc.returncode == 3, out + err
        last = err.strip().splitlines()[-1]
        assert last.startswith("error: store: ") and "this sweep no longer holds the store's lock; " \
            "nothing written" in last, err
        assert {k: v for k, v in snapshot(store).items() if not k.startswith(LOCK_NAME)} == unlocked
        assert _done(store) == 0
        assert locks.read(parse(store))["token"] == other.info["token"]
    finally:
        other.release()


#: How the zombie of :func:`late_write_after_the_fence` ends once woken: it finishes (its
#: check once staged refuses, its staged files removed), or dies right after staging its
#: data (SIGKILL: its staged files stay, unused, until the next run removes them).
ENDINGS = {"refused": {}, "killed": {KILL_AFTER_WRITE_ENV: "1"}}


def late_write_after_the_fence(tmp_path: Path, store: str, env: dict, opts: dict,
                               files: Callable[[], dict], ending: str) -> None:
    """Issue 21, item 4: a worker's shard task whose fence check passed, frozen (SIGSTOP)
    before its data write while its run ends and a new sweep of another config takes the
    store (overwrite=true); woken (SIGCONT), it writes. ``files`` (every file of the store:
    bytes or stamps) outside ``.staging/`` must be unchanged, whatever the zombie wrote
    landing under ``.staging/<its run's token>/`` only; the next run (the new config's,
    nothing left to do) removes that, leaving the store as the new sweep wrote it."""
    from pipeline.store import lock as locks
    from pipeline.store.location import parse

    old = [*TINY, "grid.lr=[0.01,0.02]", "grid.seed=[0,1]", "store_writer=workers"]
    new = [*TINY, "grid.lr=[0.03,0.04]", "grid.seed=[0,1]", "store_writer=workers", "cluster.n_workers=1",
           f"store={store}"]
    first = run_main("sweep", *old, "cluster.n_workers=1", f"store={store}", cwd=tmp_path, env=env)
    assert first.returncode == 0, first.stdout + first.stderr
    held = locks.acquire(parse(store, opts), command="the old run, as its worker saw it")
    token = held.info["token"]
    zombie = subprocess.Popen([sys.executable, "-c", _ZOMBIE, store, json.dumps(old), token], cwd=tmp_path,
                              env={**env, STOP_AFTER_FENCE_ENV: "1", **ENDINGS[ending]},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not _stopped(zombie.pid):  # its fence check passed: about to write its shard
            assert zombie.poll() is None and time.monotonic() < deadline, zombie.communicate()
            time.sleep(0.05)
        held.release()  # the old run ends
        second = run_main("sweep", *new, "overwrite=true", cwd=tmp_path, env=env)
        assert second.returncode == 0, second.stdout + second.stderr
        before = files()
        time.sleep(1.1)  # S3's LastModified: one-second resolution
        zombie.send_signal(signal.SIGCONT)
        out, err = zombie.communicate(timeout=120)
    finally:
        zombie.kill()
    after = files()
    late = after.keys() - before.keys()
    live = {k: v for k, v in after.items() if not k.startswith(f"{STAGING}/")}
    assert live == before, sorted(k for k in live.keys() | before.keys() if live.get(k) != before.get(k))
    if ending == "refused":
        refused = "no longer holds the store's lock; nothing written"
        assert zombie.returncode != 0 and refused in err, out + err
        assert not late  # its staged files removed again
    else:
        assert zombie.returncode == -signal.SIGKILL, out + err
        assert late and all(k.startswith(f"{STAGING}/{token}/") for k in late), sorted(late)
        assert any("/mean~c~" in k for k in late), sorted(late)  # the late write happened, staged
    status = run_main("status", store, "--verify", cwd=tmp_path, env=env)
    assert status.returncode == 0, status.stdout + status.stderr
    assert "cells   : 4/4 done, 0 failed, 0 pending" in status.stdout and "0 corrupt cell(s)" in status.stdout
    again = run_main("sweep", *new, cwd=tmp_path, env=env)
    assert again.returncode == 0 and "4 already done" in again.stdout, again.stdout + again.stderr
    assert not {k for k in files() if k.startswith(f"{STAGING}/")}


@pytest.mark.parametrize("ending", sorted(ENDINGS))
def test_a_writer_frozen_after_its_fence_check_cannot_write_into_the_live_store(tmp_path: Path, ending: str):
    """:func:`late_write_after_the_fence` on a local store: every file outside ``.staging/``
    byte for byte and to the nanosecond mtime what the new sweep wrote. Without the staging
    (the shard written into place after the check) the zombie's shard — config A's numbers,
    marked done — replaced the new store's."""
    store = tmp_path / "z.zarr"
    late_write_after_the_fence(tmp_path, str(store), ENV, {}, lambda: snapshot(store), ending)
    assert open_store(store)["lr"].values.tolist() == [0.03, 0.04]


@contextlib.contextmanager
def address_cluster(tmp_path: Path, env: dict, workers: list[dict[str, str]]) -> Iterator[tuple[str, list]]:
    """A real ``dask scheduler`` whose workers must heartbeat within 5 s (its worker TTL of 1 s,
    which distributed raises to 10 heartbeat intervals of 0.5 s) and ``dask worker --no-nanny``
    processes of one thread, one per mapping of ``workers`` (variables added to ``env``; an
    empty list: none yet, see :func:`start_worker`). Yields the address and the worker
    processes once every worker is registered; logs in ``tmp_path/{scheduler,worker-N}.log``."""
    from distributed import Client

    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    with open(tmp_path / "scheduler.log", "w") as log:
        scheduler = subprocess.Popen(["dask", "scheduler", "--host", "127.0.0.1", "--port", str(port),
                                      "--dashboard-address", "127.0.0.1:0"], cwd=tmp_path,
                                     env={**env, "DASK_DISTRIBUTED__SCHEDULER__WORKER_TTL": "1s"},
                                     stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    procs: list[subprocess.Popen] = []
    try:
        for extra in workers:
            procs.append(start_worker(tmp_path, address, {**env, **extra}, len(procs)))
        with Client(address, timeout=60) as client:
            client.wait_for_workers(len(workers), timeout=60)
        yield address, procs
    finally:
        for p in [scheduler, *procs]:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait()


def start_worker(tmp_path: Path, address: str, env: dict, n: int) -> subprocess.Popen:
    """A ``dask worker --no-nanny`` process of one thread for ``address`` (``tmp_path/worker-N.log``)."""
    with open(tmp_path / f"worker-{n}.log", "w") as log:
        return subprocess.Popen(["dask", "worker", address, "--no-nanny", "--nthreads", "1", "--host",
                                 "127.0.0.1", "--dashboard-address", "127.0.0.1:0"], env=env, cwd=tmp_path,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def frozen_worker_rerun(tmp_path: Path, store: str, env: dict, files: Callable[[], dict[str, bytes]],
                        stamps: Callable[[], dict], reference: Path, settle: float = 0.0) -> None:
    """A worker frozen (SIGSTOP, before its first shard write) past the scheduler's worker TTL:
    the scheduler removes it and reruns its task on the other worker, the sweep completes
    (exit 0) and releases the store's lock while the frozen worker still holds its task.
    SIGCONT then: the late write is refused by the fence (said in the worker's log), no file
    (``stamps``: content and modification time) changes, and the store (``files``) is byte for
    byte a clean sweep's (``reference``). ``settle``: seconds between taking the stamps and the
    SIGCONT (a time stamp's resolution)."""
    args = ["sweep", *TINY, *SMALL_GRID, "store_writer=workers", "cluster=address"]
    with address_cluster(tmp_path, env, [{}, {STOP_BEFORE_WRITE_ENV: "1"}]) as (address, (_, frozen)):
        res = run_main(*args, f"cluster.address={address}", f"store={store}", cwd=tmp_path, env=env)
        assert res.returncode == 0, res.stdout + res.stderr
        assert "cells      : 8 total, 8 computed now, 0 already done, 0 failed" in res.stdout
        assert _stopped(frozen.pid)  # the sweep finished without it: its task was rerun elsewhere
        scheduler = (tmp_path / "scheduler.log").read_text()
        worker = re.search(r"Start worker at:\s+(\S+)", (tmp_path / "worker-1.log").read_text())[1]
        removed = rf"Worker failed to heartbeat for \d+s; removing: <WorkerState '{worker}'"
        assert re.search(removed, scheduler), scheduler
        assert not files().keys() & {LOCK_NAME}  # released: the late write's fence must refuse
        before = stamps()
        time.sleep(settle)
        frozen.send_signal(signal.SIGCONT)
        refused = "the run that submitted this task no longer holds the store's lock; nothing written"
        deadline = time.monotonic() + 60
        while refused not in (log := (tmp_path / "worker-1.log").read_text()):  # logged instead of writing
            assert time.monotonic() < deadline, log
            time.sleep(0.05)
    assert stamps() == before
    assert same_bytes(files()) == same_bytes(store_files(reference))


@pytest.mark.timeout(300)  # the sweep runs in this process: a hang fails here
def test_a_worker_frozen_past_the_scheduler_ttl_is_rerun_and_its_late_write_refused(
        workers_reference_store: Path, tmp_path: Path):
    """Issue 21: a worker stopped (SIGSTOP) before its shard write, past the scheduler's
    timeout; its task is rerun elsewhere and the sweep completes; woken (SIGCONT) once the sweep
    released the store, its write is refused and the store equals a clean sweep's, byte for
    byte (:func:`frozen_worker_rerun`); ``status --verify`` is clean."""
    store = tmp_path / "f.zarr"
    frozen_worker_rerun(tmp_path, store.name, ENV, lambda: store_files(store), lambda: snapshot(store),
                        workers_reference_store)
    res = run_main("status", store.name, "--verify", cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "cells   : 8/8 done, 0 failed, 0 pending" in res.stdout and "0 corrupt cell(s)" in res.stdout
