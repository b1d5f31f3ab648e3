"""Damaged ``zarr.json`` metadata of a sweep store: name the file and the problem.

A store's metadata is kept three times over: each array's own ``NAME/zarr.json``, the
copy of every array's in the root ``zarr.json`` (its consolidated metadata), and the
store's attrs — the resolved config, provenance and runs — in the root and again in
the run record (``run_record/zarr.json``, :data:`~pipeline.store.integrity.RECORD`).
:func:`problems` reads each file and says what is wrong with it (missing, not JSON,
not Zarr v3 metadata, different from its copy); :func:`pipeline.store.repair.repair`
rewrites the damaged ones.
"""

from __future__ import annotations

import json
from typing import Any

from pipeline.store import location, lock
from pipeline.store.integrity import RECORD
from pipeline.store.location import Location

ROOT = "zarr.json"


def document(loc: Location, key: str) -> tuple[dict[str, Any] | None, str]:
    """The metadata document at ``key`` and "" — or None and what is wrong with it."""
    from zarr.core.metadata.v3 import ArrayV3Metadata

    try:
        if not loc.is_file(key):
            return None, "missing"
        raw = loc.read(key)
    except location.io_errors() as exc:
        return None, f"unreadable ({location.reason(exc)})"
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        return None, f"not valid JSON ({exc})"
    if (not isinstance(doc, dict) or doc.get("zarr_format") != 3
            or doc.get("node_type") not in ("array", "group")):
        return None, "not Zarr v3 metadata (no zarr_format 3 and node_type)"
    if doc["node_type"] == "array":
        try:
            ArrayV3Metadata.from_dict(dict(doc))
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [""])[0]
            return None, f"not valid Zarr v3 array metadata ({type(exc).__name__}: {first})"
    return doc, ""


def copies(root: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """The top-level nodes' metadata held in the root's consolidated metadata."""
    meta = ((root or {}).get("consolidated_metadata") or {}).get("metadata") or {}
    return {name: doc for name, doc in meta.items() if "/" not in name and isinstance(doc, dict)}


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Equal metadata, attributes aside (a user may annotate a variable)."""
    def bare(d: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in d.items() if k != "attributes"}

    return bare(a) == bare(b)


def problems(loc: Location) -> dict[str, str]:
    """Every ``zarr.json`` of the store that is missing or damaged -> what is wrong (in
    store order: the root first); empty when the metadata is sound."""
    root, why = document(loc, ROOT)
    out: dict[str, str] = {}
    if why:
        out[ROOT] = why
    elif root["node_type"] != "group":
        out[ROOT] = "not a group's metadata (node_type 'array')"
    held = copies(root)
    try:
        names = set(held) | {e for e in loc.entries()
                             if e not in (lock.LOCK_NAME, lock.STAGING) and loc.is_dir(e)}
    except location.io_errors():
        names = set(held)
    for name in sorted(names):
        key = f"{name}/{ROOT}"
        doc, why = document(loc, key)
        if why:
            out[key] = why
        elif name in held and not _same(doc, held[name]):
            out[key] = "differs from its copy in the root zarr.json (consolidated metadata)"
    return out


def explain(loc: Location) -> str:
    """One sentence naming the damaged metadata file(s) of a sweep store; "" when the
    metadata is sound or the place holds no sweep store (neither a root ``zarr.json``
    nor a run record)."""
    try:
        ours = loc.is_file(ROOT) or loc.is_file(f"{RECORD}/{ROOT}")
    except location.io_errors():
        return ""
    if not ours:
        return ""
    found = problems(loc)
    if not found:
        return ""
    key, why = next(iter(found.items()))
    more = f" (and {len(found) - 1} more metadata file(s))" if len(found) > 1 else ""
    return (f"{loc.show(key)}: {why}{more}; python -m pipeline status {loc.show()}{loc.cli_hint()} "
            "--verify --repair rebuilds the metadata from the run record")


