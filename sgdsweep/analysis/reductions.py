"""Opening a sweep store, and the per-cell NumPy reductions the ``ds.sgd`` accessor maps lazily.

The reductions act on the last axis (the density grid ``x``) of arrays of any
leading shape, like :mod:`sgdsweep.analysis.metrics`, so ``xarray.apply_ufunc`` can run
them chunk by chunk on Dask-backed stores.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from sgdsweep.cell.schema import DONE
from sgdsweep.landscapes.basins import find_basins

#: Variables every sweep store (and every 1-D cell) holds; used to recognise one.
SWEEP_VARIABLES = ("density", DONE)


def open_sweep(path: str | Path | Any, storage_options: dict[str, Any] | None = None) -> xr.Dataset:
    """Open a sweep store lazily (Dask-backed), as plain ``xarray.open_zarr`` would, with
    a shard of cells per Dask chunk (``shard_chunks``) instead of one cell.

    ``path`` is a local path, an fsspec URL (``s3://bucket/sweep.zarr``, with its
    ``storage_options``: endpoint, credentials) or a zarr store object.
    Uses the consolidated metadata when the sweep wrote it (a finished run) and
    reads the arrays' own metadata otherwise (a sweep still running or interrupted).
    Raises ``FileNotFoundError`` for a missing local path and ``ValueError`` when the
    path is not a sweep store.
    """
    local = isinstance(path, Path) or (isinstance(path, str) and "://" not in path)
    if local:
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such store")
    target = str(path) if local else path
    opts = {} if local or not storage_options else {"storage_options": storage_options}
    with warnings.catch_warnings():
        # Fixed-width strings (the ``error`` variable) are a zarr-3 extension dtype.
        warnings.filterwarnings("ignore", message=".*(consolidated|UnstableSpecification|not part of).*")
        warnings.filterwarnings("ignore", category=UserWarning, module="zarr")
        try:
            try:
                ds = xr.open_zarr(target, consolidated=True, chunks=None, **opts)
                consolidated = True
            except (KeyError, ValueError, FileNotFoundError):
                ds = xr.open_zarr(target, consolidated=False, chunks=None, **opts)
                consolidated = False
        except Exception as exc:
            raise ValueError(f"{path}: not a Zarr store ({type(exc).__name__}: {exc})") from None
        missing = [v for v in SWEEP_VARIABLES if v not in ds.variables]
        if missing:
            raise ValueError(f"{path}: not a sweep store (no {missing[0]!r} variable)")
        ds = xr.open_zarr(target, consolidated=consolidated, chunks=shard_chunks(ds), **opts)
        if not isinstance(target, str):
            return ds  # a zarr store object: zarr reads it (no URL for the tasks to reopen)
        return _decode_by_shard(target, ds, storage_options if not local else None)


def _decode_by_shard(path: str, ds: xr.Dataset, storage_options: dict[str, Any] | None) -> xr.Dataset:
    """``ds`` with each cell variable of a sharded store read by :mod:`sgdsweep.store.shards`
    (same values, a shard per task, ~15x faster than zarr's sharding codec)."""
    import zarr
    from xarray.core import indexing

    dims = ds.attrs.get("sweep_dims", [])
    if not ([dims] if isinstance(dims, str) else list(dims)):
        return ds
    group = zarr.open_group(path, mode="r", storage_options=storage_options)
    token = f"{time.time_ns()}"  # a store reopened after a resume is other data
    new = {}
    for name, (var, backend) in _by_shard(group, ds, ds.data_vars).items():
        lazy = xr.Variable(var.dims, indexing.LazilyIndexedArray(backend), var.attrs, var.encoding)
        new[name] = lazy.chunk(dict(zip(var.dims, var.chunks, strict=True)), name=f"{name}-{token}")
    return ds.assign(new) if new else ds


def _by_shard(group: Any, ds: xr.Dataset, names: Any) -> dict[str, tuple[xr.Variable, Any]]:
    """The variables among ``names`` that :func:`_decode_by_shard` reads by shard, each with
    its :class:`~sgdsweep.store.shards.ShardedArray`."""
    from sgdsweep.store import shards

    dims = ds.attrs.get("sweep_dims", [])
    dims = [dims] if isinstance(dims, str) else list(dims)
    k, out = len(dims), {}
    for name in names:
        var = ds[name].variable
        if k and list(var.dims[:k]) == dims and name in group:
            array = group[name]
            if shards.plain_sharding(array, k) is not None:
                out[name] = var, shards.ShardedArray(array, k)
    return out


def load_variables(path: str | Path | Any, ds: xr.Dataset, names: list[str],
                   storage_options: dict[str, Any] | None = None) -> dict[str, xr.Variable]:
    """The variables ``names`` of ``ds`` (:func:`open_sweep` of ``path``) read into memory.

    One read per variable for those read by shard — the same reads and checks as their
    Dask tasks (a damaged cell raises), without a task per shard: ~0.3 ms each, 0.7 s
    for the per-cell summaries of a 10⁵-cell store. The others (in memory already, or
    read by zarr) as ``.load()`` reads them.
    """
    import zarr
    from xarray.core import indexing

    local = isinstance(path, Path) or (isinstance(path, str) and "://" not in path)
    direct = {}
    if isinstance(path, (str, Path)):
        group = zarr.open_group(str(path), mode="r", storage_options=None if local else storage_options)
        for name, (var, backend) in _by_shard(group, ds, names).items():
            if var.chunks is not None and var.shape == backend.shape:  # as opened, not replaced
                whole = indexing.BasicIndexer((slice(None),) * var.ndim)
                direct[name] = xr.Variable(var.dims, backend[whole], var.attrs, var.encoding)
    rest = [name for name in names if name not in direct]
    loaded = ds[rest].load().data_vars if rest else {}
    return {name: direct[name] if name in direct else loaded[name].variable for name in names}


def shard_chunks(ds: xr.Dataset) -> dict[str, int]:
    """Dask chunks of one shard along each dimension (``{}``: zarr's own chunks).

    A store's zarr chunk is one cell, so ``xr.open_zarr``'s default makes one Dask
    task per cell and variable — 10⁵ tasks for a 10⁵-cell sweep, where reading a
    variable whole takes minutes. A shard (one file, up to ~1024 cells) per task
    reads it in seconds.
    """
    out: dict[str, int] = {}
    for var in ds.variables.values():
        shards = var.encoding.get("shards")
        if shards:
            for dim, size in zip(var.dims, shards, strict=True):
                out[dim] = max(out.get(dim, 1), int(size))
    return out


def basin_labels(loss: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Index of the basin holding each grid cell: L split at its strict local maxima.

    The same split ``run_cell`` uses (:func:`sgdsweep.landscapes.basins.find_basins`) when the
    landscape does not name its basins; a cell on a boundary belongs to the right.
    """
    b = find_basins(np.asarray(x), np.asarray(loss))
    return np.searchsorted(b.edges, np.asarray(x), side="right")


def basin_integrals(density: np.ndarray, loss: np.ndarray, x: np.ndarray, dx: float,
                    n_basins: int) -> np.ndarray:
    """∫ p dθ over each basin of L (split at the local maxima of ``loss``), shape (..., n_basins).

    ``density`` and ``loss`` share the last axis ``x``; leading axes broadcast.
    Basins beyond those ``loss`` has are NaN; a cell whose loss is NaN (not computed)
    gives NaN everywhere.
    """
    density, loss = np.broadcast_arrays(np.asarray(density, float), np.asarray(loss, float))
    lead = density.shape[:-1]
    p2 = density.reshape(-1, density.shape[-1])
    l2 = loss.reshape(-1, loss.shape[-1])
    out = np.full((p2.shape[0], n_basins), np.nan)
    for i in range(p2.shape[0]):
        if not np.all(np.isfinite(l2[i])):
            continue
        lab = basin_labels(l2[i], x)
        for k in range(min(int(lab.max()) + 1, n_basins)):
            out[i, k] = p2[i, lab == k].sum() * dx
    return out.reshape((*lead, n_basins))


def fit_temperature(density: np.ndarray, loss: np.ndarray, x: np.ndarray | None = None,
                    basin: int | None = None, rel_floor: float = 1e-3) -> np.ndarray:
    """Effective temperature T from a weighted least-squares fit log p = c − L/T (last axis x).

    Cells enter the fit where p ≥ ``rel_floor``·max p — and, if ``basin`` is given,
    where :func:`basin_labels` of the row's loss (needs ``x``) equals it — each
    weighted by p, so sparse histogram tails count little. T = −1/slope of log p
    against L; NaN with fewer than three usable cells or a non-negative slope (no
    Gibbs-like decay). Exact for a Gibbs density p ∝ exp(−L/T).
    """
    density, loss = np.broadcast_arrays(np.asarray(density, float), np.asarray(loss, float))
    lead = density.shape[:-1]
    p2 = density.reshape(-1, density.shape[-1])
    l2 = loss.reshape(-1, loss.shape[-1])
    out = np.full(p2.shape[0], np.nan)
    for i in range(p2.shape[0]):
        p, L = p2[i], l2[i]
        if not (np.all(np.isfinite(p)) and np.all(np.isfinite(L))) or p.max() <= 0:
            continue
        use = p >= rel_floor * p.max()
        if basin is not None:
            use &= basin_labels(L, x) == basin
        if use.sum() < 3 or np.ptp(L[use]) == 0:
            continue
        w = p[use]
        Lu, yu = L[use], np.log(p[use])
        lm = np.average(Lu, weights=w)
        ym = np.average(yu, weights=w)
        slope = np.sum(w * (Lu - lm) * (yu - ym)) / np.sum(w * (Lu - lm) ** 2)
        if slope < 0:
            out[i] = -1.0 / slope
    return out.reshape(lead)
