"""One sweep process per store: a lock file in the store, held for the whole run.

``STORE/.sweep.lock`` is created with ``O_CREAT | O_EXCL`` — atomic on local
file systems, on NFS v3 and later (the server does the exclusive create) and on
Lustre and GPFS — and holds JSON: host, pid, start time, command line, a random
token, and a heartbeat (Unix time) that a daemon thread refreshes every
:data:`HEARTBEAT_S` seconds. No ``flock``/``fcntl`` locks are used (NFS lacks or
emulates them). A second sweep finding the file refuses with one line naming
the holder. The lock is stale, and is broken with a message, when

* its host is this host and its pid no longer runs, or
* its heartbeat is older than :data:`STALE_AFTER_S` seconds (a dead node, or a
  process hung for that long). This compares the holder's clock with ours:
  hosts sharing a store need clocks agreeing to well under that (NTP).

Breaking renames the file to a name of our own first (``rename`` is atomic on
all of these file systems) and checks it renamed the stale lock it judged, so
two processes breaking the same stale lock cannot both go on.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime as dt
import json
import os
import secrets
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sgdsweep.errors import ConfigError

LOCK_NAME = ".sweep.lock"
#: Seconds between heartbeats of a running sweep.
HEARTBEAT_S = 30.0
#: A lock whose heartbeat is older than this (seconds) is stale, on any host.
STALE_AFTER_S = 600.0

_HELD: list[Lock] = []


def lock_path(store: str | Path) -> Path:
    return Path(store) / LOCK_NAME


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def read(store: str | Path) -> dict[str, Any] | None:
    """The holder recorded in the store's lock file, or None when there is none."""
    try:
        text = lock_path(store).read_text()
    except FileNotFoundError:
        return None
    try:
        info = json.loads(text)
    except json.JSONDecodeError:
        info = None
    if not isinstance(info, dict):  # being written this instant, or garbage: judge by its mtime
        with contextlib.suppress(FileNotFoundError):
            return {"host": "?", "pid": -1, "started": "?", "heartbeat": lock_path(store).stat().st_mtime,
                    "raw": text}
        return None
    return info


def holder(info: dict[str, Any]) -> str:
    age = time.time() - float(info.get("heartbeat", 0))
    return (f"host {info.get('host')}, pid {info.get('pid')}, started {info.get('started')}, "
            f"last heartbeat {age:.0f} s ago")


def stale_reason(info: dict[str, Any], now: float | None = None) -> str | None:
    """Why the lock ``info`` is stale, or None when its holder may still be running."""
    now = time.time() if now is None else now
    if info.get("host") == socket.gethostname() and not _alive(int(info.get("pid", -1))):
        return f"process {info.get('pid')} no longer runs on this host"
    age = now - float(info.get("heartbeat", 0))
    if age > STALE_AFTER_S:
        return f"no heartbeat for {age:.0f} s (stale after {STALE_AFTER_S:.0f} s)"
    return None


class Lock:
    """A held lock; :meth:`release` (or process exit) removes it."""

    def __init__(self, store: Path, info: dict[str, Any], created_dir: bool):
        self.store, self.info, self.created_dir = store, info, created_dir
        self.path = lock_path(store)
        self.lost = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="sweep-lock-heartbeat", daemon=True)
        self._thread.start()

    def ours(self) -> bool:
        info = read(self.store)
        return info is not None and info.get("token") == self.info["token"]

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            if not self.ours():
                if not self.lost:
                    self.lost = True
                    sys.stderr.write(f"warning: lost the lock of {self.store} (removed or broken by "
                                     "another process); another sweep may now write to it\n")
                continue
            self.info["heartbeat"] = time.time()
            tmp = self.path.with_name(f"{LOCK_NAME}.{self.info['token']}")
            try:
                tmp.write_text(json.dumps(self.info))
                os.replace(tmp, self.path)  # atomic: readers see the old or the new heartbeat
            except OSError:  # e.g. the disk is full: the next beat tries again
                with contextlib.suppress(OSError):
                    tmp.unlink()

    def release(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            if self.ours():
                self.path.unlink()
        if self.created_dir:  # nothing was ever written: leave no empty store behind
            with contextlib.suppress(OSError):
                self.store.rmdir()
        if self in _HELD:
            _HELD.remove(self)


def _create(path: Path, info: dict[str, Any]) -> bool:
    """Create ``path`` holding ``info`` if it does not exist (atomically); False if it does."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(info))
        f.flush()
        os.fsync(f.fileno())
    return True


def _break(store: Path, judged: dict[str, Any]) -> bool:
    """Remove the stale lock ``judged``; False if the file changed meanwhile (not broken)."""
    path = lock_path(store)
    aside = path.with_name(f"{LOCK_NAME}.broken.{secrets.token_hex(8)}")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return True  # someone else broke it: try to create ours
    try:
        text = aside.read_text()
        same = judged.get("raw", None) == text or (
            "token" in judged and json.loads(text).get("token") == judged["token"])
    except (OSError, ValueError):
        same = False
    if not same:  # we moved a fresh lock of another process: put it back (fails if one exists)
        with contextlib.suppress(OSError):
            os.link(aside, path)
    aside.unlink()
    return same


def acquire(store: str | Path, command: str = "", say: Callable[[str], None] | None = None) -> Lock:
    """Take the store's lock or raise ConfigError naming its holder.

    Creates the store directory when it does not exist yet (removed again on
    release if nothing else was written). A store that cannot be written to
    (read-only file system, permissions, immutable) is refused here, before
    anything is computed.
    """
    store = Path(store)
    say = say or (lambda msg: sys.stderr.write(msg + "\n"))
    created_dir = False
    try:
        if not store.exists():
            store.mkdir(parents=True)
            created_dir = True
    except FileExistsError:
        pass
    except OSError as exc:
        raise ConfigError(f"store: cannot create {store}: {exc.strerror or exc}") from None
    started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    info = {"host": socket.gethostname(), "pid": os.getpid(), "started": started,
            "heartbeat": time.time(), "command": command, "token": secrets.token_hex(16)}
    for _ in range(5):
        try:
            if _create(lock_path(store), info):
                lock = Lock(store, info, created_dir)
                _HELD.append(lock)
                return lock
        except OSError as exc:
            raise ConfigError(f"store: cannot write to {store}: {exc.strerror or exc} "
                              f"(creating its lock file {LOCK_NAME})") from None
        other = read(store)
        if other is None:
            continue  # released meanwhile
        reason = stale_reason(other)
        if reason is None:
            raise ConfigError(f"store: {store} is in use by another sweep ({holder(other)}); wait for it, "
                              f"or remove {lock_path(store)} if that process is gone")
        if _break(store, other):
            say(f"lock: broke the stale lock of {store} ({holder(other)}): {reason}")
    raise ConfigError(f"store: {store}: could not take its lock (contended); try again")


def others_in(store: str | Path) -> bool:
    """Whether the store directory holds anything besides lock files."""
    return any(not p.name.startswith(LOCK_NAME) for p in Path(store).iterdir())


def release_all() -> None:
    """Release every lock this process holds (the CLI's finally, and process exit)."""
    for lock in list(_HELD):
        lock.release()


atexit.register(release_all)
