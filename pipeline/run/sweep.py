"""Run a sweep: validate every cell, prepare the store, map run_cell with Dask.

One client submits every cell (``cells_per_task`` cells per task, or batches
sized automatically to about ``TASK_SECONDS`` of compute), with Dask retries;
results are written by this process, a shard at a time, so the store has a
single writer. A task that keeps failing is split into single-cell tasks; a
cell that still fails is recorded (``error``) and the sweep goes on. Exit
status: 0 all cells done, 1 some failed, 2 bad input.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

import numpy as np
import xarray as xr
from distributed import as_completed
from omegaconf import DictConfig, OmegaConf

from pipeline.cluster import local as clusters
from pipeline.config import TASK_SECONDS, SweepPlan, expand
from pipeline.store import integrity, location
from pipeline.store import lock as locks
from pipeline.store import store as stores
from sgdsweep.cell import schema
from sgdsweep.cell.config import CellConfig
from sgdsweep.cell.schema import BOOKKEEPING, CELL_DIMS, RUNTIME
from sgdsweep.errors import ConfigError


def compute_cells(cells: Sequence[tuple[int, CellConfig]]) -> list[tuple[int, xr.Dataset]]:
    """The Dask task: run_cell for each (flat index, parsed cell)."""
    import sgdsweep

    return [(i, sgdsweep.run_cell(c)) for i, c in cells]


#: The store's layout on a worker, read once per worker process and store (``store_writer=workers``).
_LAYOUTS: dict[str, xr.Dataset] = {}


#: With ``store_writer=workers`` a task is a shard: a new store gets at least this many.
WORKER_TASKS = 16

Confirmation = list[tuple[int, bool, str, float]]


def write_cells(url: str, options: dict[str, Any], sweep_dims: Sequence[str],
                cells: Sequence[tuple[int, tuple[int, ...], CellConfig]]) -> Confirmation:
    """The Dask task of ``store_writer=workers``: run the cells of one shard and write them
    (data first, ``done`` last) — this task is the shard's only writer. ``url`` is the
    store's absolute path or URL, ``options`` its fsspec storage options. Returns, per cell,
    (flat index, done, error message, runtime) once the shard is written: the confirmation."""
    import sgdsweep

    loc = location.parse(url, options)
    if url not in _LAYOUTS:
        _LAYOUTS[url] = stores.read_status(loc)
    writer = stores.CellWriter(loc, _LAYOUTS[url], sweep_dims)
    writer.expect([idx for _, idx, _ in cells])
    out = []
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
    return out


def templates(plan: SweepPlan) -> xr.Dataset:
    """The union cell layout; ``cell_template`` is cheap, run once per distinct landscape."""
    import sgdsweep

    seen: dict[str, xr.Dataset] = {}
    for cell, parsed in zip(plan.cells, plan.parsed, strict=True):
        key = json.dumps({k: v for k, v in cell.items() if k not in ("lr", "batch_size", "seed")},
                         sort_keys=True, default=repr)
        if key not in seen:
            seen[key] = sgdsweep.cell_template(parsed)
    return stores.union_template(list(seen.values()))


def error_text(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}".strip()


class Progress:
    """Cells done/total, failures, rate and ETA on stderr: one redrawn line on a
    terminal, a line every ``every`` seconds otherwise (logs)."""

    def __init__(self, total: int, already: int, stream: TextIO = sys.stderr, every: float = 10.0):
        self.total, self.already, self.stream, self.every = total, already, stream, every
        self.tty = stream.isatty()
        self.start = time.perf_counter()
        self.last = 0.0
        self.done = self.failed = 0
        self.shown = -1

    def line(self) -> str:
        elapsed = time.perf_counter() - self.start
        finished = self.done + self.failed
        left = self.total - self.already - finished
        rate = finished / elapsed if elapsed > 0 else 0.0
        eta = _clock(left / rate) if rate > 0 else "?"
        n = self.already + self.done
        width = 24
        fill = int(width * (n + self.failed) / max(self.total, 1))
        return (f"[{'#' * fill}{'.' * (width - fill)}] {n}/{self.total} cells, {self.failed} failed, "
                f"{rate:.2f} cells/s, elapsed {_clock(elapsed)}, ETA {eta}")

    def update(self, ok: bool) -> None:
        if ok:
            self.done += 1
        else:
            self.failed += 1
        self.show()

    def show(self, force: bool = False) -> None:
        t = time.perf_counter()
        if self.tty:
            self.stream.write("\r" + self.line() + "\033[K")
            self.stream.flush()
        elif (force and self.shown != self.done + self.failed) or t - self.last >= self.every:
            self.stream.write(self.line() + "\n")
            self.stream.flush()
            self.last, self.shown = t, self.done + self.failed

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
        else:
            self.show(force=True)


def _clock(seconds: float) -> str:
    s = round(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


@dataclass
class Prepared:
    """A validated sweep and its store, ready to run."""

    plan: SweepPlan
    plain: dict[str, Any]
    loc: location.Location
    template: xr.Dataset
    todo: list[int]
    started: str

    @property
    def path(self) -> str:
        """The store as the user named it (a path, or a URL)."""
        return self.loc.show()

    @property
    def total(self) -> int:
        return len(self.plan.cells)

    @property
    def already(self) -> int:
        return self.total - len(self.todo)


@dataclass
class Outcome:
    """What a run did: cells computed, failures (``failed``: those made durable), times (s)."""

    failures: dict[int, str] = field(default_factory=dict)
    failed: int = 0
    compute_time: float = 0.0
    write_time: float = 0.0
    run_time: float = 0.0
    interrupted: bool = False


def run_sweep(cfg: DictConfig, argv: Sequence[str], out: TextIO = sys.stdout) -> int:
    """The ``sweep`` command on a composed config; raises ConfigError on bad input."""
    t0 = time.perf_counter()
    say = _printer(out)
    prep = prepare(cfg, argv, say)
    say(f"sweep: {prep.total} cells over {', '.join(f'{a.name}[{len(a.values)}]' for a in prep.plan.axes)}"
        f" -> {prep.path}" + (f" (resuming: {prep.already} already done)" if prep.already else ""))
    writer = stores.CellWriter(prep.loc, prep.template, [a.name for a in prep.plan.axes])
    outcome = execute(prep, writer, say)
    return summarise(prep, writer, outcome, time.perf_counter() - t0, say)


def prepare(cfg: DictConfig, argv: Sequence[str], say: Any) -> Prepared:
    """Validate everything, take the store's lock, then create (or check for resuming) the store."""
    plain = OmegaConf.to_container(cfg, resolve=True)
    clusters.check(plain["cluster"])
    if plain["store_writer"] not in ("client", "workers"):
        raise ConfigError(f"store_writer: must be client or workers, got {plain['store_writer']!r}")
    for key, least in (("cells_per_task", 1), ("retries", 0), ("shard_cells", 1)):
        if plain[key] is not None and plain[key] < least:
            raise ConfigError(f"{key}: must be >= {least}, got {plain[key]}")
    path = location.parse(plain["store"], plain.get("store_options"))
    plan = expand(cfg, reserved=set(CELL_DIMS))
    cell = templates(plan)
    clash = {a.name for a in plan.axes} & (set(cell.data_vars) | set(BOOKKEEPING))
    if clash:
        raise ConfigError(f"grid: axis name {sorted(clash)[0]!r} clashes with a store variable")
    state = stores.inspect(path, plan, overwrite=bool(plain["overwrite"]))
    # Nothing was written until here. One sweep per store (the lock is held until the CLI
    # exits); a done cell with corrupt chunks is not done.
    locks.acquire(path, command=" ".join(location.redact_args(argv)), say=say)
    if state.exists or locks.others_in(path):
        state = stores.inspect(path, plan, overwrite=bool(plain["overwrite"]))
    if state.done is not None:
        state.done = integrity.recheck_done(path, state.done, say)
    started = stores.now()
    shard_cells = int(plain["shard_cells"])
    if plain["store_writer"] == "workers":  # a shard is one task: at least WORKER_TASKS tasks
        shard_cells = min(shard_cells, max(1, -(-len(plan.cells) // WORKER_TASKS)))
    template = stores.build_template(plan, cell, stores.provenance(plan, cell.attrs, argv),
                                     shard_cells=shard_cells)
    if state.done is None:
        stores.create(path, template, replace=state.exists)
        todo = list(range(len(plan.cells)))
    else:
        todo = [i for i in range(len(plan.cells)) if not state.done.flat[i]]
    return Prepared(plan, plain, path, template, todo, started)


def execute(prep: Prepared, writer: stores.CellWriter, say: Any) -> Outcome:
    """Compute the cells still to do on the cluster and write them as they finish."""
    outcome = Outcome()
    if not prep.todo:
        return outcome
    progress = None
    try:
        with clusters.open_client(prep.plain, say=say) as client:
            progress = Progress(prep.total, prep.already)
            t_submit = time.perf_counter()
            _execute(client, prep, writer, progress, outcome)
            outcome.run_time = time.perf_counter() - t_submit
    except KeyboardInterrupt:
        outcome.interrupted = True
    if progress is not None:
        progress.close()
    return outcome


def summarise(prep: Prepared, writer: stores.CellWriter, outcome: Outcome, wall: float, say: Any) -> int:
    """Record the run in the store, print the summary; the exit status."""
    path, failures = prep.path, outcome.failures
    loc = prep.loc
    runs = json.loads(writer.group.attrs.get("runs", "[]"))
    # Computed: the cells this run made done, read back from the store. After an interrupt
    # that is neither what was submitted nor only what the client saw confirmed (a worker
    # may finish writing its shard as the cluster closes).
    done = np.asarray(stores.read_status(loc)[schema.DONE].values, dtype=bool).ravel()
    runs.append({"command_line": prep.template.attrs["command_line"], "started": prep.started,
                 "finished": stores.now(), "computed": int(done[prep.todo].sum()),
                 "failed": outcome.failed, "wall_time_s": round(wall, 3)})
    writer.finish({"runs": json.dumps(runs), "last_run_finished": stores.now()})
    if outcome.interrupted:
        say(f"interrupted; {path} holds the cells finished so far. Rerun the same command to resume.")
        return 130
    computed = len(prep.todo) - len(failures)
    rate = computed / outcome.run_time if outcome.run_time else 0.0
    summary = [
        "",
        f"store      : {path}",
        f"cells      : {prep.total} total, {computed} computed now, {prep.already} already done, "
        f"{len(failures)} failed",
        f"wall time  : {wall:.1f} s ({outcome.run_time:.1f} s on the cluster; {rate:.2f} cells/s;"
        f" {outcome.compute_time:.1f} s of cell compute)",
        (f"store write: {1e3 * outcome.write_time / max(computed, 1):.1f} ms per cell"
         if prep.plain["store_writer"] == "client" else "store write: by the workers, a shard per task"),
    ]
    listed = schema.failures(stores.read_status(loc)) if failures else []
    for where, msg in listed[:10]:
        summary.append(f"failed     : {schema.describe_cell(where)}: {msg}")
    if len(listed) > 10:
        summary.append(f"failed     : ... and {len(listed) - 10} more "
                       f"(python -m pipeline status {path}{loc.cli_hint()})")
    summary += [
        f"open it    : python -c \"import xarray as xr; print({loc.open_hint()})\"",
        f"report     : python -m pipeline report {path}{loc.cli_hint()}",
    ]
    flagged = _escape_flags(stores.read_status(loc))
    if flagged:
        summary.append(f"escape     : {flagged}")
    if failures:
        summary.append("rerun the same command to retry the failed cells")
    say("\n".join(summary))
    return 1 if failures else 0


def _escape_flags(ds: xr.Dataset) -> str:
    """A warning naming the cells whose exact escape time has a grid error above the flag."""
    cells = schema.escape_error_cells(ds)
    if not cells:
        return ""
    worst = max(err for _, err in cells)
    return (f"{len(cells)} cell(s) have escape_time_exact_error > {schema.ESCAPE_ERROR_FLAG:.0%} "
            f"(worst {worst:.1%}); refine the density grid or raise fp.refine "
            "(python -m pipeline status lists them)")


def _printer(out: TextIO) -> Any:
    def say(msg: str) -> None:
        out.write(msg + "\n")
        out.flush()
    return say


def shard_blocks(todo: Sequence[int], plan: SweepPlan, writer: stores.CellWriter) -> list[list[int]]:
    """The cells to do grouped by the shard that holds them (flat order): one task each."""
    blocks: dict[tuple[int, ...], list[int]] = {}
    for i in todo:
        blocks.setdefault(writer.shard_of(plan.index(i)), []).append(i)
    return list(blocks.values())


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


def _execute(client: Any, prep: Prepared, writer: stores.CellWriter, progress: Progress,
             outcome: Outcome) -> None:
    """Submit, collect and write; adds cell runtimes and write times to ``outcome``."""
    plan, plain = prep.plan, prep.plain
    retries = int(plain["retries"])
    h = plan.config_hash[:10]

    workers_write = plain["store_writer"] == "workers"
    url, options = prep.loc.url, prep.loc.options  # what a worker opens (an absolute path locally)
    dims = [a.name for a in plan.axes]

    def submit(batch: list[int], shard: bool = False) -> Any:
        if shard:  # one whole shard's cells, written by the worker
            return client.submit(write_cells, url, options, dims,
                                 [(i, plan.index(i), plan.parsed[i]) for i in batch],
                                 retries=retries, pure=False, key=f"shard-{h}-{batch[0]}-{len(batch)}")
        return client.submit(compute_cells, [(i, plan.parsed[i]) for i in batch], retries=retries,
                             pure=False, key=f"cells-{h}-{batch[0]}-{len(batch)}")

    todo = prep.todo
    if workers_write:
        # Handed out as others finish: a client holding every task's cells at once grew by
        # ~1.2 GB at 10⁵ cells (the task specs, also in the scheduler's state).
        feed = Batcher([], None, client, blocks=shard_blocks(todo, plan, writer))
        futures = {submit(b, shard=True): b for b in feed.first()}
    else:
        writer.expect([plan.index(i) for i in todo])
        feed = Batcher(todo, plain["cells_per_task"], client)
        futures = {submit(b): b for b in feed.first()}
    queue = as_completed(list(futures))

    def written(cells: list[tuple[tuple[int, ...], bool]]) -> None:
        for _, ok in cells:  # durable now: the progress and the run's record count these
            progress.update(ok)
            outcome.failed += not ok

    try:
        _collect(queue, futures, submit, feed, plan, writer, outcome, written)
    finally:  # what finished is written, also on Ctrl-C (SIGKILL loses it: recomputed on resume)
        tw = time.perf_counter()
        written(writer.flush())
        outcome.write_time += time.perf_counter() - tw


def _collect(queue: Any, futures: dict, submit: Any, feed: Batcher, plan: SweepPlan,
             writer: stores.CellWriter, outcome: Outcome, written: Any) -> None:
    failures = outcome.failures
    for fut in queue:
        batch = futures.pop(fut)
        for b in feed.more(len(futures)):
            g = submit(b, shard=feed.blocks is not None)
            futures[g] = b
            queue.add(g)
        if fut.status == "error":
            exc = fut.exception()
            fut.release()
            if len(batch) > 1:  # isolate the failing cell(s); their results are written here
                writer.expect([plan.index(i) for i in batch])
                for i in batch:
                    g = submit([i])
                    futures[g] = [i]
                    queue.add(g)
                continue
            msg = error_text(exc)
            failures[batch[0]] = msg
            written(writer.fail(plan.index(batch[0]), msg))
            continue
        results = fut.result()
        fut.release()
        if results and not isinstance(results[0][1], xr.Dataset):  # written by a worker: confirmed
            for i, ok, msg, runtime in results:
                outcome.compute_time += runtime
                if not ok:
                    failures[i] = msg
                written([(plan.index(i), ok)])
            continue
        tw = time.perf_counter()
        feed.timed([float(ds[RUNTIME]) if RUNTIME in ds else 0.0 for _, ds in results])
        for i, ds in results:
            outcome.compute_time += float(ds[RUNTIME]) if RUNTIME in ds else 0.0
            try:
                written(writer.write(plan.index(i), ds))
            except ValueError as exc:
                failures[i] = f"write: {exc}"
                written(writer.fail(plan.index(i), failures[i]))
        written(writer.poll())
        outcome.write_time += time.perf_counter() - tw
