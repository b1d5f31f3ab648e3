"""One sweep per store: the lock file, its holder, stale locks, unwritable stores
(real files and real processes, in process)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from pipeline.store import lock as locks
from pipeline.store.location import parse
from sgdsweep.errors import ConfigError


def _write_lock(store, **info) -> None:
    store.mkdir(exist_ok=True)
    base = {"host": socket.gethostname(), "pid": os.getpid(), "started": "2026-01-01T00:00:00+00:00",
            "heartbeat": time.time(), "command": "sweep", "token": "t" * 32}
    (store / locks.LOCK_NAME).write_text(json.dumps({**base, **info}))


def test_acquire_records_the_holder_and_release_removes_it(tmp_path):
    store = tmp_path / "s.zarr"
    held = locks.acquire(parse(store), command="sweep lr=[1]")
    try:
        info = json.loads((store / locks.LOCK_NAME).read_text())
        assert info["host"] == socket.gethostname() and info["pid"] == os.getpid()
        assert info["command"] == "sweep lr=[1]" and abs(info["heartbeat"] - time.time()) < 60
        assert locks.read(parse(store))["token"] == held.info["token"]
    finally:
        held.release()
    assert not store.exists()  # created for the lock only: nothing left behind


def test_a_second_sweep_is_refused_naming_the_holder(tmp_path):
    store = tmp_path / "s.zarr"
    held = locks.acquire(parse(store))
    try:
        with pytest.raises(ConfigError) as err:
            locks.acquire(parse(store))
        msg = str(err.value)
        assert msg.startswith(f"store: {store} is in use by another sweep (host {socket.gethostname()}, "
                              f"pid {os.getpid()}, started ")
        assert "\n" not in msg and f"remove {store / locks.LOCK_NAME}" in msg
        assert locks.read(parse(store))["token"] == held.info["token"]  # untouched by the refusal
    finally:
        held.release()


def test_heartbeat_refreshes_the_lock(tmp_path, monkeypatch):
    monkeypatch.setattr(locks, "HEARTBEAT_S", 0.05)
    store = tmp_path / "s.zarr"
    held = locks.acquire(parse(store))
    try:
        first = locks.read(parse(store))["heartbeat"]
        deadline = time.monotonic() + 10
        while locks.read(parse(store))["heartbeat"] == first:
            assert time.monotonic() < deadline, "no heartbeat"
            time.sleep(0.02)
        assert locks.read(parse(store))["token"] == held.info["token"]
    finally:
        held.release()


def test_lock_of_a_dead_process_on_this_host_is_broken(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    pid = int(dead.stdout)
    store = tmp_path / "s.zarr"
    _write_lock(store, pid=pid)
    said: list[str] = []
    held = locks.acquire(parse(store), say=said.append)
    try:
        assert said == [f"lock: broke the stale lock of {store} (host {socket.gethostname()}, pid {pid}, "
                        f"started 2026-01-01T00:00:00+00:00, last heartbeat 0 s ago): process {pid} "
                        "no longer runs on this host"]
        assert locks.read(parse(store))["pid"] == os.getpid()
        assert sorted(p.name for p in store.iterdir()) == [locks.LOCK_NAME]  # the broken one is gone
    finally:
        held.release()


def _age_lock_file(store, seconds: float) -> None:
    """Set the lock file's modification time ``seconds`` into the past: what the store's clock
    says of a lock nobody rewrote since."""
    past = time.time() - seconds
    os.utime(store / locks.LOCK_NAME, (past, past))


def test_lock_without_heartbeat_is_broken_on_any_host(tmp_path):
    store = tmp_path / "s.zarr"
    _write_lock(store, host="node-elsewhere", pid=1, heartbeat=time.time() - locks.STALE_AFTER_S - 5)
    _age_lock_file(store, locks.STALE_AFTER_S + 5)
    said: list[str] = []
    locks.acquire(parse(store), say=said.append).release()
    assert len(said) == 1 and said[0].endswith(
        f"by the store's clock (stale after {locks.STALE_AFTER_S:.0f} s)"), said
    # A live heartbeat from another host is respected, whatever its pid.
    _write_lock(store, host="node-elsewhere", pid=1, heartbeat=time.time() - 5)
    with pytest.raises(ConfigError, match="is in use by another sweep \\(host node-elsewhere, pid 1,"):
        locks.acquire(parse(store))


def test_the_lock_age_is_the_stores_not_the_hosts(tmp_path):
    """Hosts whose clocks disagree: a holder whose clock runs an hour slow writes heartbeats
    that read an hour old; the file was written just now by the store's clock, so the lock
    is live. And a holder whose clock runs ahead cannot keep a lock alive that nobody has
    rewritten for longer than STALE_AFTER_S."""
    store = tmp_path / "s.zarr"
    _write_lock(store, host="node-slow-clock", pid=1, heartbeat=time.time() - 3600)
    with pytest.raises(ConfigError, match=r"host node-slow-clock, pid 1, .*last heartbeat 0 s ago"):
        locks.acquire(parse(store))
    assert locks.read(parse(store))["host"] == "node-slow-clock"  # not broken
    _write_lock(store, host="node-fast-clock", pid=1, heartbeat=time.time() + 3600)
    _age_lock_file(store, locks.STALE_AFTER_S + 60)
    said: list[str] = []
    locks.acquire(parse(store), say=said.append).release()
    assert len(said) == 1 and "node-fast-clock" in said[0] and "by the store's clock" in said[0], said
    assert list(store.iterdir()) == []  # released, and no probe left behind


def test_read_only_store_is_refused(tmp_path):
    """A read-only bind mount (root ignores file permissions): refused when taking the lock."""
    src, ro = tmp_path / "src", tmp_path / "ro"
    (src / "s.zarr").mkdir(parents=True)
    ro.mkdir()
    if subprocess.run(["mount", "--bind", "-o", "ro", str(src), str(ro)], capture_output=True).returncode:
        pytest.skip("read-only bind mounts need root")
    try:
        with pytest.raises(ConfigError, match=r"^store: cannot write to .*: Read-only file system "
                                              r"\(creating its lock file \.sweep\.lock\)$"):
            locks.acquire(parse(ro / "s.zarr"))
    finally:
        subprocess.run(["umount", str(ro)], check=True)


def test_a_lock_taken_over_is_not_overwritten_by_the_heartbeat(tmp_path, monkeypatch):
    monkeypatch.setattr(locks, "HEARTBEAT_S", 0.05)
    store = tmp_path / "s.zarr"
    held = locks.acquire(parse(store))
    try:
        _write_lock(store, host="node-elsewhere", token="x" * 32)
        deadline = time.monotonic() + 10
        while not held.lost:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        time.sleep(0.2)
        assert locks.read(parse(store))["token"] == "x" * 32
    finally:
        held.release()
    assert locks.read(parse(store))["token"] == "x" * 32  # release removes only its own lock


def test_a_store_being_created_is_in_use_not_foreign(tmp_path):
    """The window between a sweep taking its lock and writing its metadata: a second sweep
    meets a live lock beside a half-written group and must say "in use", touching nothing."""
    from tests.conftest import TINY, run_main

    store = tmp_path / "s.zarr"
    _write_lock(store)  # this test process: alive, on this host
    (store / "zarr.json").write_text('{"zarr_format": 3, "node_type": "group", "attributes": {}}')
    before = {p.name: p.read_bytes() for p in store.iterdir()}
    result = run_main("sweep", *TINY, f"store={store.name}", cwd=tmp_path)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith(f"error: store: {store.name} is in use by another sweep (host ")
    assert result.stderr.count("\n") == 1
    assert {p.name: p.read_bytes() for p in store.iterdir()} == before
