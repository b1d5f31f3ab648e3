"""One sweep process per store: a lock file in the store, held for the whole run.

``STORE/.sweep.lock`` is created exclusively — on a local path with ``O_CREAT |
O_EXCL``, atomic on local file systems, on NFS v3 and later (the server does the
exclusive create) and on Lustre and GPFS; on an object store (``s3://…``) with a
conditional PUT (``If-None-Match: *``), which AWS S3, MinIO and moto honour (a
server that ignored it would let two sweeps both take the lock) — and holds JSON:
host, pid, start time, command line, a random token, and a heartbeat (Unix time)
that a daemon thread refreshes every :data:`HEARTBEAT_S` seconds. No
``flock``/``fcntl`` locks are used (NFS lacks or emulates them). A second sweep
finding the file refuses with one line naming the holder. The lock is stale, and
is broken with a message, when

* its host is this host and its pid no longer runs, or
* its heartbeat is older than :data:`STALE_AFTER_S` seconds (a dead node, or a
  process hung for that long). This compares the holder's clock with ours:
  hosts sharing a store need clocks agreeing to well under that (NTP).

Breaking removes exactly the stale lock judged (:meth:`Location.remove_if`: a
rename to a name of our own on a file system, a delete conditional on the
object's ETag on S3), so two processes breaking the same stale lock cannot both
go on.
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
from typing import Any

from pipeline.store import location
from pipeline.store.location import Location
from sgdsweep.errors import ConfigError

LOCK_NAME = ".sweep.lock"
#: Where the workers of a run stage their shard files (``STAGING/<run token>/<attempt>/…``) for
#: the run's client, the lock holder, to move into place (:mod:`pipeline.run.writers`).
STAGING = ".staging"
#: Seconds between heartbeats of a running sweep.
HEARTBEAT_S = 30.0
#: A lock whose heartbeat is older than this (seconds) is stale, on any host.
STALE_AFTER_S = 600.0

_HELD: list[Lock] = []


def lock_path(loc: Location) -> str:
    """The lock file, as the user names it (a path, or a URL)."""
    return loc.show(LOCK_NAME)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def read(loc: Location, age: bool = True) -> dict[str, Any] | None:
    """The holder recorded in the store's lock file, or None when there is none; with
    ``age``, its heartbeat's age by the store's own clock under ``"age_s"`` when the store
    can tell it (:func:`store_age`)."""
    try:
        text = loc.read(LOCK_NAME).decode(errors="replace")
    except FileNotFoundError:
        return None
    try:
        info = json.loads(text)
    except json.JSONDecodeError:
        info = None
    if not isinstance(info, dict):  # being written this instant, or garbage: judge by its mtime
        try:
            info = {"host": "?", "pid": -1, "started": "?", "heartbeat": loc.mtime(LOCK_NAME), "raw": text}
        except FileNotFoundError:
            return None
    if age:
        seconds = store_age(loc)
        if seconds is not None:
            info["age_s"] = seconds
    return info


def store_age(loc: Location) -> float | None:
    """Seconds since the lock file was last written, by the store's clock alone: the
    modification time of a probe written now minus the lock file's (both stamped by the
    file system or object store that holds them), so that hosts whose clocks disagree still
    agree on a lock's age. None when the store cannot say (the probe cannot be written)."""
    probe = f"{LOCK_NAME}.age.{os.getpid()}.{secrets.token_hex(4)}"
    try:
        loc.write(probe, b"")
        try:
            return max(0.0, loc.mtime(probe) - loc.mtime(LOCK_NAME))
        finally:
            loc.remove(probe)
    except (FileNotFoundError, *location.io_errors()):
        return None


def _age(info: dict[str, Any], now: float | None = None) -> tuple[float, str]:
    """The heartbeat's age (s) and whose clock measured it."""
    if "age_s" in info:
        return float(info["age_s"]), "by the store's clock"
    now = time.time() if now is None else now
    return now - float(info.get("heartbeat", 0)), "by this host's clock"


def holder(info: dict[str, Any]) -> str:
    age, _ = _age(info)
    return (f"host {info.get('host')}, pid {info.get('pid')}, started {info.get('started')}, "
            f"last heartbeat {age:.0f} s ago")


def stale_reason(info: dict[str, Any], now: float | None = None) -> str | None:
    """Why the lock ``info`` is stale, or None when its holder may still be running.

    A holder on this host is judged by its pid; any other by its heartbeat's age, measured
    by the store's clock where :func:`read` could (``"age_s"``), else by this host's clock
    against the holder's (which then must roughly agree: within :data:`STALE_AFTER_S`)."""
    if info.get("host") == socket.gethostname() and not _alive(int(info.get("pid", -1))):
        return f"process {info.get('pid')} no longer runs on this host"
    age, clock = _age(info, now)
    if age > STALE_AFTER_S:
        return f"no heartbeat for {age:.0f} s {clock} (stale after {STALE_AFTER_S:.0f} s)"
    return None


class Lock:
    """A held lock; :meth:`release` (or process exit) removes it."""

    def __init__(self, store: Location, info: dict[str, Any], created_dir: bool):
        self.store, self.info, self.created_dir = store, info, created_dir
        self.path = lock_path(store)
        self.lost = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="sweep-lock-heartbeat", daemon=True)
        self._thread.start()

    def ours(self) -> bool:
        info = read(self.store, age=False)
        return info is not None and info.get("token") == self.info["token"]

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            if not self.ours():
                if not self.lost:
                    self.lost = True
                    sys.stderr.write(f"warning: lost the lock of {self.store.show()} (removed or broken by "
                                     "another process); another sweep may now write to it\n")
                continue
            self.info["heartbeat"] = time.time()
            try:  # atomic: readers see the old or the new heartbeat
                self.store.write(LOCK_NAME, json.dumps(self.info).encode(),
                                 tmp=f"{LOCK_NAME}.{self.info['token']}")
            except location.io_errors():  # e.g. the disk is full: the next beat tries again
                pass

    def release(self) -> None:
        self._stop.set()
        with contextlib.suppress(*location.io_errors()):
            if self.ours():
                self.store.remove(LOCK_NAME)
        if self.created_dir:  # nothing was ever written: leave no empty store behind
            self.store.remove_empty_dir()
        if self in _HELD:
            _HELD.remove(self)


def _break(store: Location, judged: dict[str, Any]) -> bool:
    """Remove the stale lock ``judged``; False if the file changed meanwhile (not broken)."""
    def same(data: bytes) -> bool:
        text = data.decode(errors="replace")
        try:
            return judged.get("raw", None) == text or (
                "token" in judged and json.loads(text).get("token") == judged["token"])
        except ValueError:
            return False

    return store.remove_if(LOCK_NAME, same)


def acquire(loc: Location, command: str = "",
            say: Callable[[str], None] | None = None) -> Lock:
    """Take the store's lock or raise ConfigError naming its holder.

    Creates the store directory when it does not exist yet (removed again on
    release if nothing else was written). A store that cannot be written to
    (read-only file system, permissions, immutable; an object store without
    write access) is refused here, before anything is computed.
    """
    shown = loc.show()
    say = say or (lambda msg: sys.stderr.write(msg + "\n"))
    try:
        created_dir = loc.make_dir()
    except OSError as exc:
        raise ConfigError(f"store: cannot create {shown}: {exc.strerror or exc}") from None
    started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    info = {"host": socket.gethostname(), "pid": os.getpid(), "started": started,
            "heartbeat": time.time(), "command": command, "token": secrets.token_hex(16)}
    for _ in range(5):
        try:
            if loc.create(LOCK_NAME, json.dumps(info).encode()):
                lock = Lock(loc, info, created_dir)
                _HELD.append(lock)
                return lock
        except location.io_errors() as exc:
            raise ConfigError(f"store: cannot write to {shown}: {location.reason(exc)} "
                              f"(creating its lock file {LOCK_NAME})") from None
        other = read(loc)
        if other is None:
            continue  # released meanwhile
        reason = stale_reason(other)
        if reason is None:
            raise _in_use(loc, other)
        if _break(loc, other):
            say(f"lock: broke the stale lock of {shown} ({holder(other)}): {reason}")
    raise ConfigError(f"store: {shown}: could not take its lock (contended); try again")


def _in_use(loc: Location, other: dict[str, Any]) -> ConfigError:
    return ConfigError(f"store: {loc.show()} is in use by another sweep ({holder(other)}); wait for it, "
                       f"or remove {lock_path(loc)} if that process is gone")


def refuse_if_held(loc: Location) -> None:
    """Raise the "in use" error when a live sweep holds the store's lock.

    Checked before a store's contents are judged: a sweep that has just taken its
    lock may not have written its metadata yet, and is not "a directory that is
    not a sweep store".
    """
    if not loc.exists():
        return
    try:
        other = read(loc)
    except Exception:  # unreachable or unreadable: the checks that follow say so, in their words
        return
    if other is not None and stale_reason(other) is None:
        raise _in_use(loc, other)


def others_in(loc: Location) -> bool:
    """Whether the store holds anything besides lock files and staged writes."""
    return any(not name.startswith(LOCK_NAME) and name != STAGING for name in loc.entries())


def release_all() -> None:
    """Release every lock this process holds (the CLI's finally, and process exit)."""
    for lock in list(_HELD):
        lock.release()


atexit.register(release_all)
