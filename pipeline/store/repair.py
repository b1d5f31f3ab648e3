"""Rebuild damaged ``zarr.json`` metadata of a sweep store (``status --verify --repair``).

Each damaged file (:func:`pipeline.store.metadata.problems`) is rewritten from a sound
copy — an array's from the root's consolidated metadata, the root's attrs from the run
record (``run_record/zarr.json``) and the run record from the root — and when no copy
is left, an array's metadata is rebuilt from the config in the run record, as the sweep
created it. Cell data is never touched.
"""

from __future__ import annotations

import json
from typing import Any

import zarr

from pipeline.store import integrity
from pipeline.store import store as stores
from pipeline.store.location import Location
from pipeline.store.metadata import ROOT, copies, document, problems
from sgdsweep.cell.schema import CELL_DIMS
from sgdsweep.errors import ConfigError


def _record(loc: Location, root: dict[str, Any] | None) -> dict[str, Any] | None:
    """The store's attrs: the run record's copy, else the root's."""
    doc, why = document(loc, f"{integrity.RECORD}/{ROOT}")
    if not why and doc.get("attributes", {}).get("config"):
        return doc["attributes"]
    attrs = (root or {}).get("attributes") or {}
    return attrs if attrs.get("config") else None


def rebuilt(attrs: dict[str, Any]) -> dict[str, Any]:
    """The store as the sweep of the config in ``attrs`` creates it, before any cell is
    written: its keys (``NAME/zarr.json``, the coordinates' chunks) -> zarr buffers."""
    # Here, not at the top: ``status`` imports this module, and the planner brings Hydra
    # and dask.distributed (~0.5 s), needed only when a metadata file has no copy left.
    from omegaconf import OmegaConf

    from pipeline.config import expand
    from pipeline.run.sweep import templates

    plan = expand(OmegaConf.create(attrs["config"]), reserved=set(CELL_DIMS))
    if plan.config_hash != attrs.get("config_hash"):
        raise ConfigError("repair: the run record's config does not give the store's config hash "
                          "(another version of the package?); recreate the store with overwrite=true")
    tmpl = stores.build_template(plan, templates(plan), attrs,
                                 shard_cells=int(attrs.get("shard_cells", stores.SHARD_CELLS)),
                                 plain_cell_bytes=int(attrs.get(integrity.PLAIN_ATTR, 0)))
    held: dict[str, Any] = {}
    with stores.quiet_zarr():
        integrity.with_checksums(tmpl).to_zarr(zarr.storage.MemoryStore(held), compute=False, zarr_format=3,
                                               consolidated=False, write_empty_chunks=True)
    return held


def _documents(held: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The arrays' metadata in :func:`rebuilt`'s store (name -> doc)."""
    return {key[:-len(ROOT) - 1]: json.loads(buf.to_bytes()) for key, buf in held.items()
            if key.endswith(f"/{ROOT}") and key.count("/") == 1}


def repair(loc: Location) -> list[str]:
    """Rewrite every damaged ``zarr.json`` (:func:`problems`) from a sound copy or the
    config in the run record, then every damaged coordinate (:func:`coordinates`); one
    line per file rewritten. Raises ConfigError when nothing is left to rebuild from."""
    lines = _metadata(loc)
    lines += coordinates(loc)
    return lines or ["repair  : the metadata and coordinates are sound; nothing to rewrite"]


def coordinates(loc: Location) -> list[str]:
    """Rewrite the chunks of each coordinate (an array holding no cells) that is damaged
    or missing a chunk, from the config in the run record; one line per array."""
    with stores.quiet_zarr():
        group = zarr.open_group(loc.zarr_store, mode="r")
        bad = integrity.verify(loc, only=integrity.other_arrays(group)).arrays
    if not bad:
        return []
    root, why = document(loc, ROOT)
    attrs = _record(loc, None if why else root)
    if attrs is None:
        raise ConfigError(f"repair: coordinate {bad[0]!r} is damaged and the run record is gone; "
                          "recreate the store with overwrite=true")
    held = rebuilt(attrs)
    lines = []
    for name in bad:
        chunks = {key: buf.to_bytes() for key, buf in held.items() if key.startswith(f"{name}/c/")}
        if not chunks:
            raise ConfigError(f"repair: no coordinate {name!r} in the sweep of the run record's config")
        for _, key in list(loc.files(f"{name}/c")):
            if key not in chunks:
                loc.remove(key)
        loc.write_many(chunks.items())
        lines.append(f"repair  : {loc.show(name)}: coordinate rewritten from the config in the run record")
    return lines


def _metadata(loc: Location) -> list[str]:
    """The ``zarr.json`` part of :func:`repair`."""
    found = problems(loc)
    if not found:
        return []
    root, root_why = document(loc, ROOT)
    held = copies(root) if not root_why else {}
    attrs = _record(loc, None if root_why else root)
    if ROOT in found and attrs is None:  # checked before anything is written
        raise ConfigError(f"repair: {loc.show(ROOT)} is damaged and the run record "
                          f"({integrity.RECORD}/zarr.json) too; recreate the store with overwrite=true")
    lines: list[str] = []
    fresh: dict[str, dict[str, Any]] | None = None
    for key in [k for k in found if k != ROOT]:
        name = key.rsplit("/", 1)[0]
        if name == integrity.RECORD and attrs is not None:
            doc, source = {"attributes": attrs, "zarr_format": 3, "node_type": "group"}, "the store's attrs"
        elif name in held:
            doc, source = held[name], "its copy in the root zarr.json"
        else:
            if attrs is None:
                raise ConfigError(f"repair: {loc.show(key)} has no sound copy and the run record is gone; "
                                  "recreate the store with overwrite=true")
            if fresh is None:
                fresh = _documents(rebuilt(attrs))
            if name not in fresh:
                raise ConfigError(f"repair: {loc.show(key)}: no array {name!r} in the sweep of the "
                                  "run record's config; remove it or recreate the store")
            doc, source = fresh[name], "the config in the run record"
        loc.write(key, json.dumps(doc, indent=2).encode())
        lines.append(f"repair  : {loc.show(key)}: rewritten from {source}")
    if ROOT in found:
        loc.write(ROOT, json.dumps({"attributes": attrs, "zarr_format": 3, "node_type": "group"},
                                   indent=2).encode())
        lines.append(f"repair  : {loc.show(ROOT)}: rewritten from the run record")
    stores.consolidate(loc)  # the root's copies of the arrays' metadata, fresh
    left = problems(loc)
    if left:
        key, why = next(iter(left.items()))
        raise ConfigError(f"repair: {loc.show(key)}: still {why}")
    return lines
