"""The configuration of one grid point ("cell"): its schema and its validation.

The schema is defined here once, as dataclasses (:class:`CellSchema` and its
sections): every key with its type, default, unit and meaning. The pipeline builds
its Hydra structured config from it; ``run_cell`` takes a plain mapping laid out
like it (a resolved Hydra node, or a dict typed in a notebook; missing keys take
the defaults) and :func:`parse_cell` checks every field and raises
:class:`~sgdsweep.errors.ConfigError` naming the first bad one.

A method module may add its own section with :func:`register_section` (a dataclass
of defaults); its parsed values are in ``CellConfig.sections[name]``.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sgdsweep.cell.layout import check_memory
from sgdsweep.cell.model_config import ModelCellConfig, ModelsConf, is_model_landscape, parse_model_cell
from sgdsweep.cell.schedule import parse_methods, parse_schedule, parse_step, parse_temperature
from sgdsweep.errors import ConfigError
from sgdsweep.fokker_planck.conventions import CONVENTIONS
from sgdsweep.landscapes.grid import Grid1D
from sgdsweep.landscapes.initial import Initial
from sgdsweep.landscapes.landscape import Landscape, build_landscape
from sgdsweep.landscapes.noise import batch_noise_factor
from sgdsweep.methods.registry import Method
from sgdsweep.validate import integer, real


def setting(default: Any = dataclasses.MISSING, *, unit: str = "", help: str = "",
            factory: Any = dataclasses.MISSING) -> Any:
    """A schema field with its unit and meaning (``dataclasses.field`` metadata)."""
    meta = {"unit": unit, "help": help}
    if factory is not dataclasses.MISSING:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class DensityGridConf:
    """The grid of densities, histograms and of the Fokker–Planck solver (not sweepable)."""

    lower: Any = setting(-1.0, unit="θ", help="lower edge; a number, or one per axis in 2-D")
    upper: Any = setting(4.0, unit="θ", help="upper edge; a number, or one per axis in 2-D")
    cells: Any = setting(250, unit="1", help="number of cells (per axis)")


@dataclass
class TimeConf:
    """Snapshot times, in SDE time t = η · step."""

    t_end: float = setting(10.0, unit="SDE time", help="last snapshot time")
    snapshots: int = setting(21, unit="1", help="number of evenly spaced snapshots from t = 0")


@dataclass
class MCConf:
    """Monte Carlo ensembles."""

    chains: int = setting(1000, unit="1", help="chains per ensemble")
    sde_substeps: int = setting(10, unit="1", help="Euler–Maruyama steps per SGD step (dt = η / substeps)")
    max_steps: int = setting(20_000_000, unit="SGD steps", help="refuse runs longer than this")


@dataclass
class LangevinConf:
    """Langevin dynamics and the Gibbs reference."""

    temperature: float | None = setting(None, unit="loss", help="T; null: the SDE's D at the "
                                        "grid's lowest loss (see docs/guide/methods.md)")


@dataclass
class FPConf:
    """The Fokker–Planck solver."""

    convention: str = setting("ito", help="ito | stratonovich | isothermal")
    dt: float | None = setting(None, unit="SDE time", help="implicit Euler step; null: η / mc.sde_substeps")
    refine: int = setting(8, unit="1", help="FP cells per density-grid cell")


@dataclass
class EscapeConf:
    """First passages."""

    threshold: float | None = setting(None, unit="θ", help="null: the barrier top next to the "
                                      "starting basin (of init.mean; of the midpoint of a uniform law)")


def _default_init() -> dict[str, Any]:
    return {"kind": "normal", "mean": 0.5, "std": 0.175}


def _default_methods() -> list[str]:
    return ["sgd", "sde", "langevin", "gd", "fp", "fp_drift"]


@dataclass
class CellSchema:
    """Every setting of a cell (``landscape`` aside, which is required and free-form)."""

    lr: float = setting(0.02, unit="1", help="learning rate η (SDE time t = η · step)")
    batch_size: int = setting(1, unit="samples", help="minibatch size b")
    sampling: str = setting("with_replacement", help="with_replacement | without_replacement | reshuffle")
    methods: list[str] = setting(factory=_default_methods, help="methods to run (the method registry)")
    seed: int = setting(0, help="master seed of every random stream")
    init: dict[str, Any] = setting(factory=_default_init, unit="θ", help="initial law: "
                                   "{kind: normal, mean, std} | {kind: uniform, lower, upper}")
    density_grid: DensityGridConf = setting(factory=DensityGridConf)
    time: TimeConf = setting(factory=TimeConf)
    mc: MCConf = setting(factory=MCConf)
    langevin: LangevinConf = setting(factory=LangevinConf)
    fp: FPConf = setting(factory=FPConf)
    escape: EscapeConf = setting(factory=EscapeConf)
    models: ModelsConf = setting(factory=ModelsConf)


#: Sections added by method modules (name → dataclass of defaults).
_SECTIONS: dict[str, type] = {}


def register_section(name: str, schema: type) -> type:
    """Add a config section ``name`` (a dataclass of defaults) for a method module.

    It becomes a key of the cell mapping and of the sweep config (``name.key=value`` on
    the command line); ``parse_cell`` merges it with its defaults, builds
    ``schema(**values)`` (a ``__post_init__`` may validate and raise ConfigError) and
    puts it in ``CellConfig.sections[name]``. Returns ``schema``.
    """
    if not dataclasses.is_dataclass(schema):
        raise ValueError(f"section {name!r}: expected a dataclass, got {schema!r}")
    if name in {f.name for f in dataclasses.fields(CellSchema)} | {"landscape"} or \
            _SECTIONS.get(name, schema) is not schema:
        raise ValueError(f"config section {name!r} is already defined")
    _SECTIONS[name] = schema
    return schema


def sections() -> dict[str, type]:
    """The config sections registered by method modules."""
    from sgdsweep.methods.registry import registered

    registered()  # method modules register their sections on import
    return dict(_SECTIONS)


#: ``defaults()`` per set of registered sections (``dataclasses.asdict`` per cell was
#: ~40 % of planning a sweep).
_DEFAULTS: dict[tuple[tuple[str, int], ...], dict[str, Any]] = {}


def defaults() -> dict[str, Any]:
    """The default cell mapping (without ``landscape``), from the schema (a fresh copy)."""
    secs = sections()
    key = tuple((name, id(schema)) for name, schema in secs.items())
    if key not in _DEFAULTS:
        out = dataclasses.asdict(CellSchema())
        for name, schema in secs.items():
            out[name] = dataclasses.asdict(schema())
        _DEFAULTS.clear()
        _DEFAULTS[key] = out
    return _fresh(_DEFAULTS[key])


def _fresh(value: Any) -> Any:
    """A copy of the dicts and lists of a defaults mapping (its leaves are immutable)."""
    if isinstance(value, dict):
        return {k: _fresh(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_fresh(v) for v in value]
    return value


@dataclass(frozen=True, eq=False)
class CellConfig:
    """A validated cell. Times are SDE times t = η·step (η = ``lr``)."""

    landscape: Landscape
    lr: float
    batch_size: int
    sampling: str
    methods: tuple[str, ...]
    seed: int
    init: Initial
    grids: tuple[Grid1D, ...]  # one per axis
    times: np.ndarray  # nominal snapshot times, (S,)
    steps: np.ndarray  # SGD step of each snapshot, round(t / η), (S,)
    chains: int
    sde_substeps: int
    temperature: float | None  # None: the documented default (see references)
    convention: str
    fp_dt: float | None  # None: η / sde_substeps
    fp_refine: int  # FP cells per output cell
    escape_threshold: float | None  # None: barrier top next to the starting basin
    # The registry records of ``methods``: a pickled cell carries them (and imports the
    # modules that registered them) to whichever process runs it.
    method_specs: tuple[Method, ...] = ()
    sections: dict[str, Any] = field(default_factory=dict)  # registered sections, parsed

    @property
    def dim(self) -> int:
        return self.landscape.dim

    @property
    def noise_factor(self) -> float:
        """Σ_b / Σ for this batch size and sampling scheme."""
        return batch_noise_factor(self.landscape.n, self.batch_size, self.sampling)


def merge_defaults(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The schema's defaults updated by ``cfg`` (one level of nesting), as a fresh dict."""
    out = defaults()
    unknown = set(cfg) - set(out) - {"landscape"}
    if unknown:
        raise ConfigError(f"{sorted(unknown)[0]}: unknown cell setting (known: "
                          f"{', '.join(['landscape', *out])})")
    for key, value in cfg.items():
        if isinstance(out.get(key), dict):
            if not isinstance(value, Mapping):
                raise ConfigError(f"{key}: expected a mapping, got {value!r}")
            extra = set(value) - set(out[key]) - ({"mean", "std", "lower", "upper"}
                                                   if key == "init" else set())
            if extra:
                raise ConfigError(f"{key}.{sorted(extra)[0]}: unknown setting "
                                  f"(known: {', '.join(out[key])})")
            out[key].update(value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _per_axis(spec: Mapping[str, Any], key: str, dim: int) -> np.ndarray:
    """``density_grid.<key>`` as one value per axis: a number (every axis) or ``dim`` values."""
    raw = spec[key]
    try:
        arr = np.asarray(raw, dtype=object)
    except ValueError:  # ragged nesting
        arr = np.empty(2, dtype=object)
    if arr.ndim == 0:
        return np.broadcast_to(arr, (dim,))
    if arr.ndim != 1 or arr.size != dim:
        count = f"{arr.size} value{'s' if arr.size != 1 else ''}" if arr.ndim == 1 else "nested values"
        raise ConfigError(f"density_grid.{key}: {raw!r} gives {count} for a {dim}-D landscape; "
                          "give one number" + ("" if dim == 1 else f", or {dim} (one per axis)"))
    return arr


def _grids(spec: Mapping[str, Any], dim: int) -> tuple[Grid1D, ...]:
    lo, hi, n = (_per_axis(spec, key, dim) for key in ("lower", "upper", "cells"))
    return tuple(
        Grid1D(real(lo[a], "density_grid.lower"), real(hi[a], "density_grid.upper"),
               integer(n[a], "density_grid.cells", 3))
        for a in range(dim)
    )


def _parse_sections(raw: Mapping[str, Any]) -> dict[str, Any]:
    out = {}
    for name, schema in sections().items():
        try:
            out[name] = schema(**raw[name])
        except TypeError as exc:
            raise ConfigError(f"{name}: {exc}") from None
    return out


def parse_cell(cfg: Mapping[str, Any]) -> CellConfig | ModelCellConfig:
    """Validate a cell mapping (missing keys take the schema's defaults) into a :class:`CellConfig`
    (a :class:`~sgdsweep.cell.model_config.ModelCellConfig` when ``landscape.family`` is ``model``)."""
    if not isinstance(cfg, Mapping):
        raise ConfigError(f"cell config: expected a mapping, got {type(cfg).__name__}")
    if "landscape" not in cfg:
        raise ConfigError("landscape: missing")
    raw = merge_defaults(cfg)
    if is_model_landscape(raw["landscape"]):
        return parse_model_cell(raw, _parse_sections(raw))
    land = build_landscape(raw["landscape"])

    lr, batch_size, sampling = parse_step(raw, land.n)

    methods, specs = parse_methods(raw)
    for m in specs:
        if land.dim not in m.dims:
            raise ConfigError(f"methods: {m.name} supports "
                              f"{' and '.join(f'{d}-D' for d in m.dims)} landscapes only, "
                              f"this one is {land.dim}-D; drop {m.name}")
    seed = integer(raw["seed"], "seed", 0)

    init = Initial.from_dict(dict(raw["init"]), land.dim)
    grids = _grids(raw["density_grid"], land.dim)
    for a, g in enumerate(grids):
        lo, hi = init.support(a)
        if lo < g.lower or hi > g.upper:
            axis = "" if land.dim == 1 else f" (axis {a})"
            raise ConfigError(
                f"density_grid: [{g.lower}, {g.upper}]{axis} does not cover the initial distribution "
                f"(its support is [{lo:.4g}, {hi:.4g}])"
            )

    sched = parse_schedule(raw, lr)
    times, steps, chains, substeps = sched.times, sched.steps, sched.chains, sched.sde_substeps

    temperature = parse_temperature(raw)
    convention = raw["fp"]["convention"]
    if convention not in CONVENTIONS:
        raise ConfigError(f"fp.convention: unknown {convention!r} (known: {', '.join(CONVENTIONS)})")
    fp_dt = raw["fp"]["dt"]
    fp_dt = None if fp_dt is None else real(fp_dt, "fp.dt", positive=True)
    fp_refine = integer(raw["fp"]["refine"], "fp.refine", 1)
    thr = raw["escape"]["threshold"]
    thr = None if thr is None else real(thr, "escape.threshold")
    if thr is not None and land.dim == 1:  # the FP grid, fp_refine times finer, holds the threshold
        from sgdsweep.fokker_planck.passage import check_threshold

        check_threshold(thr, grids[0].refined(fp_refine))
    parsed_sections = _parse_sections(raw)

    cell = CellConfig(
        landscape=land, lr=lr, batch_size=batch_size, sampling=sampling,
        methods=tuple(methods), seed=seed, init=init, grids=grids, times=times, steps=steps,
        chains=chains, sde_substeps=substeps, temperature=temperature, convention=convention,
        fp_dt=fp_dt, fp_refine=fp_refine, escape_threshold=thr,
        method_specs=specs, sections=parsed_sections,
    )
    # A cell that cannot fit in this machine's memory is refused before a validator (or
    # anything else) allocates on its grid; the pipeline checks a worker's share too.
    check_memory(cell)
    for m in specs:
        if m.validate is not None:
            m.validate(cell)
    return cell
