"""The sweep configuration: Hydra composition, its typed schema, and grid expansion.

``compose(overrides)`` builds the config from ``conf/`` (Hydra's compose API, so
nothing changes directory and no output folders appear). ``expand(cfg)`` turns it
into a :class:`SweepPlan`: one sweep axis per ``grid`` entry and one plain cell
mapping (the ``sgdsweep.run_cell`` input) per grid point, each validated once with
``sgdsweep.parse_cell`` before anything touches the store; the parsed cells are what
the workers run. The schema is the cell's own (``sgdsweep.cell.config.CellSchema``)
plus the sweep's keys.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import importlib
import itertools
import json
import os
import re
import sys
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import MISSING, DictConfig, OmegaConf, open_dict

from pipeline.cluster import settings as cluster_settings
from pipeline.limits import check_cell_count
from pipeline.run import settings as run_settings
from pipeline.store.location import redact
from sgdsweep.cell import config as cellconfig
from sgdsweep.cell.config import CellConfig, CellSchema, parse_cell
from sgdsweep.errors import ConfigError


def _conf_dir() -> Path:
    """$SGDSWEEP_CONF; else ``pipeline/conf`` of an installed wheel (setup.py ships the
    repository's ``conf/`` there); else ``conf/`` beside the package (a checkout or an
    editable install)."""
    if os.environ.get("SGDSWEEP_CONF"):
        return Path(os.environ["SGDSWEEP_CONF"])
    here = Path(__file__).resolve().parent
    shipped = here / "conf"
    return shipped if (shipped / "config.yaml").is_file() else here.parent / "conf"


#: Where the package's config tree lives (the primary entry of Hydra's search path).
CONF_DIR = _conf_dir()

#: Top-level keys that configure the run, not the numbers: excluded from the config
#: hash, so moving a store or changing the cluster still resumes.
RUNTIME_KEYS = ("store", "store_options", "overwrite", "cluster",
                *(f.name for f in dataclasses.fields(run_settings.RunConf)))
#: Keys that shape the cell's coordinates (x, t, method) and so cannot be swept.
UNSWEEPABLE = ("grid", "density_grid", "time", "methods", "plugins", *RUNTIME_KEYS)
RANGE_KEYS = {"start", "stop", "num", "log"}
#: Blocks chosen by a ``kind`` whose fields depend on it: ``init={kind: uniform, lower: …}``
#: on the command line replaces the block (Hydra would merge it into the default
#: ``{kind: normal, mean, std}`` and refuse the new keys).
REPLACED_BLOCKS = ("init",)


# --------------------------------------------------------------------------- schema


def _copy_field(f: dataclasses.Field) -> dataclasses.Field:
    if f.default is not dataclasses.MISSING:
        return field(default=f.default, metadata=f.metadata)
    return field(default_factory=f.default_factory, metadata=f.metadata)


def sweep_schema() -> type:
    """Typed schema of the sweep config; Hydra rejects unknown keys and bad types.

    The cell's settings are :class:`sgdsweep.cell.config.CellSchema` (defaults, units and
    meanings are defined there once) plus the sections method modules registered; the
    sweep adds the landscape and cluster groups (the cluster kinds' settings:
    ``pipeline.cluster.settings``), the store, the grid and the execution settings
    (``pipeline.run.settings.RunConf``). Built when composing, so sections of plugin
    methods are included.
    """
    hints = typing.get_type_hints(CellSchema)
    cell = [(f.name, hints[f.name], _copy_field(f)) for f in dataclasses.fields(CellSchema)]
    extra = [(name, schema, field(default_factory=schema))
             for name, schema in cellconfig.sections().items()]
    return dataclasses.make_dataclass("SweepConf", [
        ("landscape", Any, field(default=MISSING)),
        ("cluster", Any, field(default=MISSING)),
        ("store", str, field(default="results/${landscape.name}.zarr",
                             metadata={"help": "Zarr store of the sweep: a path (relative to the working "
                                               "dir) or an fsspec URL such as s3://bucket/sweep.zarr"})),
        ("store_options", dict[str, Any], field(default_factory=dict, metadata={
            "help": "fsspec storage options of a URL store (e.g. endpoint_url, profile); credentials "
                    "are best left to the AWS environment (secret-looking values are not recorded)"})),
        ("overwrite", bool, field(default=False,
                                  metadata={"help": "replace an existing store of a different sweep"})),
        ("grid", dict[str, Any], field(default_factory=dict,
                                       metadata={"help": "sweep axes: config path -> values or range"})),
        ("plugins", list[str], field(default_factory=list,
                                     metadata={"help": "modules imported first: they register methods"})),
        *cell, *extra, *run_settings.hydra_fields(),
    ])


def cell_keys() -> tuple[str, ...]:
    """Top-level keys passed to run_cell: ``landscape`` and the cell schema's keys."""
    return ("landscape", *cellconfig.defaults())


def import_plugins(modules: Sequence[str]) -> None:
    """Import the modules named in ``plugins`` (they register methods and sections)."""
    for name in modules:
        if name in sys.modules:
            continue
        try:
            importlib.import_module(name)
        except Exception as exc:
            raise ConfigError(f"plugins: cannot import {name!r} ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else ''})") from None


# --------------------------------------------------------------------------- composition


def compose(overrides: Sequence[str], config_name: str = "config",
            config_dirs: Sequence[str | Path] = ()) -> DictConfig:
    """The composed config for these Hydra overrides; bad input raises ConfigError.

    ``config_name`` is the primary config (``--config-name``) and ``config_dirs`` are
    the user's config directories (``--config-dir``): as in Hydra's own CLI they join
    the search path after :data:`CONF_DIR` (they add landscapes, experiments and
    primary configs; they do not shadow the package's). ``hydra.searchpath=[…]``
    overrides add further directories for config groups (not for the primary config).

    ``grid`` overrides are applied after composition with replace (not merge)
    semantics, so ``grid.lr='[…]'`` adds or replaces an axis, a range spec may
    replace a list, ``~grid.lr`` drops an axis and ``grid='{…}'`` replaces the grid.
    """
    if not (CONF_DIR / "config.yaml").is_file():
        raise ConfigError(f"config: no config.yaml in {CONF_DIR} (set SGDSWEEP_CONF)")
    _plugins_from_overrides(overrides)
    cfg = _compose(overrides, config_name, config_dirs)
    known = set(cellconfig.sections())
    import_plugins(list(cfg.get("plugins") or ()))
    if set(cellconfig.sections()) != known:  # a plugin from the config files added a section
        cfg = _compose(overrides, config_name, config_dirs)
    return cfg


def _plugins_from_overrides(overrides: Sequence[str]) -> None:
    for o in overrides:
        if re.match(r"^\+{0,2}plugins=", o):
            try:
                value = OverridesParser.create().parse_overrides([o])[0].value()
            except Exception as exc:
                raise ConfigError(hydra_message(exc)) from None
            import_plugins([value] if isinstance(value, str) else list(value or ()))


def _compose(overrides: Sequence[str], config_name: str, config_dirs: Sequence[str | Path]) -> DictConfig:
    schema = sweep_schema()
    ConfigStore.instance().store(name="sweep_schema", node=schema)
    cluster_settings.register(ConfigStore.instance())
    try:
        grid_ovs = [o for o in overrides if re.match(r"^[~+]*grid(\.|=|$)", o)]
        block_ovs = [o for o in overrides if re.match(rf"^({'|'.join(REPLACED_BLOCKS)})=\s*{{", o)]
        hydra_ovs = [o for o in overrides if o not in grid_ovs and o not in block_ovs]
        parsed = OverridesParser.create().parse_overrides(grid_ovs)
        blocks = OverridesParser.create().parse_overrides(block_ovs)
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            if config_dirs:
                _add_config_dirs(config_dirs)
            cfg = hydra_compose(config_name=config_name, overrides=hydra_ovs)
        with open_dict(cfg):
            for o in blocks:
                OmegaConf.update(cfg, o.key_or_group, o.value(), merge=False, force_add=True)
            for o in parsed:
                key = o.key_or_group
                if o.is_delete():
                    parent, _, leaf = key.rpartition(".")
                    node = OmegaConf.select(cfg, parent)
                    if not isinstance(node, DictConfig) or leaf not in node:
                        raise ConfigError(f"{key}: not in the grid, nothing to delete")
                    node.pop(leaf)
                elif not isinstance(o.value(), str | int | float | bool | list | dict | type(None)):
                    raise ConfigError(f"{key}: sweeps are written as lists, e.g. {key}='[1,2]'")
                else:
                    OmegaConf.update(cfg, key, o.value(), merge=False, force_add=True)
        # Surface interpolation and type errors now, but keep the interpolations:
        # swept values set later must flow through them (e.g. ${...width_left}).
        OmegaConf.to_container(cfg, resolve=True)
        unknown = sorted(set(cfg) - set(schema.__dataclass_fields__))
        if unknown:
            raise ConfigError(f"{unknown[0]}: unknown config key")
    except ConfigError:
        raise
    except Exception as exc:  # Hydra/OmegaConf report bad input with many exception types
        raise ConfigError(hydra_message(exc)) from None
    return cfg


def _add_config_dirs(dirs: Sequence[str | Path]) -> None:
    """Hydra's own ``--config-dir`` (hydra._internal.utils.run_hydra) for the compose API:
    the same search path, each directory inserted before the structured-config schema."""
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import create_config_search_path
    from hydra.core.config_search_path import SearchPathQuery
    from hydra.core.global_hydra import GlobalHydra

    csp = create_config_search_path(str(CONF_DIR))
    for d in dirs:
        path = Path(d).expanduser().absolute()
        if not path.is_dir():
            raise ConfigError(f"--config-dir: {path} is not a directory")
        csp.prepend(provider="command-line", path=f"file://{path}", anchor=SearchPathQuery(provider="schema"))
    GlobalHydra.instance().clear()  # the enclosing initialize_config_dir restores its state on exit
    Hydra.create_main_hydra2(task_name="app", config_search_path=csp)


def _chain(exc: BaseException) -> list[BaseException]:
    out: list[BaseException] = []
    while exc is not None and exc not in out:
        out.append(exc)
        exc = exc.__cause__ or exc.__context__
    return out


def hydra_message(exc: BaseException) -> str:
    """One line ``<field>: <problem>`` for a Hydra/OmegaConf exception."""
    chain = _chain(exc)
    texts = [str(e).strip() for e in chain]
    text = "\n".join(texts)
    first = next((t.splitlines()[0] for t in texts if t), type(exc).__name__)
    m = re.search(r"Cannot find primary config '([^']+)'", text)
    if m:
        return f"--config-name: no {m.group(1)}.yaml in the config search path (add its directory with -cd)"
    m = re.search(r"Could not find '([^/']+)/([^']+)'", text)
    if m:
        group, option = m.groups()
        avail = re.findall(r"^\s+(\S+)\s*$", text.split("Available options", 1)[-1], re.M)
        avail = [a for a in avail if not a.endswith("_schema")]  # the structured configs options extend
        known = f" (available: {', '.join(avail)})" if avail else ""
        return f"{group}: unknown option {option!r}{known}"
    m = re.search(r"Key '([^']+)' (?:not in '[^']*'|is not in struct)", text)
    if m:
        full = re.search(r"full_key: (\S+)", text)
        key = full.group(1) if full else m.group(1)
        block = key.split(".", 1)[0]
        if block in REPLACED_BLOCKS and "." in key:
            return (f"{key}: unknown config key of the current {block} block; replace the whole "
                    f"block instead, e.g. {block}='{{kind: uniform, lower: -2, upper: 2}}' "
                    "(python -m pipeline sweep --help-keys lists the kinds)")
        return f"{key}: unknown config key"
    m = re.search(r"Could not (?:override|append to|delete) '([^']+)'", text)
    if m:
        return f"{m.group(1)}: {_short(texts[-1].splitlines()[0])}"
    m = re.search(r"full_key: (\S+)", text)
    if m:
        detail = next(t.splitlines()[0] for t in reversed(texts) if t and "full_key" in t)
        return f"{m.group(1)}: {_short(detail)}"
    m = re.search(r"override (\S+?)=", first)
    if m:
        return f"{m.group(1)}: {_short(texts[-1].splitlines()[0])}"
    if "override" in type(exc).__name__.lower() or "parse" in first.lower():
        return f"overrides: {_short(first)}"
    return f"config: {_short(first)}"


def _short(text: str) -> str:
    return " ".join(text.split())[:300]


# --------------------------------------------------------------------------- the sweep plan


@dataclass(frozen=True)
class Axis:
    """One sweep dimension: store dimension ``name`` varies config ``path``."""

    name: str
    path: str
    values: tuple[Any, ...]


@dataclass
class SweepPlan:
    """Every cell of a sweep, in C order over ``axes``."""

    axes: list[Axis]
    cells: list[dict[str, Any]]  # run_cell mappings (what the config hash covers)
    config_hash: str
    resolved_yaml: str
    parsed: list[CellConfig] = field(default_factory=list)  # the validated cells, shipped to workers

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(len(a.values) for a in self.axes)

    def index(self, flat: int) -> tuple[int, ...]:
        return tuple(int(i) for i in np.unravel_index(flat, self.shape))

    def coords(self, flat: int) -> dict[str, Any]:
        return {a.name: a.values[i] for a, i in zip(self.axes, self.index(flat), strict=True)}


def _leaves(node: Any, prefix: str = "") -> dict[str, Any]:
    """Scalar leaves of a plain nested mapping, by dotted path."""
    out: dict[str, Any] = {}
    if isinstance(node, Mapping):
        for k, v in node.items():
            out.update(_leaves(v, f"{prefix}{k}."))
    elif not isinstance(node, list):
        out[prefix[:-1]] = node
    return out


def _flatten_grid(grid: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``grid.landscape.width_left=[…]`` arrives nested; range specs are leaves."""
    out: dict[str, Any] = {}
    for k, v in grid.items():
        if isinstance(v, Mapping) and not (set(v) & RANGE_KEYS):
            if not v:
                raise ConfigError(f"grid.{prefix}{k}: empty mapping (expected a list of values)")
            out.update(_flatten_grid(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _resolve_path(key: str, leaves: Mapping[str, Any]) -> str:
    if key in leaves:
        path = key
    elif "." in key:
        raise ConfigError(f"grid.{key}: no such config key")
    else:
        hits = [p for p in leaves if p.rsplit(".", 1)[-1] == key]
        if not hits:
            raise ConfigError(f"grid.{key}: no such config key")
        if len(hits) > 1:
            raise ConfigError(f"grid.{key}: ambiguous, matches {', '.join(sorted(hits))}; give the full path")
        path = hits[0]
    if path.split(".", 1)[0] in UNSWEEPABLE:
        raise ConfigError(f"grid.{key}: {path} cannot be swept (it shapes the store's coordinates "
                          "or the run itself); set it directly instead")
    return path


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float | np.integer | np.floating) and not isinstance(v, bool)


def _values(key: str, spec: Any, default: Any) -> tuple[Any, ...]:
    field_ = f"grid.{key}"
    if isinstance(spec, Mapping):
        unknown = set(spec) - RANGE_KEYS
        missing = {"start", "stop", "num"} - set(spec)
        if unknown or missing:
            bad = sorted(unknown or missing)[0]
            raise ConfigError(f"{field_}: range spec {'has unknown key' if unknown else 'needs'} {bad!r} "
                              "(give {start, stop, num[, log]})")
        start, stop, num = spec["start"], spec["stop"], spec["num"]
        if not (_is_number(start) and _is_number(stop)):
            raise ConfigError(f"{field_}: range start/stop must be numbers, got {start!r}, {stop!r}")
        if not isinstance(num, int) or isinstance(num, bool) or num < 1:
            raise ConfigError(f"{field_}: range num must be an integer >= 1, got {num!r}")
        check_cell_count([Axis(key, key, range(num))])  # before building a huge list of values
        if spec.get("log", False):
            if start <= 0 or stop <= 0:
                raise ConfigError(f"{field_}: log range needs start, stop > 0, got {start!r}, {stop!r}")
            values = [float(v) for v in np.geomspace(start, stop, num)]
        else:
            values = [float(v) for v in np.linspace(start, stop, num)]
    elif isinstance(spec, list | tuple):
        values = list(spec)
    elif spec is None:
        raise ConfigError(f"{field_}: expected a list of values, got null")
    else:
        values = [spec]
    if not values:
        raise ConfigError(f"{field_}: empty list of values")
    numeric = default is None or _is_number(default)
    for v in values:
        if isinstance(v, Mapping | list | tuple):
            raise ConfigError(f"{field_}: expected scalar values, got {v!r}")
        if numeric and not _is_number(v):
            raise ConfigError(f"{field_}: expected numbers, got {v!r}")
        if not numeric and not isinstance(v, type(default)):
            raise ConfigError(f"{field_}: expected {type(default).__name__} values, got {v!r}")
    if len(set(values)) != len(values):
        dup = next(v for v in values if values.count(v) > 1)
        raise ConfigError(f"{field_}: duplicate value {dup!r}")
    if numeric and all(isinstance(v, int | np.integer) for v in values):
        return tuple(int(v) for v in values)
    if numeric:
        return tuple(float(v) for v in values)
    return tuple(values)


def _dim_names(paths: Sequence[str], reserved: set[str]) -> list[str]:
    short = [p.rsplit(".", 1)[-1] for p in paths]
    return [s if short.count(s) == 1 and s not in reserved else p.replace(".", "_")
            for s, p in zip(short, paths, strict=True)]


def sweep_axes(cfg: DictConfig, reserved: set[str] = frozenset()) -> list[Axis]:
    """The grid of ``cfg`` as axes (validated paths and values)."""
    grid = OmegaConf.to_container(cfg.grid, resolve=True)
    flat = _flatten_grid(grid or {})
    if not flat:
        raise ConfigError("grid: empty; give at least one axis, e.g. grid.lr='[0.01,0.02]'")
    plain = OmegaConf.to_container(cfg, resolve=True)
    leaves = {p: v for p, v in _leaves(plain).items() if p.split(".", 1)[0] != "grid"}
    paths, values = [], []
    for key, spec in flat.items():
        path = _resolve_path(key, leaves)
        if path in paths:
            raise ConfigError(f"grid.{key}: {path} is swept twice")
        paths.append(path)
        values.append(_values(key, spec, leaves[path]))
    names = _dim_names(paths, set(reserved))
    return [Axis(n, p, v) for n, p, v in zip(names, paths, values, strict=True)]


def cell_mapping(plain: Mapping[str, Any]) -> dict[str, Any]:
    """The ``run_cell`` input from a resolved sweep config (plain containers)."""
    return {key: plain[key] for key in cell_keys()}


def _cell_of(base: DictConfig, axes: Sequence[Axis], combo: Sequence[Any]) -> dict[str, Any]:
    """One cell: the swept values set on a copy of the unresolved config, then resolved."""
    c = base.copy()
    for axis, value in zip(axes, combo, strict=True):
        OmegaConf.update(c, axis.path, value, merge=False)
    return cell_mapping(OmegaConf.to_container(c, resolve=True))


def _set_paths(resolved: Mapping[str, Any], axes: Sequence[Axis], combo: Sequence[Any]) -> dict[str, Any]:
    """One cell: the swept values set on a copy of the resolved cell mapping.

    Only the mappings along the swept paths are copied; the rest is shared by every
    cell (read-only from here on: ``parse_cell`` copies what it keeps). A deep copy
    per cell was a third of planning and ~3 KB a cell of the client's memory.
    """
    cell = dict(resolved)
    for axis, value in zip(axes, combo, strict=True):
        *parents, last = axis.path.split(".")
        node = cell
        for key in parents:
            child = node.get(key)
            node[key] = dict(child) if isinstance(child, Mapping) else {}
            node = node[key]
        node[last] = copy.deepcopy(value)
    return cell


def _interpolated(node: Any) -> bool:
    """Whether any string in ``node`` (plain containers) is an OmegaConf interpolation."""
    if isinstance(node, Mapping):
        return any(_interpolated(v) for v in node.values())
    if isinstance(node, list | tuple):
        return any(_interpolated(v) for v in node)
    return isinstance(node, str) and "${" in node


def expand(cfg: DictConfig, reserved: set[str] = frozenset()) -> SweepPlan:
    """All cells of the sweep, each validated once with ``parse_cell`` (raises ConfigError).

    Swept values are set on an unstructured copy of the *unresolved* config and then
    resolved, so interpolations (``${..width_left}``) see them.
    """
    axes = sweep_axes(cfg, reserved)
    check_cell_count(axes)  # before planning: a grid too large is refused at once
    plain = OmegaConf.to_container(cfg, resolve=False)
    # The grid's value lists are not part of a cell: copying them for every cell made planning
    # quadratic in the number of cells (a 10⁴-value axis).
    plain.pop("grid", None)
    base = OmegaConf.create(plain)
    # Without interpolations in the cells' part of the config, a swept value cannot change
    # any other value: the cells are the once-resolved mapping with the swept values set
    # (plain dict copies, ~50x cheaper than an OmegaConf copy and resolve per cell).
    resolved_base = None if _interpolated(cell_mapping(plain)) else cell_mapping(
        OmegaConf.to_container(base, resolve=True))
    cells, parsed = [], []
    for combo in itertools.product(*(a.values for a in axes)):
        try:
            cell = (_cell_of(base, axes, combo) if resolved_base is None
                    else _set_paths(resolved_base, axes, combo))
        except Exception as exc:
            raise ConfigError(hydra_message(exc)) from None
        try:
            parsed.append(parse_cell(cell))
        except ConfigError as exc:
            where = ", ".join(f"{a.name}={v}" for a, v in zip(axes, combo, strict=True))
            msg = str(exc)
            raise ConfigError(f"{msg} (in the cell {where})" if len(axes) and msg else msg) from None
        cells.append(cell)
    resolved = OmegaConf.to_yaml(cfg, resolve=True)
    if cfg.get("store_options"):  # the store records its config: no secrets in it
        shown = OmegaConf.to_container(cfg, resolve=True)
        shown["store_options"] = redact(shown["store_options"])
        resolved = OmegaConf.to_yaml(OmegaConf.create(shown))
    return SweepPlan(axes=axes, cells=cells, config_hash=config_hash(axes, cells), resolved_yaml=resolved,
                     parsed=parsed)


def config_hash(axes: Sequence[Axis], cells: Sequence[Mapping[str, Any]]) -> str:
    """sha256 of what determines the numbers: the axes and every cell mapping.

    The bytes of ``json.dumps({"axes": …, "cells": cells}, sort_keys=True,
    default=repr)``, hashed a cell at a time (C encoder per cell) instead of held
    whole (~200 MB at 10⁵ cells).
    """
    def dumps(obj: Any) -> bytes:
        return json.dumps(obj, sort_keys=True, default=repr).encode()

    digest = hashlib.sha256()
    digest.update(b'{"axes": ' + dumps([[a.name, a.path, list(a.values)] for a in axes]) + b', "cells": [')
    for i, cell in enumerate(cells):
        digest.update(dumps(cell) if i == 0 else b", " + dumps(cell))
    digest.update(b"]}")
    return digest.hexdigest()
