"""How many cells one sweep store may hold, checked before any cell is planned, and how
much memory one cell may need, checked before any is computed.

Planning validates every cell (``parse_cell``); without interpolations in the
cells' config that costs about 0.3–0.7 ms a cell (2.2 ms with them), and a
sharded store holds ~0.03 files per cell (benchmarks/README.md). Above
:data:`MAX_CELLS` a single client and store stop being reasonable (minutes of
planning, a client holding every parsed cell), so a larger grid is refused up
front with the limit, instead of running for hours with no output. Split such a
grid over several stores.

A cell whose estimated memory (its layout: densities over methods × snapshots × cells,
the landscape on the grid, the refined FP grid, the chains) exceeds what a worker process
has is refused with the field to change (:func:`check_cell_memory`), instead of a worker
killed by the kernel's out-of-memory killer with nothing said.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

from sgdsweep.errors import ConfigError

MAX_CELLS = 100_000


def check_cell_count(axes: Sequence[Any]) -> None:
    """Raise ConfigError when the grid of ``axes`` (each with ``.values``) exceeds MAX_CELLS."""
    n = math.prod(len(a.values) for a in axes)
    if n > MAX_CELLS:
        shape = " x ".join(f"{a.name}[{len(a.values)}]" for a in axes)
        raise ConfigError(f"grid: {n} cells ({shape}) exceeds the limit of {MAX_CELLS} cells per store; "
                          "split the sweep over several stores")


def worker_memory(cluster: Any) -> tuple[int, str]:
    """(bytes, how): the memory one cell may use — a worker process's share as the cluster
    settings give it, and at most this machine's memory (the client builds the cell's
    template here too)."""
    from dask.utils import parse_bytes
    from distributed.system import MEMORY_LIMIT

    here = (int(MEMORY_LIMIT), "this machine's memory")
    kind = getattr(cluster, "kind", None)
    if kind == "local":
        workers = cluster.n_workers or len(os.sched_getaffinity(0))
        spec = cluster.memory_limit
        if spec in (None, "auto"):
            share = int(MEMORY_LIMIT) // workers
            return min((share, f"a worker's share: this machine's {_gib(MEMORY_LIMIT)} / {workers} "
                               "workers, cluster.memory_limit=auto"), here)
        limit = parse_bytes(spec) if isinstance(spec, str) else int(spec)
        return min(((limit, "per worker, cluster.memory_limit") if limit > 0 else here), here)
    if kind in ("slurm", "pbs"):
        processes = cluster.processes or cluster.cores
        share = parse_bytes(str(cluster.memory)) // processes
        return share, f"per worker: cluster.memory / {processes} processes"
    return here


def check_cell_memory(cells: Sequence[Any], cluster: Any) -> None:
    """Raise ConfigError naming the field when a cell's estimated memory
    (:func:`sgdsweep.cell.layout.cell_memory`, a lower bound) exceeds :func:`worker_memory`:
    refused before anything is computed or created, instead of the kernel's OOM killer."""
    from sgdsweep.cell.config import CellConfig
    from sgdsweep.cell.layout import cell_memory, check_memory

    seen = {}
    for cell in cells:
        # cells differ in swept values; the size depends on a few of them
        if isinstance(cell, CellConfig):
            key = (cell.landscape.n, cell.fp_refine, cell.chains, len(cell.landscape.basins or ()))
        else:  # a model cell
            key = ("model", cell.model.n, cell.model.d, cell.chains, cell.models.max_cov_dim)
        if key not in seen:
            seen[key] = cell
    if not seen:
        return
    limit, how = worker_memory(cluster)
    check_memory(max(seen.values(), key=lambda c: cell_memory(c).bytes), limit, how)


def _gib(n: float) -> str:
    from dask.utils import format_bytes

    return format_bytes(int(n))
