"""The method registry: every dynamics a cell can run, declared once.

A :class:`Method` says what a method is (its name, ``ensemble`` of Monte Carlo chains
or ``density`` evolved by an operator), which landscape dimensions it supports, which
config sections it reads, which store variables it fills and the function that fills
them. ``parse_cell`` validates ``methods`` against it, ``cell_template`` lays out the
store from it, ``run_cell`` calls its fill functions, and the report and the methods page's
method table read it. A new method is one module that calls :func:`register_method`
(see "Adding a method" in docs/guide/methods.md); the built-in ones live in
:mod:`sgdsweep.methods.ensemble` and :mod:`sgdsweep.methods.fokker_planck`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal

from sgdsweep.errors import ConfigError

if TYPE_CHECKING:
    import numpy as np
    import xarray as xr


#: What fill functions receive: a :class:`sgdsweep.cell.context.CellContext`. Named, not
#: imported: the context reads the cell config, and the config reads this registry.
CellContext = Any

KINDS = ("ensemble", "density")


@dataclass(frozen=True)
class Variable:
    """An extra store variable a method adds to its cells: dims after the sweep axes
    (cell dims ``method``, ``t``, ``x``, ``kind``, ``basin`` or none), CF attrs, and its
    fill value until computed (NaN; ``False`` makes it boolean)."""

    dims: tuple[str, ...]
    long_name: str
    units: str = "1"
    fill: float | bool = float("nan")


@dataclass(frozen=True)
class Method:
    """One method, as the registry holds it.

    ``fill(ctx, ds, name)`` computes the method for the cell described by ``ctx``
    (:class:`~sgdsweep.cell.context.CellContext`: config, grid, landscape on the
    grid, basins, escape threshold, temperature, shared FP operators, initial law) and
    writes its slice ``{"method": name}`` of the variables in ``fills`` into ``ds``
    (and its own ``variables``, if any). ``dims``: landscape dimensions it supports.
    ``reads``: config sections it reads (documentation and the methods page's table).
    ``stationary``: extra stationary kinds it provides, kind → ``f(ctx)`` returning
    the density on the cell's density grid (the ``stationary`` variable gains those
    ``kind`` labels when the method is in a cell). ``variables``: extra store
    variables (name → :class:`Variable`) present in cells that run the method.
    ``summary`` and ``time`` are the method table's "what runs" and "time" columns.
    ``validate(cell)``: optional checks of a parsed :class:`~sgdsweep.cell.config.CellConfig`
    the method cannot run with, raising :class:`~sgdsweep.errors.ConfigError` (called by
    ``parse_cell``, so bad input is refused before anything is computed).
    ``label``, ``color`` and ``linestyle``: how figures draw it (``label`` defaults to the
    name; ``color`` an Okabe–Ito colour name of :mod:`sgdsweep.analysis.plots` or any
    matplotlib colour, None for the cycle). ``kernel``: the compiled Monte Carlo step rule it
    runs (an id of :mod:`sgdsweep.montecarlo.kernels`, None if none) and ``stream`` the
    random stream its chains draw from (defaults to the kernel id; methods that share a
    stream see common random numbers). ``section``: its own config section, if any.
    ``needs_temperature``: the cell must provide a temperature (``langevin.temperature`` or
    its default) when the method runs.
    ``fill_model(ctx, ds, name)``: the same for cells on model landscapes
    (:class:`~sgdsweep.cell.model_context.ModelContext`); None if the method does not run there.
    """

    name: str
    kind: Literal["ensemble", "density"]
    fill: Callable[[CellContext, xr.Dataset, str], None]
    dims: tuple[int, ...] = (1,)
    reads: tuple[str, ...] = ()
    fills: tuple[str, ...] = ()
    stationary: Mapping[str, Callable[[CellContext], np.ndarray]] = field(default_factory=dict)
    variables: Mapping[str, Variable] = field(default_factory=dict)
    summary: str = ""
    time: str = "t"
    validate: Callable[[Any], None] | None = None
    label: str = ""
    color: str | None = None
    linestyle: str = "-"
    kernel: int | None = None
    stream: int | None = None
    section: str | None = None
    needs_temperature: bool = False
    fill_model: Callable[[Any, xr.Dataset, str], None] | None = None

    def __post_init__(self) -> None:
        if not self.label:
            object.__setattr__(self, "label", self.name)
        if self.stream is None:
            object.__setattr__(self, "stream", self.kernel)
        if not self.name.isidentifier():
            raise ValueError(f"method name {self.name!r}: must be an identifier")
        if self.kind not in KINDS:
            raise ValueError(f"method {self.name}: kind must be one of {KINDS}, got {self.kind!r}")
        if not callable(self.fill):
            raise ValueError(f"method {self.name}: fill must be callable")
        if self.validate is not None and not callable(self.validate):
            raise ValueError(f"method {self.name}: validate must be callable or None")


_REGISTRY: dict[str, Method] = {}
#: The registered methods by name, in registration order (read-only view).
METHODS: Mapping[str, Method] = MappingProxyType(_REGISTRY)
#: Modules that register the built-in methods; imported on first use of the registry.
BUILTIN_MODULES = ("sgdsweep.methods.ensemble", "sgdsweep.methods.fokker_planck",
                   "sgdsweep.methods.svag", "sgdsweep.methods.injected_noise",
                   "sgdsweep.methods.modified_equation",
                   "sgdsweep.methods.transfer")
_loaded = False


def _load_builtins() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        for module in BUILTIN_MODULES:
            importlib.import_module(module)


def register_method(method: Method | None = None, /, **fields: Any) -> Method:
    """Add a method to the registry and return it.

    Either ``register_method(Method(...))`` or ``register_method(name=..., kind=...,
    fill=..., ...)`` (the :class:`Method` fields). Registering the same name twice
    with a different record is an error; re-registering an equal record (a module
    imported twice) is a no-op.
    """
    rec = method if method is not None else Method(**fields)
    old = _REGISTRY.get(rec.name)
    if old is not None and old != rec:
        raise ValueError(f"method {rec.name!r} is already registered (by {old.fill.__module__})")
    _REGISTRY[rec.name] = rec
    return rec


def get_method(name: str) -> Method:
    """The registered method ``name``; ConfigError naming the known ones otherwise."""
    _load_builtins()
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ConfigError(f"methods: unknown method {name!r} (known: {', '.join(_REGISTRY)})") from None


def registered() -> Mapping[str, Method]:
    """All registered methods (built-ins loaded), by name in registration order."""
    _load_builtins()
    return METHODS


def method_table() -> str:
    """The method table of docs/guide/methods.md (Markdown), generated from the registry."""
    rows = ["| method | kind | dims | what runs | time | reads |", "| --- | --- | --- | --- | --- | --- |"]
    for m in registered().values():
        reads = ", ".join(f"`{r}`" for r in m.reads) or "—"
        dims = ", ".join(f"{d}-D" for d in m.dims)
        rows.append(f"| `{m.name}` | {m.kind} | {dims} | {m.summary} | {m.time} | {reads} |")
    return "\n".join(rows)
