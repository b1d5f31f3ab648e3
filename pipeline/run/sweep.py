"""Run a sweep: validate every cell, prepare the store, map run_cell with Dask.

One client submits every cell (``cells_per_task`` cells per task, or batches
sized automatically to about ``TASK_SECONDS`` of compute), with Dask retries;
who writes the results is the ``store_writer`` strategy (``pipeline.run.writers``:
this process, a shard at a time, or each worker its shard), so every shard has a
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
from pipeline.cluster.settings import ClusterConf, parse_cluster
from pipeline.config import SweepPlan, expand
from pipeline.limits import check_cell_memory
from pipeline.run import faults, writers
from pipeline.run.settings import RunConf, parse_run
from pipeline.store import integrity, location
from pipeline.store import lock as locks
from pipeline.store import store as stores
from sgdsweep.cell import schema
from sgdsweep.cell.schema import BOOKKEEPING, CELL_DIMS
from sgdsweep.errors import ConfigError


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


def grid_warnings(plan: SweepPlan) -> list[str]:
    """Coverage warnings (:func:`sgdsweep.landscapes.coverage.coverage_warnings`), one per
    distinct landscape and grid, for its cell of the largest η · Σ_b / Σ (widest spread)."""
    from sgdsweep.landscapes.coverage import coverage_warnings
    from sgdsweep.landscapes.landscape import Landscape

    widest: dict[str, Any] = {}
    for parsed in plan.parsed:
        if not isinstance(parsed.landscape, Landscape):
            continue
        key = repr((parsed.landscape.name, sorted(parsed.landscape.params.items()), parsed.grids))
        best = widest.get(key)
        if best is None or parsed.lr * parsed.noise_factor > best.lr * best.noise_factor:
            widest[key] = parsed
    out: list[str] = []
    for c in widest.values():
        out += coverage_warnings(c.landscape, c.grids, c.lr, c.noise_factor)
    return out


def error_text(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}".strip()


class Progress:
    """Cells done/total, failures, rate and ETA on stderr: one redrawn line on a
    terminal, a line every ``every`` seconds otherwise (logs)."""

    def __init__(self, total: int, already: int, stream: TextIO | None = None, every: float = 10.0):
        stream = sys.stderr if stream is None else stream  # at call time: sys.stderr may be replaced
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
    cluster: ClusterConf
    run: RunConf
    loc: location.Location
    template: xr.Dataset
    todo: list[int]
    started: str
    writer: writers.ClientWriter | writers.WorkerWriter  # who writes the cells (store_writer)
    run_token: str  # the token of the store's lock this run holds

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


def run_sweep(cfg: DictConfig, argv: Sequence[str], out: TextIO | None = None) -> int:
    """The ``sweep`` command on a composed config; raises ConfigError on bad input."""
    out = sys.stdout if out is None else out  # at call time: sys.stdout may be replaced
    t0 = time.perf_counter()
    say = _printer(out)
    prep = prepare(cfg, argv, say)
    say(f"sweep: {prep.total} cells over {', '.join(f'{a.name}[{len(a.values)}]' for a in prep.plan.axes)}"
        f" -> {prep.path}" + (f" (resuming: {prep.already} already done)" if prep.already else ""))
    # Every write of this process is fenced too: frozen past the stale-lock age (600 s), its
    # lock broken and the store taken by another sweep, it stops instead of writing into it.
    writer = stores.CellWriter(prep.loc, prep.template, [a.name for a in prep.plan.axes],
                               fence=writers.fence(prep.loc, prep.run_token, client=True))
    try:
        outcome = execute(prep, writer, say)
        return summarise(prep, writer, outcome, time.perf_counter() - t0, say)
    except writers.Superseded as exc:
        raise faults.StoreWriteError(f"{exc} (another process removed or broke it, e.g. a sweep that "
                                     "found it stale); the cells written before are kept, `status` "
                                     "lists them") from None


def prepare(cfg: DictConfig, argv: Sequence[str], say: Any) -> Prepared:
    """Validate everything, take the store's lock, then create (or check for resuming) the store."""
    plain = OmegaConf.to_container(cfg, resolve=True)
    cluster = parse_cluster(plain["cluster"])
    run = parse_run(plain)
    loc = location.parse(plain["store"], plain.get("store_options"))
    plan = expand(cfg, reserved=set(CELL_DIMS))
    check_cell_memory(plan.parsed, cluster)  # before the first cell template is allocated
    for warning in grid_warnings(plan):
        say(f"warning: {warning}")
    cell = templates(plan)
    clash = {a.name for a in plan.axes} & (set(cell.data_vars) | set(BOOKKEEPING) | {integrity.RECORD})
    if clash:
        raise ConfigError(f"grid: axis name {sorted(clash)[0]!r} clashes with a store variable")
    locks.refuse_if_held(loc)  # a sweep starting there has its lock before its metadata
    state = stores.inspect(loc, plan, overwrite=bool(plain["overwrite"]))
    # Nothing was written until here. One sweep per store (the lock is held until the CLI
    # exits); a done cell with corrupt chunks is not done.
    held = locks.acquire(loc, command=" ".join(location.redact_args(argv)), say=say)
    if state.exists or locks.others_in(loc):
        state = stores.inspect(loc, plan, overwrite=bool(plain["overwrite"]))
    if state.done is not None:
        state.done = integrity.recheck_done(loc, state.done, say)
    started = stores.now()
    mode = writers.writer_for(run.store_writer, run_token=held.info["token"])
    shard_cells = mode.shard_cells(int(run.shard_cells), len(plan.cells))
    template = stores.build_template(plan, cell, stores.provenance(plan, cell.attrs, argv),
                                     shard_cells=shard_cells)
    if state.done is None:
        stores.create(loc, template, replace=state.exists)
        todo = list(range(len(plan.cells)))
    else:
        todo = [i for i in range(len(plan.cells)) if not state.done.flat[i]]
        with faults.store_writes(loc, "the consolidated metadata"):
            loc.remove_tree(locks.STAGING)  # files staged by earlier runs' workers: never moved into place
            stores.consolidate(loc)  # a store cut short, or made before stores had it at creation
    return Prepared(plan, plain, cluster, run, loc, template, todo, started, mode, held.info["token"])


def execute(prep: Prepared, writer: stores.CellWriter, say: Any) -> Outcome:
    """Compute the cells still to do on the cluster and write them as they finish."""
    outcome = Outcome()
    if not prep.todo:
        return outcome
    progress = None
    try:
        with clusters.open_client(prep.cluster, store=prep.plain["store"], say=say) as client:
            warm_up(client, prep, say)
            progress = Progress(prep.total, prep.already)
            t_submit = time.perf_counter()
            _execute(client, prep, writer, progress, outcome)
            outcome.run_time = time.perf_counter() - t_submit
    except KeyboardInterrupt:
        outcome.interrupted = True
    finally:
        if progress is not None:
            progress.close()
    return outcome


#: Distinct warm-up cells at most (one per landscape dimension, method list and sampling).
WARMUP_KINDS = 4


def warm_up(client: Any, prep: Prepared, say: Any) -> float:
    """On a cold kernel cache (:func:`sgdsweep.cell.warmup.kernels_cached`, asked of a
    worker for each distinct kind of cell still to do), compile every kernel once before
    fanning out: the methods of each such cell are dealt over the workers as tiny cells
    (:func:`sgdsweep.cell.warmup.warmup_cells`), whose compiled kernels the real cells
    then load from the cache. Without it every worker compiled everything at once. A
    failing warm-up is ignored (the real cell reports). Returns the seconds spent."""
    from sgdsweep.cell import warmup
    from sgdsweep.cell.run import run_cell

    t0 = time.perf_counter()
    kinds: dict[tuple, Any] = {}
    for i in prep.todo:
        c = prep.plan.parsed[i]
        kinds.setdefault((c.dim, c.methods, c.sampling), c)
        if len(kinds) == WARMUP_KINDS:
            break
    try:
        cached = client.gather([client.submit(warmup.kernels_cached, c, pure=False) for c in kinds.values()])
    except Exception:
        return 0.0
    kinds = {k: c for (k, c), ok in zip(kinds.items(), cached, strict=True) if not ok}
    if not kinds:
        return 0.0
    workers = max(1, sum(client.nthreads().values()))
    cells = [w for c in kinds.values() for w in warmup.warmup_cells(c, workers)]
    if not cells:  # model landscapes: each cell compiles its own kernels
        return 0.0
    say(f"compiling kernels (first run; cached for the next): {len(cells)} warm-up task(s) on "
        f"{workers} worker(s) ...")
    futures = [client.submit(run_cell, c, pure=False) for c in cells]
    ok = True
    for fut in futures:
        try:
            fut.result()
        except Exception:
            ok = False
        fut.release()
    if ok:
        client.gather([client.submit(warmup.mark_cached, c, pure=False) for c in kinds.values()])
    elapsed = time.perf_counter() - t0
    say(f"kernels compiled in {elapsed:.1f} s")
    return elapsed


def summarise(prep: Prepared, writer: stores.CellWriter, outcome: Outcome, wall: float, say: Any) -> int:
    """Record the run in the store, print the summary; the exit status."""
    path, failures = prep.path, outcome.failures
    loc = prep.loc
    writer.fence()  # the run record and the staging's removal: only while this run holds the store
    runs = json.loads(writer.group.attrs.get("runs", "[]"))
    # Computed: the cells this run made done, read back from the store (after an interrupt
    # not what was submitted; a worker's shard counts once the client moved it into place).
    done = np.asarray(stores.read_status(loc)[schema.DONE].values, dtype=bool).ravel()
    runs.append({"command_line": prep.template.attrs["command_line"], "started": prep.started,
                 "finished": stores.now(), "computed": int(done[prep.todo].sum()),
                 "failed": outcome.failed, "wall_time_s": round(wall, 3)})
    with faults.store_writes(loc, "the staged files"):
        loc.remove_tree(locks.STAGING)  # left by attempts this run did not take (a task rerun)
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
        prep.writer.summary(outcome, computed),
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
    summary += store_warnings(stores.read_status(loc))
    if failures:
        summary.append("rerun the same command to retry the failed cells")
    say("\n".join(summary))
    return 1 if failures else 0


def store_warnings(ds: xr.Dataset) -> list[str]:
    """Summary lines warning about finished cells whose numbers need care: an exact escape
    time with a large grid error, chains lost off the grid (> LOST_FLAG), too few escapes
    for ``escape_time_mle`` (``status`` lists the cells)."""
    out = []
    cells = schema.escape_error_cells(ds)
    if cells:
        worst = max(err for _, err in cells)
        out.append(f"escape     : {len(cells)} cell(s) have escape_time_exact_error > "
                   f"{schema.ESCAPE_ERROR_FLAG:.0%} (worst {worst:.1%}); refine the density grid or raise "
                   "fp.refine (python -m pipeline status lists them)")
    lost = schema.lost_cells(ds)
    if lost:
        out.append(f"lost       : {schema.lost_summary(lost)} (python -m pipeline status lists them)")
    few = schema.few_escape_cells(ds)
    if few:
        out.append(f"escapes    : {len(few)} method(s) × cell(s) with fewer than {schema.MIN_ESCAPES} "
                   "escapes: too few for escape_time_mle (python -m pipeline status lists them)")
    return out


def _printer(out: TextIO) -> Any:
    def say(msg: str) -> None:
        out.write(msg + "\n")
        out.flush()
    return say


def _execute(client: Any, prep: Prepared, writer: stores.CellWriter, progress: Progress,
             outcome: Outcome) -> None:
    """Submit, collect and write; adds cell runtimes and write times to ``outcome``."""
    plan, mode = prep.plan, prep.writer
    retries = int(prep.run.retries)
    isolated = writers.ClientWriter()  # a failing task's cells, one per task, written here

    def written(cells: list[tuple[tuple[int, ...], bool]]) -> None:
        for _, ok in cells:  # durable now: the progress and the run's record count these
            progress.update(ok)
            outcome.failed += not ok

    feed = mode.tasks(prep.todo, plan, writer, client, prep.run.cells_per_task)
    futures = {mode.submit(client, plan, prep.loc, b, retries): (b, mode) for b in feed.first()}
    queue = as_completed(list(futures))
    try:
        for fut in queue:
            batch, how = futures.pop(fut)
            for b in feed.more(len(futures)):
                g = mode.submit(client, plan, prep.loc, b, retries)
                futures[g] = (b, mode)
                queue.add(g)
            if fut.status == "error":
                exc = fut.exception()
                fut.release()
                if len(batch) > 1:  # isolate the failing cell(s); their results are written here
                    writer.expect([plan.index(i) for i in batch])
                    for i in batch:
                        g = isolated.submit(client, plan, prep.loc, [i], retries)
                        futures[g] = ([i], isolated)
                        queue.add(g)
                    continue
                msg = error_text(exc)
                outcome.failures[batch[0]] = msg
                written(writer.fail(plan.index(batch[0]), msg))
                continue
            results = fut.result()
            fut.release()
            how.receive(results, plan, writer, feed, outcome, written)
    finally:  # what finished is written, also on Ctrl-C (SIGKILL loses it: recomputed on resume)
        tw = time.perf_counter()
        written(writer.flush())
        outcome.write_time += time.perf_counter() - tw
