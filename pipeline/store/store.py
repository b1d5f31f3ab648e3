"""The Zarr store of a sweep: template, per-cell region writes, resume, provenance.

Layout (zarr format 3, opened with plain ``xarray.open_zarr``): the sweep axes come
first, then the cell's own dimensions (x, t, method, kind, basin, …); chunk size 1
along every sweep axis and whole along the cell dimensions, so one cell is one
(inner) chunk of each variable. Chunks are grouped into Zarr v3 *shards* of about
:data:`SHARD_CELLS` cells (one file per shard and variable, not per cell: a
10⁵-cell sweep makes a few thousand files, not millions); a single cell is still
read alone (the shard index gives its byte range). Bookkeeping per cell: ``done``
(bool), ``error`` (the failure message, "" if none) and ``runtime`` (seconds).

Write discipline: the template (metadata and coordinates only) is written once;
one process — the sweep's client — writes every cell. Writing into a shard
rewrites the whole shard (read–modify–write), so two writers must never share a
shard, and the writer buffers finished cells and writes a shard's block of cells
at once: data first and ``done`` last, when every expected cell of the shard has
arrived or every :data:`FLUSH_SECONDS`. A cell is ``done`` only once written; a
buffered cell lost with the process is simply recomputed on resume. Metadata is
consolidated when the store is created, on resume and at the end of a run
(:func:`consolidate`), so a plain ``xarray.open_zarr`` reads it from one file.

The store lives in a local directory or at an fsspec URL (``s3://bucket/sweep.zarr``):
every function here takes its :class:`~pipeline.store.location.Location` and reaches the
store only through it (files for a path, objects for a URL).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dask.array as da
import numpy as np
import xarray as xr
import zarr
from xarray.coding.strings import create_vlen_dtype

from pipeline.run import faults
from pipeline.run.settings import RunConf
from pipeline.store import integrity, location, lock
from pipeline.store import metadata as store_metadata
from pipeline.store.location import Location
from sgdsweep.analysis.reductions import open_sweep
from sgdsweep.cell.schema import ATTRS, DONE, ERROR, ERROR_CHARS, RUNTIME, UNION_COORDS
from sgdsweep.errors import ConfigError
from sgdsweep.store import shards

if TYPE_CHECKING:  # annotations only: pipeline.config brings Hydra (~0.2 s); reading a store does not
    from pipeline.config import SweepPlan

ZARR_FORMAT = 3
#: Cells per shard (at most), ``shard_cells``'s default: with ~25 variables, ≤ 0.025 chunk files per cell.
SHARD_CELLS = RunConf.shard_cells
#: Longest time a finished cell waits in the writer's buffer before it is written.
FLUSH_SECONDS = 10.0
VERSIONED = ("sgdsweep", "numpy", "numba", "xarray", "zarr", "dask", "distributed", "hydra-core")


@contextlib.contextmanager
def quiet_zarr() -> Iterator[None]:
    """Zarr's warnings that are noise here: the fixed-width strings of stores made before
    strings were variable-length UTF-8 (an unstable zarr v3 extension), a store without
    consolidated metadata (one still being created), the store's lock file."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=zarr.errors.UnstableSpecificationWarning)
        warnings.filterwarnings("ignore", message=".*consolidated metadata.*")
        warnings.filterwarnings("ignore", message=".*sweep.lock.* not recognized")  # pipeline.store.lock
        yield


# --------------------------------------------------------------------------- template


def union_template(templates: Sequence[xr.Dataset]) -> xr.Dataset:
    """One cell layout for the whole sweep.

    All cells must share every coordinate except ``basin``, whose labels may
    depend on swept landscape parameters: the store holds their union (in order
    of first appearance) and cells lacking a basin get NaN there.
    """
    first = templates[0]
    unions: dict[str, list[Any]] = {name: [] for name in UNION_COORDS if name in first.coords}
    for t in templates:
        if set(t.data_vars) != set(first.data_vars):
            raise ConfigError("grid: cells of this sweep produce different variables; "
                              "sweep parameters that keep the cell layout fixed")
        for name, coord in t.coords.items():
            if name in unions:
                unions[name] += [b for b in coord.values.tolist() if b not in unions[name]]
            elif name not in first.coords or not np.array_equal(coord.values, first[name].values):
                raise ConfigError(f"grid: the swept values change the cell coordinate {name!r}; "
                                  "only parameters that keep it fixed can be swept")
    changed = {name: labels for name, labels in unions.items() if labels != first[name].values.tolist()}
    if changed:
        first = first.reindex(changed)
    # Cell attrs that differ between cells (e.g. a swept sampling) are not sweep-wide facts.
    first = first.copy()
    first.attrs = {k: v for k, v in first.attrs.items()
                   if all(k in t.attrs and np.array_equal(t.attrs[k], v) for t in templates)}
    return first


def shard_shape(shape: Sequence[int], cells: int = SHARD_CELLS) -> tuple[int, ...]:
    """Shard extent along the sweep axes: whole trailing axes first, at most ``cells`` cells.

    The last axis varies fastest in the flat cell order, so a shard is a run of
    consecutive cells (what one batch of tasks computes together).
    """
    out = [1] * len(shape)
    room = max(1, cells)
    for k in range(len(shape) - 1, -1, -1):
        out[k] = max(1, min(shape[k], room))
        room //= out[k]
        if room <= 1:
            break
    return tuple(out)


def build_template(plan: SweepPlan, cell: xr.Dataset, attrs: Mapping[str, Any],
                   shard_cells: int = SHARD_CELLS,
                   plain_cell_bytes: int = integrity.PLAIN_CELL_BYTES) -> xr.Dataset:
    """The lazily filled (dask) dataset whose metadata becomes the store.

    Inner chunks hold one cell; shards hold :func:`shard_shape` cells (``shard_cells=1``:
    no sharding, one file per cell and variable, the layout of older stores). Numeric
    cells of at most ``plain_cell_bytes`` are stored uncompressed
    (:func:`pipeline.store.integrity.with_checksums`; 0: every cell compressed, the
    layout of older stores).
    """
    sweep_dims = tuple(a.name for a in plan.axes)
    shape = plan.shape
    # The layout, for a rebuild of the metadata (pipeline.store.repair).
    attrs = {**attrs, "shard_cells": int(shard_cells), integrity.PLAIN_ATTR: int(plain_cell_bytes)}
    ones = (1,) * len(shape)
    shard = shard_shape(shape, shard_cells)

    def variable(dims: tuple[str, ...], cell_shape: tuple[int, ...], fill: Any, dtype: Any,
                 var_attrs: Mapping[str, Any]) -> xr.Variable:
        arr = da.full(shape + cell_shape, fill, dtype=dtype, chunks=shard + cell_shape)
        v = xr.Variable(sweep_dims + dims, arr, attrs=dict(var_attrs))
        v.encoding = {"chunks": ones + cell_shape}
        if shard != ones:
            v.encoding["shards"] = shard + cell_shape
        return v

    data_vars = {}
    for name, var in cell.data_vars.items():
        fill = False if var.dtype == bool else (0 if var.dtype.kind in "iu" else np.nan)
        data_vars[name] = variable(var.dims, var.shape, fill, var.dtype, var.attrs)
    if RUNTIME not in data_vars:
        data_vars[RUNTIME] = variable((), (), np.nan, float, ATTRS[RUNTIME])
    data_vars[DONE] = variable((), (), False, bool, ATTRS[DONE])
    data_vars[ERROR] = variable((), (), "", STRING, ATTRS[ERROR])
    coords: dict[str, Any] = {}
    for a in plan.axes:
        axis_attrs = {"long_name": f"swept config value {a.path}", "config_path": a.path}
        coords[a.name] = portable(xr.Variable((a.name,), np.asarray(a.values), attrs=axis_attrs))
    for name, c in cell.coords.items():
        coords[name] = portable(c.variable)
    return xr.Dataset(data_vars, coords=coords, attrs=dict(attrs))


#: Strings in the store: Zarr v3's variable-length UTF-8 ``string`` data type (``vlen-utf8``
#: codec), registered in zarr-extensions; numpy's fixed-width ``<U`` would be written as
#: ``fixed_length_utf32``, which has no v3 specification and other readers refuse.
STRING = create_vlen_dtype(str)


def portable(var: xr.Variable) -> xr.Variable:
    """``var`` with fixed-width strings (``<U``) as :data:`STRING`; other variables as they are."""
    if var.dtype.kind != "U":
        return var
    return xr.Variable(var.dims, np.asarray(var.values, dtype=STRING), var.attrs, var.encoding)


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
        "command_line": " ".join([Path(sys.executable).name, "-m", "pipeline", *location.redact_args(argv)]),
        "created": now(),
        "Conventions": "CF-1.10",
        integrity.EVERY_CHUNK: True,  # CellWriter stores every chunk: one absent is data lost
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


def inspect(loc: Location, plan: SweepPlan, overwrite: bool) -> StoreState:
    """Check the store's place without changing anything (raises ConfigError).

    A store of the same sweep (same config hash) is resumed; anything else at the
    place is refused unless ``overwrite``.
    """
    # Only a lock there: a sweep is starting (its lock refuses us next) or died before the template.
    if not loc.exists() or (loc.is_dir("") and not lock.others_in(loc)):
        loc.check_creatable()
        return StoreState(exists=False)
    if overwrite:
        loc.check_writable(replace=True)
        return StoreState(exists=True)
    shown = loc.show()
    try:
        with quiet_zarr():
            group = zarr.open_group(loc.zarr_store, mode="r")
            old_hash = group.attrs.get("config_hash")
            # A chunk that does not decode reads as not done (integrity: recomputed).
            done = (np.asarray(integrity.read_cells(group[DONE], len(group[DONE].shape), False), dtype=bool)
                    if old_hash else None)
    except Exception:
        old_hash = None
    if old_hash is None:  # damaged metadata of a sweep store, or no sweep store at all
        damaged = store_metadata.explain(loc)
        if damaged:
            raise ConfigError(f"store: {damaged}; or pass overwrite=true to recompute the store")
        raise ConfigError(f"store: {shown} exists and is not a sweep store; choose another store= "
                          "or pass overwrite=true to replace it")
    if old_hash != plan.config_hash:
        raise ConfigError(f"store: {shown} holds a different sweep (config hash {str(old_hash)[:12]} "
                          f"!= {plan.config_hash[:12]}); pass overwrite=true to replace it "
                          "or choose another store=")
    loc.check_writable()
    return StoreState(exists=True, done=done)


def create(loc: Location, template: xr.Dataset, replace: bool) -> None:
    """Write the template's metadata and coordinates (no cell data) to the store."""
    if replace and loc.exists():  # everything but the lock this run holds
        loc.clear(keep=lambda name: name == lock.LOCK_NAME)
    try:
        loc.make_parent()
        with quiet_zarr():
            # A store holding only this run's lock is empty to us: zarr's "w-" would refuse it.
            mode = "a" if loc.is_dir("") and not lock.others_in(loc) else "w-"
            integrity.with_checksums(template).to_zarr(loc.zarr_store, mode=mode, compute=False,
                                                       zarr_format=ZARR_FORMAT, consolidated=False,
                                                       write_empty_chunks=True)
            group = zarr.open_group(loc.zarr_store, mode="r+")
            group.create_group(integrity.RECORD, attributes=dict(template.attrs))
            zarr.consolidate_metadata(loc.zarr_store)
    except location.io_errors() as exc:
        raise ConfigError(f"store: cannot create {loc.show()}: {location.reason(exc)}") from None


def consolidate(loc: Location) -> None:
    """Write the store's consolidated metadata (every array's ``zarr.json`` gathered in the
    root's): a plain ``xarray.open_zarr`` then reads one file, quietly. The arrays never
    change after :func:`create`, so it stays true while cells are written; a sweep
    writes it when it creates the store, on resume (a store made before this or cut
    short may lack it) and at the end of a run (the run record in the attrs)."""
    with quiet_zarr():
        zarr.consolidate_metadata(loc.zarr_store)


# --------------------------------------------------------------------------- writing cells


class CellWriter:
    """Writes finished cells into the store; the only writer of a store.

    Cells are converted and checked at once (:meth:`write` raises ValueError for a
    cell that does not fit the store) and written a shard at a time: a shard's
    cells wait in memory until every cell :meth:`expect`-ed in it has arrived, or
    until :data:`FLUSH_SECONDS` have passed since the oldest waiting cell (checked
    by :meth:`poll`); :meth:`flush` writes everything. Without ``expect`` (or with
    ``buffer=False``) each cell is written at once. The writes are straight zarr
    array writes of the shard's region — the same bytes as an xarray region write,
    without re-reading the store's metadata.

    ``write``/``fail``/``poll``/``flush`` return the (index, ok) of the cells that
    became durable in that call, for the caller's progress.

    With ``stage`` (a key prefix: a worker's, ``store_writer=workers``) nothing is written
    into the store's arrays: every shard file goes to ``STAGE/<step>/`` instead and
    :attr:`moves` lists, step by step, the (staged, final) keys that the lock holder moves
    into place in that order (:meth:`commit`) — data first, ``done`` last, as written here
    without a stage. (Staged names are flat: :func:`staged_key`.)
    """

    def __init__(self, loc: Location, template: xr.Dataset, sweep_dims: Sequence[str],
                 buffer: bool = True, flush_seconds: float = FLUSH_SECONDS,
                 fence: Callable[[], None] | None = None, stage: str | None = None):
        self.loc = loc
        self.fence = fence  # called before a shard's data and before its done flags are written
        self.stage = stage
        #: With ``stage``: the groups of (staged key, final key) written, in order.
        self.moves: list[list[tuple[str, str]]] = []
        with quiet_zarr():
            self.group = zarr.open_group(self.loc.zarr_store, mode="r+")
        self.k = len(sweep_dims)
        self.layout = {name: (tuple(var.dims[self.k:]), var.dtype)
                       for name, var in template.data_vars.items()}
        # Every chunk stored, also one equal to the fill value: an absent chunk is data lost.
        self.arrays = {name: self.group[name].with_config({"write_empty_chunks": True})
                       for name in self.layout}
        self.unions = {name: template[name].values.tolist()
                       for name in UNION_COORDS if name in template.coords}
        self.coords = {name: template[name].values for name in template.coords if name not in sweep_dims}
        done = self.arrays[DONE]
        self.shape = tuple(done.shape)
        self.block = tuple((done.shards or done.chunks)[:self.k]) if self.k else ()
        self.buffer, self.flush_seconds = buffer, flush_seconds
        self.expected: dict[tuple[int, ...], int] = {}
        self.pending: dict[tuple[int, ...], dict[tuple[int, ...], dict[str, Any] | str]] = {}
        self.since: dict[tuple[int, ...], float] = {}
        #: Shards written in part (more cells to come): their arrays as written, to skip the reread.
        self.cache: dict[tuple[int, ...], dict[str, np.ndarray]] = {}

    def _key(self, index: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(i // b for i, b in zip(index, self.block, strict=True))

    shard_of = _key

    def expect(self, indices: Sequence[tuple[int, ...]]) -> None:
        """The cells this run will write: a shard is written once all of its have arrived."""
        for idx in indices:
            key = self._key(idx)
            self.expected[key] = self.expected.get(key, 0) + 1

    def values(self, cell: xr.Dataset) -> dict[str, np.ndarray]:
        """The cell's arrays in the store's dims and dtypes (raises ValueError if it does not fit)."""
        changed = {name: labels for name, labels in self.unions.items()
                   if name in cell.coords and cell[name].values.tolist() != labels}
        if changed:
            cell = cell.reindex(changed)
        for name, values in self.coords.items():
            if name in cell.coords and not np.array_equal(cell[name].values, values):
                raise ValueError(f"cell coordinate {name!r} differs from the store's")
        out = {}
        for name, (dims, dtype) in self.layout.items():
            if name in (DONE, ERROR):
                continue
            if name not in cell:
                raise ValueError(f"cell result lacks variable {name!r}")
            var = cell.variables[name]  # a Variable: no DataArray built (~2 ms per cell saved)
            out[name] = np.asarray((var if var.dims == dims else var.transpose(*dims)).values, dtype=dtype)
        return out

    def write(self, index: tuple[int, ...], cell: xr.Dataset) -> list[tuple[tuple[int, ...], bool]]:
        """Queue one cell's variables (written data first, then ``done``)."""
        return self._add(index, self.values(cell))

    def fail(self, index: tuple[int, ...], message: str) -> list[tuple[tuple[int, ...], bool]]:
        """Queue a failure: ``error`` set, ``done`` false, the cell's data left as it is."""
        return self._add(index, message[:ERROR_CHARS])

    def _add(self, index: tuple[int, ...], item: dict[str, Any] | str) -> list[tuple[tuple[int, ...], bool]]:
        key = self._key(index)
        cells = self.pending.setdefault(key, {})
        self.since.setdefault(key, time.monotonic())
        cells[index] = item
        if not self.buffer or len(cells) >= self.expected.get(key, 1):
            return self._write_block(key)
        return []

    def poll(self) -> list[tuple[tuple[int, ...], bool]]:
        """Write the shards whose oldest waiting cell waited :data:`FLUSH_SECONDS`."""
        t = time.monotonic()
        out: list[tuple[tuple[int, ...], bool]] = []
        for key in [k for k, t0 in self.since.items() if t - t0 >= self.flush_seconds]:
            out += self._write_block(key)
        return out

    def flush(self) -> list[tuple[tuple[int, ...], bool]]:
        """Write every waiting cell."""
        out: list[tuple[tuple[int, ...], bool]] = []
        for key in list(self.pending):
            out += self._write_block(key)
        return out

    @property
    def waiting(self) -> int:
        return sum(len(c) for c in self.pending.values())

    def _write_block(self, key: tuple[int, ...]) -> list[tuple[tuple[int, ...], bool]]:
        """Read–modify–write the shard ``key``: data, then ``error``, then ``done``."""
        cells = self.pending.pop(key)
        self.since.pop(key, None)
        self.expected[key] = self.expected.get(key, len(cells)) - len(cells)
        lo = tuple(k * b for k, b in zip(key, self.block, strict=True))
        region = tuple(slice(a, min(a + b, n)) for a, b, n in zip(lo, self.block, self.shape, strict=True))
        local = {idx: tuple(i - a for i, a in zip(idx, lo, strict=True)) for idx in cells}
        ok = {idx for idx, item in cells.items() if not isinstance(item, str)}
        what = (f"the cell {next(iter(cells))}" if len(cells) == 1 else
                f"{len(cells)} cells of the shard at {lo}")
        shape = tuple(r.stop - r.start for r in region)
        lost: set[tuple[int, ...]] = set()  # cells of the shard whose old chunks do not decode

        cached = self.cache.pop(key, {})

        def old(arr: zarr.Array, every: bool) -> np.ndarray:
            if every:  # every cell of the shard is rewritten: nothing to read
                return np.empty(shape + arr.shape[self.k:], dtype=arr.dtype)
            name = arr.basename
            if name in cached:  # as this writer last wrote it: no read (a shard read costs ~0.1 s)
                return cached[name]
            return _read_block(arr, region, lost)

        with quiet_zarr(), faults.store_writes(self.loc, what):
            blocks = {}
            for name in self.layout:
                if name in (DONE, ERROR) or not ok:
                    continue
                blocks[name] = old(self.arrays[name], len(ok) == _size(region))
                for idx in ok:
                    blocks[name][local[idx]] = cells[idx][name]
            error, done = (old(self.arrays[n], len(cells) == _size(region)) for n in (ERROR, DONE))
            gone = {rel for rel in lost if tuple(a + r for a, r in zip(lo, rel, strict=True)) not in ok}
            if gone:  # their chunks are rewritten as fill: not done from now on (recomputed next run)
                for rel in gone:
                    done[rel] = False
                    error[rel] = "corrupt chunk: rerun the sweep to recompute the cell"
                if self.stage is None:
                    self.arrays[ERROR][region] = error
                    self.arrays[DONE][region] = done
                else:
                    self._put(ERROR, key, region, error)
                    self._put(DONE, key, region, done)
            faults.before_write()
            if self.fence is not None:
                self.fence()
                faults.after_fence()
            self._put_all(blocks, key, region)
            faults.after_data_written()
            for idx, item in cells.items():
                error[local[idx]] = "" if idx in ok else item
                done[local[idx]] = idx in ok
            if self.fence is not None:
                self.fence()
            self._put(ERROR, key, region, error)
            self._put(DONE, key, region, done)
        if self.expected[key] > 0 and self.buffer:  # more cells of this shard will come
            self.cache[key] = {**cached, **blocks, ERROR: error, DONE: done}
        return [(idx, idx in ok) for idx in cells]

    def _put_all(self, blocks: Mapping[str, np.ndarray], key: tuple[int, ...],
                 region: tuple[slice, ...]) -> None:
        """:meth:`_put` of every block, the whole shards replaced by :meth:`Location.write_many`
        (one after the other on a file system; concurrent PUTs on an object store, where
        each request waits ~10–50 ms on the network)."""
        if self.stage is not None:
            self._stage([kv for name, block in blocks.items()
                         for kv in self._files(name, key, region, block).items()])
            return
        later = []

        def shards() -> Iterator[tuple[str, bytes]]:
            for name, block in blocks.items():
                shard_key, raw = self._encoded(name, key, block)
                if raw is None:
                    later.append(name)
                else:
                    yield shard_key, raw

        self.loc.write_many(shards())
        for name in later:
            self._put(name, key, region, blocks[name])

    def _encoded(self, name: str, key: tuple[int, ...], block: np.ndarray) -> tuple[str, bytes | None]:
        """The store key of the shard ``key`` of array ``name`` and its bytes holding ``block``
        (None when the array's layout is not one :func:`sgdsweep.store.shards.encode_shard` writes)."""
        arr = self.arrays[name]
        shard_key = "/".join((name, "c", *(str(i) for i in key), *("0",) * (arr.ndim - self.k)))
        raw = shards.encode_shard(arr, block, self.k) if self.loc.holds_chunk_files(name) else None
        return shard_key, raw

    def _put(self, name: str, key: tuple[int, ...], region: tuple[slice, ...], block: np.ndarray) -> None:
        """``arr[region] = block``. Zarr merges a shard write into the shard on disk; a shard
        whose own index is corrupt cannot be merged into, and is replaced (``block`` holds
        the whole shard: the cells read back, the damaged ones already marked not done)."""
        arr = self.arrays[name]
        if self.stage is not None:
            self._stage(list(self._files(name, key, region, block).items()))
            return
        shard_key, raw = self._encoded(name, key, block)
        if raw is not None:  # the whole shard, replaced atomically (a crash leaves the old or the new)
            self.loc.write(shard_key, raw)
            return
        try:
            arr[region] = block
        except ValueError:
            if not arr.shards:
                raise
            per_shard = tuple(s // c for s, c in zip(arr.shards, arr.chunks, strict=True))
            if not self.loc.is_file(shard_key) or shards.shard_index(self.loc.read(shard_key), per_shard):
                raise
            self.loc.remove(shard_key)
            arr[region] = block

    def _files(self, name: str, key: tuple[int, ...], region: tuple[slice, ...],
               block: np.ndarray) -> dict[str, bytes]:
        """The store files (key -> bytes) that ``arr[region] = block`` leaves for the shard
        ``key`` of array ``name``, ``block`` covering the whole shard: encoded here
        (:meth:`_encoded`), or, for a layout that does not allow it (no sharding: a chunk
        per cell), by zarr into memory — the same codecs, the same bytes."""
        shard_key, raw = self._encoded(name, key, block)
        if raw is not None:
            return {shard_key: raw}
        from zarr.core.buffer import default_buffer_prototype
        from zarr.core.sync import sync
        from zarr.storage import MemoryStore

        mem = MemoryStore()
        doc = self.loc.read(f"{name}/zarr.json")
        sync(mem.set(f"{name}/zarr.json", default_buffer_prototype().buffer.from_bytes(doc)))
        arr = zarr.open_array(mem, path=name, mode="r+").with_config({"write_empty_chunks": True})
        arr[region] = block
        return {k: bytes(v.to_bytes()) for k, v in mem._store_dict.items() if k.startswith(f"{name}/c")}

    def _stage(self, files: Sequence[tuple[str, bytes]]) -> None:
        """Write ``files`` (final key, bytes) under the stage, as the next step of :attr:`moves`."""
        prefix = f"{self.stage}/{len(self.moves)}"
        self.loc.write_many((staged_key(prefix, k), data) for k, data in files)
        self.moves.append([(staged_key(prefix, k), k) for k, _ in files])

    def commit(self, moves: Sequence[Sequence[tuple[str, str]]], stage: str) -> None:
        """Move the files a staged writer wrote (its :attr:`moves`, all under ``stage``) into
        place, a step at a time, then remove ``stage``."""
        if any(not src.startswith(f"{stage}/") for step in moves for src, _ in step):
            raise ValueError(f"a staged file outside {stage}")
        self.loc.move_many(moves)
        if self.loc.local_path is not None:  # its emptied directories (an object store has none)
            self.loc.remove_tree(stage)

    def finish(self, extra_attrs: Mapping[str, Any]) -> None:
        """Write what waits, update attrs and consolidate metadata (once, at the end of a run)."""
        self.flush()
        with quiet_zarr(), faults.store_writes(self.loc, "the run record"):
            self.group.attrs.update(dict(extra_attrs))
            if integrity.RECORD in self.group:  # its copy (stores made before it have none)
                self.group[integrity.RECORD].attrs.update(dict(extra_attrs))
            zarr.consolidate_metadata(self.loc.zarr_store)


def staged_key(prefix: str, key: str) -> str:
    """Where the store file ``key`` is staged under ``prefix``: flat (``mean/c/0/0`` ->
    ``PREFIX/mean~c~0~0``), so that a file system makes one directory per step, not one
    per variable and shard."""
    return f"{prefix}/{key.replace('/', '~')}"


def _read_block(arr: zarr.Array, region: tuple[slice, ...], lost: set[tuple[int, ...]]) -> np.ndarray:
    """``arr[region]``; a cell whose chunk does not decode reads as the fill value and
    its index (relative to the region) is added to ``lost``."""
    try:
        return np.array(arr[region])
    except (KeyboardInterrupt, MemoryError):
        raise
    except Exception:
        pass
    shape = tuple(r.stop - r.start for r in region)
    out = np.full(shape + arr.shape[len(region):], arr.metadata.fill_value, dtype=arr.dtype)
    for rel in np.ndindex(*shape):
        try:
            out[rel] = arr[tuple(r.start + i for r, i in zip(region, rel, strict=True))]
        except (KeyboardInterrupt, MemoryError):
            raise
        except Exception:
            lost.add(rel)
    return out


def _size(region: tuple[slice, ...]) -> int:
    return int(np.prod([r.stop - r.start for r in region], dtype=np.int64))


def read_status(loc: Location) -> xr.Dataset:
    """The store opened lazily with xarray, a shard per Dask chunk (:func:`sgdsweep.open_sweep`)."""
    with quiet_zarr():
        return open_sweep(loc.dataset_path, storage_options=loc.storage_options)
