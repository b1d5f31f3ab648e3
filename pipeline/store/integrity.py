"""Checksummed chunks, and finding the cells whose chunks no longer decode.

Every array of a store made by this version ends its Zarr v3 codec pipeline with
``crc32c`` (after the usual ``zstd``): each chunk carries a CRC-32C of its
compressed bytes and zarr checks it on every read, so plain ``xarray.open_zarr``
raises ``ValueError: Stored and computed checksum do not match`` instead of
returning silently wrong numbers. Stores made before the checksum have none;
they still open, resume and verify, but only damage that breaks the ``zstd``
frame (a truncated or garbled chunk) is detected in them, not a flipped bit that
still decompresses.

A chunk belongs to one cell: every array whose dimensions start with the sweep
axes has chunk size 1 along them (see :mod:`pipeline.store.store`), so the chunk of a
cell is the array indexed by the cell's index on those axes. In a sharded store
the chunks of many cells share one shard file: each inner chunk ends with its own
CRC-32C and the shard's index (byte offset and length of every inner chunk) ends
with another, so :func:`verify` still names the damaged cells — the cell whose
inner chunk fails, or every cell of a shard whose index fails. Arrays whose
chunk files cannot be checked this way are decoded — in slabs of many cells,
falling back to one cell at a time only inside a slab that fails.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
import zarr
from zarr.codecs import Crc32cCodec, ShardingCodec, ZstdCodec

from pipeline.store.location import Location
from sgdsweep.cell.schema import DONE, ERROR
from sgdsweep.store.shards import EMPTY, crc_ok, read_shards, shard_index, sharding, spans_ok


def _group(loc: Location) -> zarr.Group:
    return zarr.open_group(loc.zarr_store, mode="r")

#: The bytes → bytes codecs of every array of a new store: the compressor zarr
#: uses by default, then the checksum of the compressed bytes.
COMPRESSORS = (ZstdCodec(level=0, checksum=False), Crc32cCodec())
#: Bytes read per slab while verifying (bounded memory on large stores).
SLAB_BYTES = 64 * 2**20
#: Store attr of the stores whose writer stores every chunk, also one equal to the fill
#: value (zarr skips those by default): in them a chunk file or inner chunk that is
#: absent where data was written is data lost, not a cell of NaN.
EVERY_CHUNK = "every_chunk_stored"
#: The group holding a copy of the store's attrs (config, provenance, the runs): the run
#: record from which :mod:`pipeline.store.repair` rebuilds damaged metadata.
RECORD = "run_record"


#: Numeric cells (inner chunks) of at most this many bytes — the per-cell scalars — and
#: single-string cells are stored without zstd: a frame of 1–8 bytes does not shrink, and
#: decoding one costs ~17–25 µs (numcodecs), which made reading the scalars of 10⁵ cells
#: take ~30 s.
PLAIN_CELL_BYTES = 64
#: Store attr recording that bound (0 or absent: an older store, every chunk compressed).
PLAIN_ATTR = "plain_cell_bytes"


def _plain(var: xr.Variable, limit: int) -> bool:
    """Whether ``var``'s inner chunks are numeric and at most ``limit`` bytes, or one string
    (a cell's ``error``: almost always empty)."""
    chunks = var.encoding.get("chunks")
    if limit <= 0 or chunks is None:
        return False
    size = int(np.prod(chunks, dtype=np.int64))
    if var.dtype.kind == "O":
        return size == 1
    return var.dtype.kind in "biuf" and size * var.dtype.itemsize <= limit


def with_checksums(ds: xr.Dataset) -> xr.Dataset:
    """``ds`` (a shallow copy) with every variable encoded with :data:`COMPRESSORS`, or
    with the checksum alone where its cells are small and numeric (``ds.attrs``'
    :data:`PLAIN_ATTR`)."""
    out = ds.copy()
    limit = int(ds.attrs.get(PLAIN_ATTR, 0))
    for var in out.variables.values():
        comp = COMPRESSORS[1:] if _plain(var, limit) else COMPRESSORS
        var.encoding = {**var.encoding, "compressors": comp}
    return out


def has_checksums(array: zarr.Array) -> bool:
    codecs = array.metadata.codecs
    if codecs and isinstance(codecs[0], ShardingCodec):
        codecs = codecs[0].codecs
    return any(isinstance(c, Crc32cCodec) for c in codecs)


# --------------------------------------------------------------------------- reading


def _sweep_dims(group: zarr.Group) -> list[str]:
    dims = group.attrs.get("sweep_dims", [])
    return [dims] if isinstance(dims, str) else list(dims)


def _cell_array(array: zarr.Array, sweep_dims: list[str]) -> bool:
    """Whether ``array`` holds cells: the sweep axes first, a (inner) chunk per cell along
    them (not a sweep axis's coordinate, one chunk for the whole axis)."""
    names, k = list(array.metadata.dimension_names or ()), len(sweep_dims)
    return k > 0 and names[:k] == sweep_dims and tuple(array.chunks[:k]) == (1,) * k


def other_arrays(group: zarr.Group) -> list[str]:
    """The arrays that hold no cells (coordinates): written once, when the store is made."""
    dims = _sweep_dims(group)
    with warnings.catch_warnings():  # the store's lock file is not a zarr node: listing says so
        warnings.filterwarnings("ignore", message=".*sweep.lock.* not recognized")
        return sorted(name for name, array in group.arrays() if not _cell_array(array, dims))


def read_cells(array: zarr.Array, k: int, fill: Any = None,
               damaged: set[tuple[int, ...]] | None = None) -> np.ndarray:
    """The whole array; a cell (index on its first ``k`` axes) whose chunk does not
    decode reads as ``fill`` (default: the array's fill value) and is added to ``damaged``.

    Reads slabs along the first axis of at most :data:`SLAB_BYTES`; only a slab
    that fails is re-read one cell at a time.
    """
    shape = array.shape
    fill = array.metadata.fill_value if fill is None else fill
    if k == 0 or not shape or shape[0] == 0:
        return np.asarray(array[...])
    fast = read_shards(array, k, fill, damaged)
    if fast is not None:
        return fast
    out = np.empty(shape, dtype=array.dtype)
    row = max(1, int(np.prod(shape[1:], dtype=np.int64)) * out.itemsize)
    step = max(1, SLAB_BYTES // row)
    for i0 in range(0, shape[0], step):
        i1 = min(shape[0], i0 + step)
        try:
            out[i0:i1] = array[i0:i1]
            continue
        except (KeyboardInterrupt, MemoryError):
            raise
        except Exception:
            pass
        for rest in np.ndindex(*shape[1:k]):
            for i in range(i0, i1):
                idx = (i, *rest)
                try:
                    out[idx] = array[idx]
                except (KeyboardInterrupt, MemoryError):
                    raise
                except Exception:
                    out[idx] = fill
                    if damaged is not None:
                        damaged.add(idx)
    return out


def bookkeeping(loc: Location) -> tuple[np.ndarray, np.ndarray]:
    """``done`` and ``error`` of a store; a cell whose flag chunk does not decode is
    not done, with an error saying so."""
    group = _group(loc)
    k = len(group[DONE].shape)
    bad: set[tuple[int, ...]] = set()
    done = np.asarray(read_cells(group[DONE], k, False, bad), dtype=bool)
    error = np.asarray(read_cells(group[ERROR], k, "", bad))
    for idx in bad:
        error[idx] = "corrupt done/error chunk: rerun the sweep to recompute the cell"
    return done, error


@dataclass
class Damage:
    """What :func:`verify` found: damaged cells (index → variables) and other arrays."""

    cells: dict[tuple[int, ...], list[str]] = field(default_factory=dict)
    arrays: list[str] = field(default_factory=list)  # coordinates and other non-cell arrays
    checked: int = 0  # arrays read
    seconds: float = 0.0
    checksummed: bool = True  # every array carries a crc32c
    #: Done cells whose chunk of these arrays is absent (a deleted chunk or shard file).
    missing: dict[tuple[int, ...], list[str]] = field(default_factory=dict)
    #: Whether absent chunks were looked for (stores whose writer stores every chunk).
    complete: bool = False
    why: dict[str, str] = field(default_factory=dict)  # array name -> what is wrong with it

    @property
    def clean(self) -> bool:
        return not self.cells and not self.arrays and not self.missing

    @property
    def lost(self) -> list[tuple[int, ...]]:
        """Cells to recompute: a chunk that does not decode, or a done cell's chunk absent."""
        return sorted(set(self.cells) | set(self.missing))


def _crc_checkable(array: zarr.Array, loc: Location, name: str) -> bool:
    """Whether the chunk files of ``array`` sit under ``name/c/`` of the store, ending in a crc32c."""
    enc = array.metadata.chunk_key_encoding
    last = array.metadata.codecs[-1]
    return ((isinstance(last, Crc32cCodec) or sharding(array) is not None) and enc.name == "default"
            and getattr(enc, "separator", "/") == "/" and loc.is_dir(name))


def bad_checksums(loc: Location, name: str, k: int, array: zarr.Array | None = None,
                  stored: np.ndarray | None = None) -> set[tuple[int, ...]]:
    """Cells (first ``k`` chunk coordinates) of the chunk files under ``name/c`` of the
    store whose last four bytes are not the CRC-32C (little-endian) of the rest.

    The same test zarr's ``crc32c`` codec makes on read, without decompressing:
    a chunk whose checksum holds has the bytes zarr wrote. For a sharded ``array``
    each file is a shard: its index is checked (a bad index damages every cell of
    the shard), then each inner chunk it points to. ``stored`` (bool, the sweep's
    shape) is set True at every cell whose chunk is there (in a shard: its index
    entry is not "empty"; a shard whose index fails counts as there, and damaged).
    """
    sc = sharding(array) if array is not None else None
    if sc is not None:
        shard, inner = tuple(array.shards), tuple(array.chunks)
        per_shard = tuple(s // c for s, c in zip(shard, inner, strict=True))
        shape = tuple(array.shape)
    bad: set[tuple[int, ...]] = set()
    for parts, chunk_key in loc.files(f"{name}/c"):
        if not all(p.isdigit() for p in parts):
            continue  # not a chunk: a file written aside (ours, or zarr's "*.partial")
        data = loc.read(chunk_key)
        key = tuple(int(i) for i in parts)
        if sc is None:
            if stored is not None:
                stored[key[:k]] = True
            if not crc_ok(data):
                bad.add(key[:k])
            continue
        lo = np.array([c * s // i for c, s, i in zip(key, shard, inner, strict=True)])  # first chunk
        cells = lo + np.indices(per_shard).reshape(len(per_shard), -1).T
        # Only chunks inside the array (an edge shard's index has slots past the edge).
        inside = np.flatnonzero(np.all(cells * np.array(inner) < np.array(shape), axis=1))
        index = shard_index(data, per_shard)
        if index is None:
            bad.update(tuple(int(c) for c in cells[j, :k]) for j in inside)
            if stored is not None:
                stored[tuple(cells[inside, :k].T)] = True
            continue
        end = len(data) - 16 * int(np.prod(per_shard, dtype=np.int64)) - 4  # where the index starts
        if stored is not None:
            there = inside[~((index[0].ravel()[inside] == EMPTY) & (index[1].ravel()[inside] == EMPTY))]
            stored[tuple(cells[there, :k].T)] = True
        offs, sizes = index[0].ravel()[inside], index[1].ravel()[inside]
        written = ~((offs == EMPTY) & (sizes == EMPTY))
        # An offset past the index is no chunk (and would not fit an int64 if garbage).
        fits = written & (offs <= end) & (sizes <= end)
        ok = np.zeros(len(inside), dtype=bool)
        ok[fits] = spans_ok(data, offs[fits].astype(np.int64), sizes[fits].astype(np.int64), end)
        for j in inside[written & ~ok].tolist():
            bad.add(tuple(int(c) for c in cells[j, :k]))
    return bad


def chunk_span(loc: Location, name: str, idx: tuple[int, ...]) -> tuple[Path | str, int, int]:
    """Where the chunk of array ``name`` holding the cell ``idx`` lies: (file, byte offset,
    length) — the whole chunk file, or the inner chunk's range inside its shard. The file
    is a Path in a local store, the object's path (``bucket/…``) in an object store."""
    array = _group(loc)[name]
    n = len(array.shape)
    full = (*idx, *(0,) * (n - len(idx)))
    if sharding(array) is None:
        key = "/".join((name, "c", *(str(i) for i in full)))
        return loc.path_of(key), 0, len(loc.read(key))
    shard, inner = tuple(array.shards), tuple(array.chunks)
    per_shard = tuple(s // c for s, c in zip(shard, inner, strict=True))
    chunk = tuple(i // c for i, c in zip(full, inner, strict=True))
    key = "/".join((name, "c", *(str(c // p) for c, p in zip(chunk, per_shard, strict=True))))
    index = shard_index(loc.read(key), per_shard)
    if index is None:
        raise ValueError(f"{loc.show(key)}: the shard index does not hold")
    local = tuple(c % p for c, p in zip(chunk, per_shard, strict=True))
    return loc.path_of(key), int(index[0][local]), int(index[1][local])


def verify(loc: Location, only: Iterable[str] | None = None) -> Damage:
    """Check every chunk of the store at ``loc`` (or of the arrays named in ``only``).

    A checksummed array's chunk files are read and their CRC-32C checked directly
    (what zarr checks first on every read); an array without checksums (an older
    store) is decoded chunk by chunk, which finds a chunk whose zstd frame is broken.
    """
    t0 = time.perf_counter()
    group = _group(loc)
    dims = _sweep_dims(group)
    damage = Damage(complete=bool(group.attrs.get(EVERY_CHUNK)))
    with warnings.catch_warnings():  # the store's lock file is not a zarr node: listing says so
        warnings.filterwarnings("ignore", message=".*sweep.lock.* not recognized")
        names = sorted(group.array_keys()) if only is None else list(only)
    done = None
    if dims and DONE in group:  # a done flag that does not decode is not done
        done = np.asarray(read_cells(group[DONE], len(dims), False), dtype=bool)
    for name in names:
        array = group[name]
        damage.checked += 1
        damage.checksummed &= has_checksums(array)
        if _cell_array(array, dims) and _crc_checkable(array, loc, name):
            # Sharded stores store every chunk (sgdsweep.store.shards.encode_shard); others if marked.
            look = done is not None and (damage.complete or sharding(array) is not None)
            stored = np.zeros(done.shape, dtype=bool) if look else None
            for idx in bad_checksums(loc, name, len(dims), array, stored):
                damage.cells.setdefault(idx, []).append(name)
            if stored is not None:
                for idx in zip(*np.nonzero(done & ~stored), strict=True):
                    damage.missing.setdefault(tuple(int(i) for i in idx), []).append(name)
        elif not _cell_array(array, dims) and damage.complete and (absent := _absent_chunks(loc, name,
                                                                                             array)):
            damage.arrays.append(name)
            damage.why[name] = f"chunk file {absent[0]} is missing"
        elif _cell_array(array, dims):
            bad: set[tuple[int, ...]] = set()
            read_cells(array, len(dims), damaged=bad)
            for idx in bad:
                damage.cells.setdefault(idx, []).append(name)
        else:
            try:
                array[...]
            except (KeyboardInterrupt, MemoryError):
                raise
            except Exception:
                damage.arrays.append(name)
    damage.cells = dict(sorted(damage.cells.items()))
    damage.missing = dict(sorted(damage.missing.items()))
    damage.seconds = time.perf_counter() - t0
    return damage


def _absent_chunks(loc: Location, name: str, array: zarr.Array) -> list[str]:
    """The chunk files of an unsharded, non-empty array that are not in the store."""
    if sharding(array) is not None or not array.size or not loc.holds_chunk_files(name):
        return []
    enc = array.metadata.chunk_key_encoding
    if enc.name != "default" or getattr(enc, "separator", "/") != "/":
        return []
    there = {parts for parts, _ in loc.files(f"{name}/c")}
    grid = (-(-n // c) for n, c in zip(array.shape, array.chunks, strict=True))
    return ["/".join((name, "c", *(str(i) for i in idx))) for idx in np.ndindex(*grid)
            if tuple(str(i) for i in idx) not in there]


def cell_name(group_or_ds: Any, idx: tuple[int, ...]) -> str:
    """``lr=0.01, batch_size=1`` for the cell at ``idx`` (coordinates of the sweep axes)."""
    attrs = group_or_ds.attrs
    dims = attrs.get("sweep_dims", [])
    dims = [dims] if isinstance(dims, str) else list(dims)
    return ", ".join(f"{d}={_value(group_or_ds[d][i])}" for d, i in zip(dims, idx, strict=True))


def _value(v: Any) -> str:
    v = np.asarray(v).item()
    return f"{v:g}" if isinstance(v, float) else str(v)


def describe(damage: Damage, group_or_ds: Any, limit: int = 20) -> list[str]:
    """One line per damaged cell (up to ``limit``) and per damaged non-cell array."""
    lines = []
    for idx in damage.lost[:limit]:
        what = []
        if idx in damage.cells:
            what.append(f"unreadable chunk of {', '.join(damage.cells[idx])}")
        if idx in damage.missing:
            what.append(f"done, but its data is missing (no chunk of {', '.join(damage.missing[idx])})")
        lines.append(f"{cell_name(group_or_ds, idx)}: {'; '.join(what)}")
    if len(damage.lost) > limit:
        lines.append(f"... and {len(damage.lost) - limit} more")
    lines += [f"array {name!r} (not a cell's): {damage.why.get(name, 'unreadable')}"
              for name in damage.arrays]
    return lines


# --------------------------------------------------------------------------- hooks


def recheck_done(loc: Location, done: np.ndarray, say: Any) -> np.ndarray:
    """The done flags with every done cell whose chunks do not decode set back to not done.

    Called when a sweep resumes: a corrupt cell is recomputed (its chunks are all
    rewritten). Non-cell arrays (coordinates) cannot be recomputed cell by cell:
    their damage is refused with a ConfigError.
    """
    from sgdsweep.errors import ConfigError

    if not done.any():
        return done
    damage = verify(loc)
    if damage.arrays:
        raise ConfigError(f"store: {loc.show()}: array {damage.arrays[0]!r} is corrupt "
                          f"(not a cell's data: {damage.why.get(damage.arrays[0], 'unreadable')}); "
                          f"python -m pipeline status {loc.show()}{loc.cli_hint()} --verify --repair "
                          "rewrites it from the run record, or pass overwrite=true to recompute the store")
    done = done.copy()
    bad = [idx for idx in damage.lost if done[idx]]
    for idx in bad:
        done[idx] = False
    if bad:
        group = _group(loc)
        say(f"verify: {len(bad)} done cell(s) with corrupt or missing chunks will be recomputed "
            f"({damage.seconds:.1f} s to check)")
        shown = Damage(cells={i: damage.cells[i] for i in bad if i in damage.cells},
                       missing={i: damage.missing[i] for i in bad if i in damage.missing})
        for line in describe(shown, group, limit=10):
            say(f"verify: {line}")
    return done


def mask_corrupt(loc: Location, ds: xr.Dataset) -> tuple[xr.Dataset, list[str]]:
    """``ds`` with the damaged cells shown as failed (their data NaN/fill) and one
    line per damaged cell; ``ds`` itself when the store is clean."""
    damage = verify(loc)
    if damage.clean:
        return ds, []
    group = _group(loc)
    k = len(_sweep_dims(group))
    ds = ds.copy()
    for name in sorted({n for names in damage.cells.values() for n in names}):
        if name in ds.variables:
            ds[name] = (ds[name].dims, read_cells(group[name], k), ds[name].attrs)
    if damage.lost and DONE in ds and ERROR in ds:
        done = np.array(ds[DONE].values, dtype=bool)
        error = np.array(ds[ERROR].values)
        for idx, names in damage.cells.items():
            done[idx] = False
            error[idx] = f"corrupt chunk of {', '.join(names)}: rerun the sweep to recompute the cell"
        for idx, names in damage.missing.items():
            done[idx] = False
            error[idx] = f"missing chunk of {', '.join(names)}: rerun the sweep to recompute the cell"
        ds[DONE] = (ds[DONE].dims, done, ds[DONE].attrs)
        ds[ERROR] = (ds[ERROR].dims, error.astype(ds[ERROR].dtype), ds[ERROR].attrs)
    return ds, describe(damage, group)


def status_lines(loc: Location, limit: int = 20) -> tuple[list[str], Damage]:
    """The ``status --verify`` lines: what was read, in how long, and each corrupt cell."""
    damage = verify(loc)
    group = _group(loc)
    n = int(np.prod(group[DONE].shape)) if DONE in group else 0
    kind = "crc32c checksums" if damage.checksummed else "no checksums (an older store: zstd frames only)"
    lines = [f"verify  : {damage.checked} arrays, {n} cells read in {damage.seconds:.2f} s ({kind}); "
             f"{len(damage.cells)} corrupt cell(s), {len(damage.missing)} done cell(s) with data missing"
             + (f", {len(damage.arrays)} corrupt other array(s)" if damage.arrays else "")]
    lines += [f"corrupt : {line}" for line in describe(damage, group, limit)]
    if damage.lost:
        lines.append("corrupt : rerun the same sweep command to recompute these cells")
    if damage.arrays:
        lines.append(f"corrupt : python -m pipeline status {loc.show()}{loc.cli_hint()} --verify --repair "
                     "rewrites the damaged coordinates from the run record")
    return lines, damage
