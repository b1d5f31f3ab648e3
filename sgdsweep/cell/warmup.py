"""Compile a cell's kernels once, before a sweep fans out.

The compiled kernels (numba, ``cache=True``) are cached on disk after their first
compilation. On a fresh install every worker process that starts on a cold cache
compiles the same kernels at once (two workers on two cores: twice the work, each at
half speed). :func:`warmup_cells` splits a cell's methods into ``parts`` tiny cells
(a few chains, two SGD steps, the same grids and types, so the same kernel signatures)
that together compile every kernel of the cell once and write it to the cache; the
sweep runs them, one per worker, before the real cells, which then load the kernels
from the cache. :func:`kernels_cached` tells a cold cache from a warm one (a marker
file beside the cached kernels, written by :func:`mark_cached` after a warm-up; the
message "compiling kernels (first run)").
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from sgdsweep.cell.config import CellConfig
from sgdsweep.landscapes.landscape import Landscape
from sgdsweep.methods.registry import Method

#: Chains of a warm-up ensemble (the kernels' types do not depend on the count).
WARMUP_CHAINS = 4
#: SGD steps of a warm-up cell (t = η · step).
WARMUP_STEPS = 2


def _marker(cell: CellConfig) -> Path | None:
    """The file that records a finished warm-up of cells like ``cell`` (dimension, methods,
    sampling) in numba's cache directory, keyed by the numba version and the modification
    times of sgdsweep's sources (numba recompiles when a source changes; so does the
    warm-up). None when the kernels are not cached on disk."""
    import numba

    from sgdsweep.landscapes.landscape import _evaluate_points

    cache_dir = getattr(getattr(_evaluate_points, "_cache", None), "_cache_path", None)
    if not cache_dir:
        return None
    package = Path(__file__).resolve().parents[1]
    stamp = max((p.stat().st_mtime_ns for p in package.rglob("*.py")), default=0)
    key = repr((cell.dim, cell.methods, cell.sampling, numba.__version__, stamp))
    return Path(cache_dir) / f"sgdsweep-warm-{hashlib.sha1(key.encode()).hexdigest()[:16]}"


def kernels_cached(cell: CellConfig) -> bool:
    """Whether a warm-up of cells like ``cell`` finished with this cache (False on a fresh
    install or with an empty ``NUMBA_CACHE_DIR``: the first run)."""
    marker = _marker(cell)
    return marker is not None and marker.exists()


def mark_cached(cell: CellConfig) -> None:
    """Record that the kernels of cells like ``cell`` are compiled and cached."""
    marker = _marker(cell)
    if marker is not None:
        try:
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.touch()
        except OSError:  # a read-only cache: the warm-up is repeated, nothing worse
            pass


def _family(m: Method) -> Any:
    """Methods whose compiled kernels are the same: the 1-D ensembles step with one of two
    kernels (minibatch gradients, or a drift with Gaussian noise); any other method is
    its own family."""
    from sgdsweep.montecarlo.kernels import MINIBATCH_KERNELS

    if m.kind == "ensemble" and m.kernel is not None:
        return "minibatch" if m.kernel in MINIBATCH_KERNELS else "noise"
    return m.name


def warmup_cells(cell: CellConfig, parts: int) -> list[CellConfig]:
    """``cell``'s methods dealt round-robin, a family of methods that share kernels
    (:func:`_family`) at a time, into at most ``parts`` tiny cells (same
    landscape, grids, batch size and sampling; :data:`WARMUP_CHAINS` chains,
    :data:`WARMUP_STEPS` SGD steps). Running each once compiles every kernel the cell
    needs; their results mean nothing."""
    if not isinstance(cell.landscape, Landscape):
        return []  # a model landscape: its cells compile their own kernels
    # The plain landscape of the same arrays (a subclass may evaluate differently, e.g. fail
    # on purpose): the kernels' types are those of the arrays.
    land = Landscape(**{f.name: getattr(cell.landscape, f.name) for f in dataclasses.fields(Landscape)})
    families: dict[Any, list[Method]] = {}
    for m in cell.method_specs:
        families.setdefault(_family(m), []).append(m)
    parts = max(1, min(int(parts), len(families)))
    steps = np.array([0, WARMUP_STEPS], dtype=np.int64)
    out = []
    for k in range(parts):
        specs = tuple(m for fam in list(families.values())[k::parts] for m in fam)
        out.append(dataclasses.replace(
            cell, landscape=land, methods=tuple(m.name for m in specs), method_specs=specs,
            times=steps * cell.lr, steps=steps, chains=min(cell.chains, WARMUP_CHAINS)))
    return out
