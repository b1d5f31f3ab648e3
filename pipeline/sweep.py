"""Run a sweep: validate every cell, prepare the store, map run_cell with Dask.

One client submits every cell (``cells_per_task`` cells per task), with Dask
retries; results are written by this process as they complete, so the store has
a single writer. A task that keeps failing is split into single-cell tasks; a
cell that still fails is recorded (``error``) and the sweep goes on. Exit
status: 0 all cells done, 1 some failed, 2 bad input.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO

import xarray as xr
from distributed import as_completed
from omegaconf import DictConfig, OmegaConf

from pipeline import cluster as clusters
from pipeline import integrity
from pipeline import lock as locks
from pipeline import store as stores
from pipeline.config import SweepPlan, expand
from sgdsweep.errors import ConfigError


def compute_cells(cells: Sequence[tuple[int, dict[str, Any]]]) -> list[tuple[int, xr.Dataset]]:
    """The Dask task: run_cell for each (flat index, cell mapping)."""
    import sgdsweep

    return [(i, sgdsweep.run_cell(c)) for i, c in cells]


def templates(plan: SweepPlan) -> xr.Dataset:
    """The union cell layout; ``cell_template`` is cheap, run once per distinct landscape."""
    import sgdsweep

    seen: dict[str, xr.Dataset] = {}
    for cell in plan.cells:
        key = json.dumps({k: v for k, v in cell.items() if k not in ("lr", "batch_size", "seed")},
                         sort_keys=True, default=repr)
        if key not in seen:
            seen[key] = sgdsweep.cell_template(cell)
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

    def update(self, ok: bool, force: bool = False) -> None:
        if ok:
            self.done += 1
        else:
            self.failed += 1
        self.show(force)

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


def run_sweep(cfg: DictConfig, argv: Sequence[str], out: TextIO = sys.stdout) -> int:
    """The ``sweep`` command on a composed config; raises ConfigError on bad input."""
    t0 = time.perf_counter()
    plain = OmegaConf.to_container(cfg, resolve=True)
    clusters.check(plain["cluster"])
    for key in ("cells_per_task", "retries"):
        if plain[key] < (1 if key == "cells_per_task" else 0):
            raise ConfigError(f"{key}: must be >= {1 if key == 'cells_per_task' else 0}, got {plain[key]}")
    path = plain["store"]
    # Everything is validated before the store is touched.
    plan = expand(cfg, reserved={"x", "y", "t", "method", "kind", "basin", "axis"})
    cell = templates(plan)
    plan_dims = {a.name for a in plan.axes}
    clash = plan_dims & (set(cell.data_vars) | set(stores.BOOKKEEPING))
    if clash:
        raise ConfigError(f"grid: axis name {sorted(clash)[0]!r} clashes with a store variable")
    state = stores.inspect(path, plan, overwrite=bool(plain["overwrite"]))
    # One sweep per store (held until the CLI exits); a done cell with corrupt chunks is not done.
    locks.acquire(path, command=" ".join(argv), say=_printer(out))
    if state.exists or locks.others_in(path):
        state = stores.inspect(path, plan, overwrite=bool(plain["overwrite"]))
    if state.done is not None:
        state.done = integrity.recheck_done(path, state.done, _printer(out))

    started = stores.now()
    template = stores.build_template(plan, cell, stores.provenance(plan, cell.attrs, argv))
    if state.done is None:
        stores.create(path, template, replace=state.exists)
        todo = list(range(len(plan.cells)))
    else:
        todo = [i for i in range(len(plan.cells)) if not state.done.flat[i]]
    total = len(plan.cells)
    already = total - len(todo)
    say = _printer(out)
    say(f"sweep: {total} cells over {', '.join(f'{a.name}[{len(a.values)}]' for a in plan.axes)}"
        f" -> {path}" + (f" (resuming: {already} already done)" if already else ""))

    writer = stores.CellWriter(path, template, [a.name for a in plan.axes])
    failures: dict[int, str] = {}
    compute_time = write_time = 0.0
    interrupted = False
    if todo:
        progress = None
        try:
            with clusters.open_client(plain, say=say) as client:
                progress = Progress(total, already)
                t_submit = time.perf_counter()
                compute_time, write_time = _execute(client, plan, todo, plain, writer, progress, failures)
                t_run = time.perf_counter() - t_submit
        except KeyboardInterrupt:
            interrupted = True
        if progress is not None:
            progress.close()
    else:
        t_run = 0.0
    wall = time.perf_counter() - t0

    runs = json.loads(writer.group.attrs.get("runs", "[]"))
    runs.append({"command_line": template.attrs["command_line"], "started": started,
                 "finished": stores.now(), "computed": len(todo) - len(failures),
                 "failed": len(failures), "wall_time_s": round(wall, 3)})
    writer.finish({"runs": json.dumps(runs), "last_run_finished": stores.now()})
    if interrupted:
        say(f"interrupted; {path} holds the cells finished so far. Rerun the same command to resume.")
        return 130
    computed = len(todo) - len(failures)
    rate = computed / t_run if t_run else 0.0
    summary = [
        "",
        f"store      : {path}",
        f"cells      : {total} total, {computed} computed now, {already} already done, "
        f"{len(failures)} failed",
        f"wall time  : {wall:.1f} s ({t_run:.1f} s on the cluster; {rate:.2f} cells/s;"
        f" {compute_time:.1f} s of cell compute)",
        f"store write: {1e3 * write_time / max(computed, 1):.1f} ms per cell",
    ]
    for i, msg in list(failures.items())[:10]:
        where = ", ".join(f"{k}={v}" for k, v in plan.coords(i).items())
        summary.append(f"failed     : {where}: {msg}")
    if len(failures) > 10:
        summary.append(f"failed     : ... and {len(failures) - 10} more (python -m pipeline status {path})")
    summary += [
        f"open it    : python -c \"import xarray as xr; print(xr.open_zarr('{path}'))\"",
        f"report     : python -m pipeline report {path}",
    ]
    if failures:
        summary.append("rerun the same command to retry the failed cells")
    say("\n".join(summary))
    return 1 if failures else 0


def _printer(out: TextIO) -> Any:
    def say(msg: str) -> None:
        out.write(msg + "\n")
        out.flush()
    return say


def _execute(client: Any, plan: SweepPlan, todo: list[int], plain: dict[str, Any],
             writer: stores.CellWriter, progress: Progress, failures: dict[int, str]) -> tuple[float, float]:
    """Submit, collect and write; returns (summed cell runtime, summed write time) in s."""
    per_task = int(plain["cells_per_task"])
    retries = int(plain["retries"])
    h = plan.config_hash[:10]

    def submit(batch: list[int]) -> Any:
        return client.submit(compute_cells, [(i, plan.cells[i]) for i in batch], retries=retries,
                             pure=False, key=f"cells-{h}-{batch[0]}-{len(batch)}")

    batches = [todo[k:k + per_task] for k in range(0, len(todo), per_task)]
    futures = {submit(b): b for b in batches}
    compute_time = write_time = 0.0
    queue = as_completed(list(futures))
    for fut in queue:
        batch = futures.pop(fut)
        if fut.status == "error":
            exc = fut.exception()
            fut.release()
            if len(batch) > 1:  # isolate the failing cell(s)
                for i in batch:
                    g = submit([i])
                    futures[g] = [i]
                    queue.add(g)
                continue
            msg = error_text(exc)
            failures[batch[0]] = msg
            writer.fail(plan.index(batch[0]), msg)
            progress.update(False)
            continue
        results = fut.result()
        fut.release()
        for i, ds in results:
            compute_time += float(ds["runtime"]) if "runtime" in ds else 0.0
            tw = time.perf_counter()
            try:
                writer.write(plan.index(i), ds)
            except ValueError as exc:
                failures[i] = f"write: {exc}"
                writer.fail(plan.index(i), failures[i])
                progress.update(False)
                continue
            write_time += time.perf_counter() - tw
            progress.update(True)
    return compute_time, write_time

