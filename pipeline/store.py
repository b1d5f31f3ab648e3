"""The Zarr store of a sweep: template, per-cell region writes, resume, provenance.

Layout (zarr format 3, opened with plain ``xarray.open_zarr``): the sweep axes come
first, then the cell's own dimensions (x, t, method, kind, basin, …); chunk size 1
along every sweep axis and whole along the cell dimensions, so one cell is one
chunk of each variable. Bookkeeping per cell: ``done`` (bool), ``error`` (the
failure message, "" if none) and ``runtime`` (seconds, from run_cell).

Write discipline: the template (metadata and coordinates only) is written once;
one process — the sweep's client — writes every cell into its own chunks, data
first and ``done`` last; metadata is consolidated once at the end of a run.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr
import zarr

from pipeline import faults, integrity, lock
from pipeline.config import SweepPlan
from sgdsweep.errors import ConfigError
from sgdsweep.schema import ATTRS, DONE, ERROR, ERROR_CHARS, RUNTIME

ZARR_FORMAT = 3
VERSIONED = ("sgdsweep", "numpy", "numba", "xarray", "zarr", "dask", "distributed", "hydra-core")


@contextlib.contextmanager
def quiet_zarr() -> Iterator[None]:
    """Fixed-width strings are a zarr v3 extension dtype; its warning is noise here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=zarr.errors.UnstableSpecificationWarning)
        warnings.filterwarnings("ignore", message=".*consolidated metadata.*")
        warnings.filterwarnings("ignore", message=".*sweep.lock.* not recognized")  # pipeline.lock
        yield


# --------------------------------------------------------------------------- template


def union_template(templates: Sequence[xr.Dataset]) -> xr.Dataset:
    """One cell layout for the whole sweep.

    All cells must share every coordinate except ``basin``, whose labels may
    depend on swept landscape parameters: the store holds their union (in order
    of first appearance) and cells lacking a basin get NaN there.
    """
    first = templates[0]
    basins: list[Any] = []
    for t in templates:
        if set(t.data_vars) != set(first.data_vars):
            raise ConfigError("grid: cells of this sweep produce different variables; "
                              "sweep parameters that keep the cell layout fixed")
        for name, coord in t.coords.items():
            if name == "basin":
                basins += [b for b in coord.values.tolist() if b not in basins]
            elif name not in first.coords or not np.array_equal(coord.values, first[name].values):
                raise ConfigError(f"grid: the swept values change the cell coordinate {name!r}; "
                                  "only parameters that keep it fixed can be swept")
    if "basin" in first.coords and basins != first.basin.values.tolist():
        first = first.reindex(basin=basins)
    # Cell attrs that differ between cells (e.g. a swept sampling) are not sweep-wide facts.
    first = first.copy()
    first.attrs = {k: v for k, v in first.attrs.items()
                   if all(k in t.attrs and np.array_equal(t.attrs[k], v) for t in templates)}
    return first


def build_template(plan: SweepPlan, cell: xr.Dataset, attrs: Mapping[str, Any]) -> xr.Dataset:
    """The lazily filled (dask) dataset whose metadata becomes the store."""
    sweep_dims = tuple(a.name for a in plan.axes)
    shape = plan.shape
    ones = (1,) * len(shape)
    data_vars = {}
    for name, var in cell.data_vars.items():
        fill = False if var.dtype == bool else (0 if var.dtype.kind in "iu" else np.nan)
        arr = da.full(shape + var.shape, fill, dtype=var.dtype, chunks=ones + var.shape)
        data_vars[name] = xr.Variable(sweep_dims + var.dims, arr, attrs=dict(var.attrs))
    if RUNTIME not in data_vars:
        data_vars[RUNTIME] = xr.Variable(sweep_dims, da.full(shape, np.nan, chunks=ones),
                                         attrs=ATTRS[RUNTIME])
    data_vars[DONE] = xr.Variable(sweep_dims, da.zeros(shape, dtype=bool, chunks=ones), attrs=ATTRS[DONE])
    data_vars[ERROR] = xr.Variable(sweep_dims, da.full(shape, "", dtype=f"<U{ERROR_CHARS}", chunks=ones),
                                   attrs=ATTRS[ERROR])
    coords: dict[str, Any] = {}
    for a in plan.axes:
        axis_attrs = {"long_name": f"swept config value {a.path}", "config_path": a.path}
        coords[a.name] = xr.Variable((a.name,), np.asarray(a.values), attrs=axis_attrs)
    for name, c in cell.coords.items():
        coords[name] = c.variable
    return xr.Dataset(data_vars, coords=coords, attrs=dict(attrs))


# --------------------------------------------------------------------------- provenance


def provenance(plan: SweepPlan, cell_attrs: Mapping[str, Any], argv: Sequence[str]) -> dict[str, Any]:
    """Store attrs: resolved config, versions, commit, command line, times, hash."""
    versions = {}
    for pkg in VERSIONED:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[pkg] = metadata.version(pkg)
    attrs: dict[str, Any] = {
        k: (v.item() if isinstance(v, np.generic) else v) for k, v in cell_attrs.items()
        if isinstance(v, str | int | float | bool | np.generic)
    }
    attrs.update({
        "title": "sgdsweep parameter sweep",
        "sweep_dims": [a.name for a in plan.axes],
        "sweep_paths": json.dumps({a.name: a.path for a in plan.axes}),
        "config": plan.resolved_yaml,
        "config_hash": plan.config_hash,
        "versions": json.dumps(versions),
        "git_commit": git_commit(),
        "command_line": " ".join([Path(sys.executable).name, "-m", "pipeline", *argv]),
        "created": now(),
        "Conventions": "CF-1.10",
    })
    return attrs


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def git_commit() -> str:
    """HEAD of the checkout holding this package ("+dirty" if modified), or ""."""
    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                              text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""
    return head + ("+dirty" if dirty else "")


# --------------------------------------------------------------------------- existing stores


@dataclass
class StoreState:
    """What a run finds at the store path before it starts."""

    exists: bool
    done: np.ndarray | None = None  # bool, sweep shape


def inspect(path: str | Path, plan: SweepPlan, overwrite: bool) -> StoreState:
    """Check the store path without changing anything (raises ConfigError).

    A store of the same sweep (same config hash) is resumed; anything else at the
    path is refused unless ``overwrite``.
    """
    path = Path(path)
    if not path.exists():
        parent = _existing_parent(path)
        if not parent.is_dir():
            raise ConfigError(f"store: cannot create {path}: {parent} is not a directory")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise ConfigError(f"store: cannot create {path}: {parent} is not writable")
        return StoreState(exists=False)
    if overwrite:
        if not os.access(path.parent, os.W_OK | os.X_OK):
            raise ConfigError(f"store: cannot replace {path}: {path.parent} is not writable")
        return StoreState(exists=True)
    try:
        with quiet_zarr():
            group = zarr.open_group(str(path), mode="r")
            old_hash = group.attrs.get("config_hash")
            # A chunk that does not decode reads as not done (integrity: recomputed).
            done = (np.asarray(integrity.read_cells(group[DONE], len(group[DONE].shape), False), dtype=bool)
                    if old_hash else None)
    except Exception:
        raise ConfigError(f"store: {path} exists and is not a sweep store; choose another store= "
                          "or pass overwrite=true to replace it") from None
    if old_hash != plan.config_hash:
        raise ConfigError(f"store: {path} holds a different sweep (config hash {str(old_hash)[:12]} "
                          f"!= {plan.config_hash[:12]}); pass overwrite=true to replace it "
                          "or choose another store=")
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(f"store: {path} is not writable")
    return StoreState(exists=True, done=done)


def _existing_parent(path: Path) -> Path:
    p = path.absolute().parent
    while not p.exists():
        p = p.parent
    return p


def create(path: str | Path, template: xr.Dataset, replace: bool) -> None:
    """Write the template's metadata and coordinates (no cell data) to ``path``."""
    path = Path(path)
    if replace and path.exists():
        if path.is_dir():  # everything but the lock this run holds
            for p in path.iterdir():
                if p.name != lock.LOCK_NAME:
                    shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
        else:
            path.unlink()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with quiet_zarr():
            # A directory holding only this run's lock is empty to us: zarr's "w-" would refuse it.
            mode = "a" if path.is_dir() and not lock.others_in(path) else "w-"
            integrity.with_checksums(template).to_zarr(str(path), mode=mode, compute=False,
                                                       zarr_format=ZARR_FORMAT, consolidated=False)
    except OSError as exc:
        raise ConfigError(f"store: cannot create {path}: {exc.strerror or exc}") from None


# --------------------------------------------------------------------------- writing cells


class CellWriter:
    """Writes finished cells into their chunks; the only writer of a store.

    Each cell is written straight into the zarr arrays (one chunk per variable,
    aligned with the template's chunks) — the same bytes as an xarray region
    write, without re-reading the store's metadata for every cell.
    """

    def __init__(self, path: str | Path, template: xr.Dataset, sweep_dims: Sequence[str]):
        self.path = str(path)
        with quiet_zarr():
            self.group = zarr.open_group(self.path, mode="r+")
        self.k = len(sweep_dims)
        self.layout = {name: (tuple(var.dims[self.k:]), var.dtype)
                       for name, var in template.data_vars.items()}
        self.arrays = {name: self.group[name] for name in self.layout}
        self.basins = template["basin"].values.tolist() if "basin" in template.coords else None
        self.coords = {name: template[name].values for name in template.coords if name not in sweep_dims}

    def write(self, index: tuple[int, ...], cell: xr.Dataset) -> None:
        """Write one cell's variables, then mark it done."""
        if self.basins is not None and "basin" in cell.coords and cell.basin.values.tolist() != self.basins:
            cell = cell.reindex(basin=self.basins)
        for name, values in self.coords.items():
            if name in cell.coords and not np.array_equal(cell[name].values, values):
                raise ValueError(f"cell coordinate {name!r} differs from the store's")
        with quiet_zarr(), faults.store_writes(self.path, f"the cell {index}"):
            for name, (dims, dtype) in self.layout.items():
                if name in (DONE, ERROR):
                    continue
                if name not in cell:
                    raise ValueError(f"cell result lacks variable {name!r}")
                self.arrays[name][index] = np.asarray(cell[name].transpose(*dims).values, dtype=dtype)
            faults.after_data_written()
            self.arrays[ERROR][index] = ""
            self.arrays[DONE][index] = True

    def fail(self, index: tuple[int, ...], message: str) -> None:
        with quiet_zarr(), faults.store_writes(self.path, f"the failure of the cell {index}"):
            self.arrays[ERROR][index] = message[:ERROR_CHARS]
            self.arrays[DONE][index] = False

    def finish(self, extra_attrs: Mapping[str, Any]) -> None:
        """Update attrs and consolidate metadata (once, at the end of a run)."""
        with quiet_zarr(), faults.store_writes(self.path, "the run record"):
            self.group.attrs.update(dict(extra_attrs))
            zarr.consolidate_metadata(self.path)


def read_status(path: str | Path) -> xr.Dataset:
    """The store opened lazily with xarray (consolidated metadata if present)."""
    with quiet_zarr():
        try:
            return xr.open_zarr(str(path), consolidated=True)
        except (KeyError, ValueError, FileNotFoundError):
            return xr.open_zarr(str(path), consolidated=False)
