"""``python -m pipeline status STORE``: progress, failures and config of a store."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from pipeline.cli.args import OneLineParser
from pipeline.store import integrity, location, metadata, repair
from pipeline.store import lock as locks
from pipeline.store import store as stores
from sgdsweep.cell import schema
from sgdsweep.cell.schema import DONE, ERROR
from sgdsweep.errors import ConfigError


def describe(loc: location.Location, max_failures: int = 20) -> tuple[str, int, int]:
    """The status text, cells done and cells total of the store at ``loc``."""
    path = loc.show()
    if not loc.exists():
        raise ConfigError(f"store: {path} does not exist")
    try:
        ds = stores.read_status(loc)
    except Exception as exc:
        damaged = metadata.explain(loc)
        if damaged:
            raise ConfigError(f"store: {damaged}") from None
        raise ConfigError(f"store: {path} is not a readable sweep store ({type(exc).__name__})") from None
    if DONE not in ds or "config_hash" not in ds.attrs:
        raise ConfigError(f"store: {path} is not a sweep store (no done flags)")
    dims = list(ds.attrs.get("sweep_dims", ds[DONE].dims))
    if isinstance(dims, str):
        dims = [dims]
    paths = json.loads(ds.attrs.get("sweep_paths", "{}"))
    done, error = integrity.bookkeeping(loc)  # a corrupt flag chunk reads as not done
    ds = ds.assign({DONE: (ds[DONE].dims, done), ERROR: (ds[DONE].dims, error)})
    total, n_done = done.size, int(done.sum())
    failed = schema.failures(ds)
    lines = [f"store   : {path}",
             f"cells   : {n_done}/{total} done, {len(failed)} failed, {total - n_done - len(failed)} pending"]
    for d in dims:
        lines.append(f"axis    : {d} ({paths.get(d, d)}) = {axis_values(ds[d].values.tolist())}")
    landscape = ds.attrs.get("landscape", "?")
    methods = ", ".join(str(m) for m in ds["method"].values) if "method" in ds.coords else "?"
    chains = ds.attrs.get("chains", "?")
    lines.append(f"config  : landscape {landscape}, methods [{methods}], chains {chains},"
                 f" hash {str(ds.attrs.get('config_hash'))[:12]}")
    lines.append(f"created : {ds.attrs.get('created', '?')}  commit {ds.attrs.get('git_commit') or '?'}")
    runs = json.loads(ds.attrs.get("runs", "[]"))
    if runs:
        last = runs[-1]
        lines.append(f"last run: finished {last.get('finished')}, computed {last.get('computed')}, "
                     f"failed {last.get('failed')}, wall {last.get('wall_time_s')} s")
    else:
        lines.append("last run: not finished (interrupted, or still running); rerun the sweep to resume")
    held = locks.read(loc)
    if held is not None:
        lines.append(f"running : a sweep holds the store's lock ({locks.holder(held)})")
    for where, msg in failed[:max_failures]:
        lines.append(f"failed  : {schema.describe_cell(where)}: {msg}")
    if len(failed) > max_failures:
        lines.append(f"failed  : ... and {len(failed) - max_failures} more")
    # Only the lines shown are built (every cell of a 10⁵-cell store may be flagged).
    flagged = schema.escape_error_cells(ds, most=max_failures)
    for where, err in flagged:
        lines.append(f"escape  : {schema.describe_cell(where)}: escape_time_exact_error {err:.1%} "
                     f"> {schema.ESCAPE_ERROR_FLAG:.0%} (refine the density grid or raise fp.refine)")
    if flagged.total > max_failures:
        lines.append(f"escape  : ... and {flagged.total - max_failures} more cells above the flag")
    _method_lines(lines, "lost    ", schema.lost_cells(ds, most=max_failures), max_failures,
                  lambda m, v: f"{m} lost {v:.1%} of its chains off the grid (> {schema.LOST_FLAG:.0%}; "
                               "widen density_grid)")
    _method_lines(lines, "escapes ", schema.few_escape_cells(ds, most=max_failures), max_failures,
                  lambda m, v: f"{m}: only {v:.0f} chain(s) escaped (< {schema.MIN_ESCAPES}): too few for "
                               "escape_time_mle (raise time.t_end or mc.chains)")
    _method_lines(lines, "operator", schema.operator_diffusion_cells(ds, most=max_failures), max_failures,
                  lambda m, v: f"{m} adds numerical variance {v:.3g} × the minibatch variance per step, "
                               "above operator.diffusion_ratio (use more density_grid.cells or a larger "
                               "operator.max_refine)")
    return "\n".join(lines), n_done, total


def _method_lines(lines: list[str], label: str, cells: schema.Flagged, most: int, text: Any) -> None:
    """One ``label: cell: text(method, value)`` line per flagged (cell, method), at most ``most``."""
    for where, method, value in cells[:most]:
        lines.append(f"{label}: {schema.describe_cell(where) or 'the cell'}: {text(method, value)}")
    if cells.total > most:
        lines.append(f"{label}: ... and {cells.total - most} more")


def axis_values(values: Sequence[object], most: int = 12) -> str:
    """``[a, b, …]``; a long axis as its first and last values and its length."""
    def text(v: object) -> str:
        return f"{v:g}" if isinstance(v, float) else str(v)

    if len(values) <= most:
        return "[" + ", ".join(text(v) for v in values) + "]"
    head = ", ".join(text(v) for v in values[:most // 2])
    tail = ", ".join(text(v) for v in values[-2:])
    return f"[{head}, ..., {tail}] ({len(values)} values)"


def status_main(argv: Sequence[str], out: TextIO | None = None) -> int:
    """Exit status 0 when every cell is done, 1 otherwise, 2 for a bad path."""
    out = sys.stdout if out is None else out  # at call time: sys.stdout may be replaced
    parser = OneLineParser(prog="python -m pipeline status",
                           description="Show progress, failures and config of a sweep store.")
    parser.add_argument("store", help="path or URL (s3://bucket/sweep.zarr) of the Zarr store")
    parser.add_argument("--verify", action="store_true",
                        help="read every chunk and every zarr.json; list the cells whose data is "
                             "corrupt or missing and the damaged metadata files")
    parser.add_argument("--repair", action="store_true",
                        help="with --verify: rewrite damaged zarr.json files from their copies or "
                             "the config in the store's run record (cell data is not touched)")
    add_store_options(parser)
    args = parser.parse_args(argv)
    if args.repair and not args.verify:
        raise ConfigError("--repair: use it with --verify (status STORE --verify --repair)")
    loc = location.parse(args.store, store_options(args.store_options))
    if args.repair:
        if not loc.exists():
            raise ConfigError(f"store: {loc.show()} does not exist")
        held = locks.read(loc)
        if held is not None:
            raise ConfigError(f"--repair: a sweep holds the store's lock ({locks.holder(held)}); "
                              "repair once it has finished")
        out.write("\n".join(repair.repair(loc)) + "\n")
    text, n_done, total = describe(loc)
    out.write(text + "\n")
    if args.verify:
        broken = metadata.problems(loc)
        lines, damage = integrity.status_lines(loc)
        lines[1:1] = [f"metadata: {loc.show(key)}: {why}" for key, why in broken.items()]
        if broken:
            lines.append(f"metadata: python -m pipeline status {loc.show()}{loc.cli_hint()} "
                         "--verify --repair rewrites the damaged files")
        out.write("\n".join(lines) + "\n")
        if not damage.clean or broken:
            return 1
    return 0 if n_done == total else 1


def add_store_options(parser: argparse.ArgumentParser) -> None:
    """``--store-options JSON``: fsspec storage options of a URL store (as ``store_options`` of a sweep)."""
    parser.add_argument("--store-options", default=None, metavar="JSON",
                        help="fsspec storage options of a URL store, e.g. "
                             "'{\"endpoint_url\": \"http://host:9000\"}' (credentials: the AWS environment)")


def store_options(text: str | None) -> dict[str, Any]:
    """The parsed ``--store-options`` (ConfigError naming the flag if it is not a JSON object)."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"--store-options: not JSON ({exc})") from None
    if not isinstance(value, dict):
        raise ConfigError("--store-options: must be a JSON object, e.g. '{\"endpoint_url\": \"http://…\"}'")
    return value
