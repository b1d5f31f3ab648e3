"""Who writes the cells into the store (``store_writer``): two strategies with the same methods.

* :class:`ClientWriter` (``client``): a task computes cells and returns them; the sweep's
  process writes every cell, a shard at a time (the store has a single writer).
* :class:`WorkerWriter` (``workers``): a task is one shard's cells; the worker computes
  and writes them (the task is the shard's only writer) and returns a confirmation per
  cell. The store must be reachable from the workers.

In both, a task that keeps failing is split into single-cell compute tasks whose results
the sweep's process writes (:class:`ClientWriter`'s way), so one failing cell is recorded
and the rest of its task is kept.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Sequence
from typing import Any

import xarray as xr

from pipeline.config import SweepPlan
from pipeline.run import faults
from pipeline.run.batching import Batcher
from pipeline.store import lock as locks
from pipeline.store import store as stores
from pipeline.store.location import Location
from sgdsweep.cell.config import CellConfig
from sgdsweep.cell.schema import RUNTIME

#: With ``store_writer=workers`` a task is a shard: a new store gets at least this many.
WORKER_TASKS = 16

#: Per cell of a task run by :class:`WorkerWriter`: (flat index, done, error message, runtime).
Confirmation = list[tuple[int, bool, str, float]]
#: What a task of :class:`WorkerWriter` returns: its confirmation, the prefix its attempt
#: staged its shard files under and their moves into place, step by step (:class:`stores.CellWriter`).
Staged = tuple[Confirmation, str, list[list[tuple[str, str]]]]
#: Called with the (index, ok) of cells made durable: the progress and the run's record.
Written = Callable[[list[tuple[tuple[int, ...], bool]]], None]

log = logging.getLogger(__name__)

#: The store's layout on a worker, read once per worker process and store (``store_writer=workers``).
_LAYOUTS: dict[str, xr.Dataset] = {}


def compute_cells(cells: Sequence[tuple[int, CellConfig]]) -> list[tuple[int, xr.Dataset]]:
    """The Dask task of :class:`ClientWriter`: run_cell for each (flat index, parsed cell)."""
    import sgdsweep

    return [(i, sgdsweep.run_cell(c)) for i, c in cells]


class Superseded(RuntimeError):
    """A write refused: the run it belongs to no longer holds the store."""


def fence(loc: Location, run_token: str, client: bool = False) -> Callable[[], None]:
    """The check made before each shard write (and, by a worker, once its files are staged;
    by the run's client, before it moves them into place or records the run): the store's
    lock still carries the token of the run (:class:`Superseded` if not). A task that outlives
    its run — a worker stopped or cut off while its sweep ended, and a new sweep
    (``overwrite=true``, another config) took the store — writes nothing; nor does a client
    frozen past the stale-lock age whose lock another sweep broke. The check is not atomic
    with the write; what makes a worker's late write harmless is the staging
    (:func:`write_cells`): a worker only ever writes under ``.staging/<its run's token>/``,
    and only the run's client moves files into place. ``client``: the check of the run's own
    process (its message; not logged, the sweep reports it)."""
    who = "this sweep" if client else "the run that submitted this task"

    def check() -> None:
        held = locks.read(loc, age=False)
        if held is None or held.get("token") != run_token:
            exc = Superseded(f"store: {loc.show()}: {who} no longer holds the store's lock; nothing written")
            if not client:
                # Also in the worker's log: Dask drops the error of a task it no longer waits
                # for (a worker removed for missed heartbeats, its task rerun elsewhere).
                log.warning("%s", exc)
            raise exc
    return check


def stage_of(run_token: str) -> str:
    """Where the workers of the run holding ``run_token`` stage their shard files."""
    return f"{locks.STAGING}/{run_token}"


def write_cells(loc: Location, sweep_dims: Sequence[str],
                cells: Sequence[tuple[int, tuple[int, ...], CellConfig]],
                run_token: str = "") -> Staged:
    """The Dask task of :class:`WorkerWriter`: run the cells of one shard and write them
    (data first, ``done`` last) — this task is the shard's only writer. ``loc`` is the
    store as the workers reach it (:meth:`Location.for_workers`).

    ``run_token``, the lock token of the submitting run: the shard's files are staged under
    ``.staging/<run_token>/<attempt>/`` (a random name per attempt: Dask may run a task
    twice), never written into place here; the run's client moves them into place when
    this result reaches it (:meth:`WorkerWriter.receive`). A task that outlives its run
    can then only write into its dead run's staging, which nothing moves and the next run
    removes. Every write is also fenced (:func:`fence`), and the staged files are removed
    again if the run ended meanwhile. Empty ``run_token``: no fence, written into place.

    Returns, per cell, (flat index, done, error message, runtime) — the confirmation — and
    the stage and the moves that put its files in place."""
    import sgdsweep

    if loc.url not in _LAYOUTS:
        _LAYOUTS[loc.url] = stores.read_status(loc)
    check = fence(loc, run_token) if run_token else None
    stage = f"{stage_of(run_token)}/{secrets.token_hex(8)}" if run_token else None
    writer = stores.CellWriter(loc, _LAYOUTS[loc.url], sweep_dims, fence=check, stage=stage)
    writer.expect([idx for _, idx, _ in cells])
    out = []
    try:
        for i, idx, cell in cells:
            ds = sgdsweep.run_cell(cell)  # raises: nothing of the shard written, the client isolates the cell
            runtime = float(ds[RUNTIME]) if RUNTIME in ds else 0.0
            try:
                writer.write(idx, ds)
                out.append((i, True, "", runtime))
            except ValueError as exc:
                writer.fail(idx, f"write: {exc}")
                out.append((i, False, f"write: {exc}", runtime))
        writer.flush()
        if check is not None:
            check()  # the run ended while this task wrote: its staged files are of no use
    except Superseded:
        if stage is not None and writer.moves:
            loc.remove_tree(stage)
        raise
    return out, stage or "", writer.moves


def shard_blocks(todo: Sequence[int], plan: SweepPlan, writer: stores.CellWriter) -> list[list[int]]:
    """The cells to do grouped by the shard that holds them (flat order): one task each."""
    blocks: dict[tuple[int, ...], list[int]] = {}
    for i in todo:
        blocks.setdefault(writer.shard_of(plan.index(i)), []).append(i)
    return list(blocks.values())


class ClientWriter:
    """``store_writer=client``: tasks return their cells, this process writes them."""

    def shard_cells(self, requested: int, n_cells: int) -> int:
        """Cells per shard of a new store: as requested."""
        return requested

    def tasks(self, todo: Sequence[int], plan: SweepPlan, writer: stores.CellWriter, client: Any,
              per_task: int | None) -> Batcher:
        """The tasks of the cells ``todo``: batches of ``per_task`` cells (None: sized automatically)."""
        writer.expect([plan.index(i) for i in todo])
        return Batcher(todo, per_task, client)

    def submit(self, client: Any, plan: SweepPlan, loc: Location, batch: list[int], retries: int) -> Any:
        """A task computing the cells ``batch`` (flat indices) and returning them."""
        return client.submit(compute_cells, [(i, plan.parsed[i]) for i in batch], retries=retries,
                             pure=False, key=f"cells-{plan.config_hash[:10]}-{batch[0]}-{len(batch)}")

    def receive(self, results: list[tuple[int, xr.Dataset]], plan: SweepPlan, writer: stores.CellWriter,
                feed: Batcher, outcome: Any, written: Written) -> None:
        """Write the cells a task returned (a cell that does not fit the store fails)."""
        tw = time.perf_counter()
        feed.timed([float(ds[RUNTIME]) if RUNTIME in ds else 0.0 for _, ds in results])
        for i, ds in results:
            outcome.compute_time += float(ds[RUNTIME]) if RUNTIME in ds else 0.0
            try:
                written(writer.write(plan.index(i), ds))
            except ValueError as exc:
                outcome.failures[i] = f"write: {exc}"
                written(writer.fail(plan.index(i), outcome.failures[i]))
        written(writer.poll())
        outcome.write_time += time.perf_counter() - tw

    def summary(self, outcome: Any, computed: int) -> str:
        """The ``store write`` line of the sweep's summary."""
        return f"store write: {1e3 * outcome.write_time / max(computed, 1):.1f} ms per cell"


class WorkerWriter:
    """``store_writer=workers``: a task is one shard's cells, computed and written by its worker;
    ``run_token`` (the run's lock token) fences the workers' writes (:func:`fence`)."""

    def __init__(self, run_token: str = ""):
        self.run_token = run_token

    def shard_cells(self, requested: int, n_cells: int) -> int:
        """Cells per shard of a new store: a shard is one task, so at least :data:`WORKER_TASKS` tasks."""
        return min(requested, max(1, -(-n_cells // WORKER_TASKS)))

    def tasks(self, todo: Sequence[int], plan: SweepPlan, writer: stores.CellWriter, client: Any,
              per_task: int | None) -> Batcher:
        """A task per shard (``per_task`` does not apply)."""
        # Handed out as others finish: a client holding every task's cells at once grew by
        # ~1.2 GB at 10⁵ cells (the task specs, also in the scheduler's state).
        return Batcher([], None, client, blocks=shard_blocks(todo, plan, writer))

    def submit(self, client: Any, plan: SweepPlan, loc: Location, batch: list[int], retries: int) -> Any:
        """A task computing and writing the cells ``batch`` (one whole shard's)."""
        dims = [a.name for a in plan.axes]
        return client.submit(write_cells, loc.for_workers(), dims,
                             [(i, plan.index(i), plan.parsed[i]) for i in batch], self.run_token,
                             retries=retries, pure=False,
                             key=f"shard-{plan.config_hash[:10]}-{batch[0]}-{len(batch)}")

    def receive(self, results: Staged, plan: SweepPlan, writer: stores.CellWriter,
                feed: Batcher, outcome: Any, written: Written) -> None:
        """Move the shard its worker staged into place (this process holds the store's lock),
        then record its confirmations."""
        confirmed, stage, moves = results
        if writer.fence is not None:
            writer.fence()  # this process still holds the store: its moves may go ahead
        if stage:
            if not stage.startswith(f"{stage_of(self.run_token)}/"):
                raise ValueError(f"a task staged its shard outside this run's staging: {stage}")
            tw = time.perf_counter()
            with faults.store_writes(writer.loc, f"the shard staged at {stage}"):
                writer.commit(moves, stage)
            outcome.write_time += time.perf_counter() - tw
        for i, ok, msg, runtime in confirmed:
            outcome.compute_time += runtime
            if not ok:
                outcome.failures[i] = msg
            written([(plan.index(i), ok)])

    def summary(self, outcome: Any, computed: int) -> str:
        return (f"store write: by the workers, a shard per task, staged; moved into place here in "
                f"{1e3 * outcome.write_time / max(computed, 1):.1f} ms per cell")


#: ``store_writer`` -> its strategy.
WRITERS: dict[str, type[ClientWriter | WorkerWriter]] = {"client": ClientWriter, "workers": WorkerWriter}


def writer_for(store_writer: str, run_token: str = "") -> ClientWriter | WorkerWriter:
    """The strategy of ``store_writer`` (validated by the run settings before this); the
    workers' writes are fenced by ``run_token``."""
    return WorkerWriter(run_token) if store_writer == "workers" else WRITERS[store_writer]()
