"""File-system faults while a sweep writes its store, and the test hook that injects one.

:class:`StoreWriteError` is what a failed write of the store becomes (no space
left, a file system gone read-only, an I/O error): the CLI prints it as one
``error:`` line and exits with status 3. The cell being written is not marked
done, so rerunning the same command (with the fault gone) recomputes it.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pipeline.store.location import Location

#: Test only: ``N`` makes the sweep process SIGKILL itself after writing the data of
#: its N-th cell and before marking it done (the window a crash must survive).
KILL_AFTER_WRITE_ENV = "SGDSWEEP_TEST_KILL_AFTER_WRITE"
#: Test hook: a writer stops itself (SIGSTOP) before its first shard write, until SIGCONT.
STOP_BEFORE_WRITE_ENV = "SGDSWEEP_TEST_STOP_BEFORE_WRITE"
#: Test hook: a fenced writer stops itself (SIGSTOP) after its first fence check passed and
#: before the shard's data is written, until SIGCONT (the window between check and write).
STOP_AFTER_FENCE_ENV = "SGDSWEEP_TEST_STOP_AFTER_FENCE"

_written = 0


class StoreWriteError(Exception):
    """Writing the store failed at the operating-system level."""


@contextlib.contextmanager
def store_writes(loc: Location, what: str) -> Iterator[None]:
    """Turn an OSError raised while writing ``what`` to the store at ``loc`` into a
    :class:`StoreWriteError`."""
    from pipeline.store.location import io_errors, reason

    try:
        yield
    except io_errors() as exc:  # OSError; on an object store also its client's connection errors
        raise StoreWriteError(f"store: cannot write {what} to {loc.show()}: {reason(exc)}; "
                              "the cells written so far are kept, rerun the same command "
                              "once the problem is fixed") from None


def after_data_written() -> None:
    """Called between a cell's data and its ``done`` flag; a no-op unless the test hook is set."""
    global _written
    n = os.environ.get(KILL_AFTER_WRITE_ENV)
    if not n:
        return
    _written += 1
    if _written == int(n):
        os.kill(os.getpid(), signal.SIGKILL)


def _stop_once(hook: str) -> None:
    """With the test hook ``hook`` set, the process stops itself (SIGSTOP) once, until a SIGCONT."""
    if os.environ.pop(hook, None):
        os.kill(os.getpid(), signal.SIGSTOP)


def before_write() -> None:
    """Called before a shard's data is written (and before the write's fence is checked): a
    writer frozen or cut off mid-task, under :data:`STOP_BEFORE_WRITE_ENV`."""
    _stop_once(STOP_BEFORE_WRITE_ENV)


def after_fence() -> None:
    """Called when a shard write's fence check has passed, before its data is written: a
    writer frozen between the check and the write, under :data:`STOP_AFTER_FENCE_ENV`."""
    _stop_once(STOP_AFTER_FENCE_ENV)
