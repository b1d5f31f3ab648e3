"""Cutting the cells still to do into Dask tasks, handed out as earlier tasks finish."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from pipeline.run.settings import TASK_SECONDS


class Batcher:
    """The cells still to submit, cut into tasks.

    With ``cells_per_task`` set, every task is submitted at once in blocks of that
    size. Automatic (``None``): tasks are handed out as others finish, keeping two
    per worker thread in flight; the first are single cells, later ones hold as
    many cells as take about :data:`TASK_SECONDS` at the mean cell runtime measured
    so far (tiny cells batched: the scheduler's cost per task is ~ms), never more
    than a fair share of what is left (the tail stays balanced). With ``blocks``
    (workers write: a task is a shard's cells) the blocks are handed out the same
    way, two per worker thread in flight, so the client never holds every task.
    """

    def __init__(self, todo: Sequence[int], per_task: int | None, client: Any,
                 blocks: Sequence[list[int]] | None = None):
        self.left = list(todo)[::-1]  # popped from the end, in order
        self.per_task, self.client = per_task, client
        #: Fixed tasks (a shard's cells each, ``store_writer=workers``), handed out as others finish.
        self.blocks = None if blocks is None else list(blocks)[::-1]
        self.seconds = 0.0
        self.cells = 0
        self.threads = 1
        self.checked = -1e9

    def _take(self, n: int) -> list[int]:
        return [self.left.pop() for _ in range(min(n, len(self.left)))]

    def _threads(self) -> int:
        t = time.monotonic()
        if t - self.checked > 2.0:  # workers may join (jobqueue): ask now and then
            self.checked = t
            self.threads = max(1, sum(self.client.nthreads().values()))
        return self.threads

    def _next_blocks(self, n: int) -> list[list[int]]:
        assert self.blocks is not None
        return [self.blocks.pop() for _ in range(min(max(n, 0), len(self.blocks)))]

    def first(self) -> list[list[int]]:
        if self.blocks is not None:
            return self._next_blocks(2 * self._threads())
        if self.per_task is not None:
            return [self._take(self.per_task) for _ in range(-(-len(self.left) // self.per_task))]
        return [b for b in (self._take(1) for _ in range(2 * self._threads())) if b]

    def timed(self, runtimes: Sequence[float]) -> None:
        self.seconds += sum(runtimes)
        self.cells += len(runtimes)

    def size(self) -> int:
        if not self.cells:
            return 1
        mean = max(self.seconds / self.cells, 1e-4)
        fair = -(-len(self.left) // (2 * self._threads()))
        return max(1, min(round(TASK_SECONDS / mean), fair))

    def more(self, in_flight: int) -> list[list[int]]:
        if self.blocks is not None:
            return self._next_blocks(2 * self._threads() - in_flight)
        if self.per_task is not None or not self.left:
            return []
        want = 2 * self._threads() - in_flight
        return [b for b in (self._take(self.size()) for _ in range(max(want, 0))) if b]
