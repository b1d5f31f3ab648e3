"""The configuration of one grid point ("cell") and its validation.

``run_cell`` takes a plain mapping (a resolved Hydra node, or a dict typed in a
notebook) laid out like ``DEFAULTS`` below; :func:`parse_cell` checks every field
and raises :class:`~sgdsweep.errors.ConfigError` naming the first bad one.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from sgdsweep.errors import ConfigError
from sgdsweep.grid import Grid1D
from sgdsweep.initial import Initial
from sgdsweep.landscape import Landscape, build_landscape
from sgdsweep.noise import SAMPLINGS, batch_noise_factor
from sgdsweep.validate import integer, real

#: Monte Carlo methods: real minibatch SGD, Euler–Maruyama of its Itô SDE,
#: constant-temperature Langevin, and full-batch gradient descent (drift only).
MC_METHODS = ("sgd", "sde", "langevin", "gd")
#: Fokker–Planck methods: the full Itô FP equation, and drift only (D = 0).
FP_METHODS = ("fp", "fp_drift")
METHODS = MC_METHODS + FP_METHODS
#: Stationary-density conventions and the power α of p ∝ D^(−α) exp(−∫G/D).
CONVENTIONS = {"ito": 1.0, "stratonovich": 0.5, "isothermal": 0.0}

DEFAULTS: dict[str, Any] = {
    "lr": 0.02,
    "batch_size": 1,
    "sampling": "with_replacement",
    "methods": ["sgd", "sde", "langevin", "gd", "fp", "fp_drift"],
    "seed": 0,
    "init": {"kind": "normal", "mean": 0.5, "std": 0.175},
    "grid": {"lower": -1.0, "upper": 4.0, "cells": 250},
    "time": {"t_end": 10.0, "snapshots": 21},
    "mc": {"chains": 1000, "sde_substeps": 10, "max_steps": 20_000_000},
    "langevin": {"temperature": None},
    "fp": {"convention": "ito", "dt": None, "refine": 8},
    "escape": {"threshold": None},
}


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
    raw: dict[str, Any]  # the merged mapping this was parsed from

    @property
    def dim(self) -> int:
        return self.landscape.dim

    @property
    def noise_factor(self) -> float:
        """Σ_b / Σ for this batch size and sampling scheme."""
        return batch_noise_factor(self.landscape.n, self.batch_size, self.sampling)


def merge_defaults(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """``DEFAULTS`` updated by ``cfg`` (one level of nesting), as a fresh dict."""
    out = copy.deepcopy(DEFAULTS)
    unknown = set(cfg) - set(DEFAULTS) - {"landscape"}
    if unknown:
        raise ConfigError(f"{sorted(unknown)[0]}: unknown cell setting (known: "
                          f"{', '.join(['landscape', *DEFAULTS])})")
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


def _grids(spec: Mapping[str, Any], dim: int) -> tuple[Grid1D, ...]:
    lo = np.broadcast_to(np.asarray(spec["lower"], dtype=object), (dim,))
    hi = np.broadcast_to(np.asarray(spec["upper"], dtype=object), (dim,))
    n = np.broadcast_to(np.asarray(spec["cells"], dtype=object), (dim,))
    return tuple(
        Grid1D(real(lo[a], "grid.lower"), real(hi[a], "grid.upper"),
               integer(n[a], "grid.cells", 3))
        for a in range(dim)
    )


def parse_cell(cfg: Mapping[str, Any]) -> CellConfig:
    """Validate a cell mapping (missing keys take ``DEFAULTS``) into a :class:`CellConfig`."""
    if not isinstance(cfg, Mapping):
        raise ConfigError(f"cell config: expected a mapping, got {type(cfg).__name__}")
    if "landscape" not in cfg:
        raise ConfigError("landscape: missing")
    raw = merge_defaults(cfg)
    land = build_landscape(raw["landscape"])

    lr = real(raw["lr"], "lr", positive=True)
    batch_size = integer(raw["batch_size"], "batch_size", 1)
    sampling = raw["sampling"]
    if sampling not in SAMPLINGS:
        raise ConfigError(f"sampling: unknown {sampling!r} (known: {', '.join(SAMPLINGS)})")
    batch_noise_factor(land.n, batch_size, sampling)  # raises on batch_size > n

    methods = raw["methods"]
    if isinstance(methods, str) or not methods:
        raise ConfigError(f"methods: expected a non-empty list, got {methods!r}")
    for m in methods:
        if m not in METHODS:
            raise ConfigError(f"methods: unknown method {m!r} (known: {', '.join(METHODS)})")
    if land.dim != 1 and any(m in FP_METHODS for m in methods):
        raise ConfigError("methods: the Fokker–Planck solver is 1-D; drop fp/fp_drift for dim 2")
    seed = integer(raw["seed"], "seed", 0)

    init = Initial.from_dict(dict(raw["init"]), land.dim)
    grids = _grids(raw["grid"], land.dim)
    for a, g in enumerate(grids):
        lo, hi = init.support(a)
        if lo < g.lower or hi > g.upper:
            axis = "" if land.dim == 1 else f" (axis {a})"
            raise ConfigError(
                f"grid: [{g.lower}, {g.upper}]{axis} does not cover the initial distribution "
                f"(its support is [{lo:.4g}, {hi:.4g}])"
            )

    t_end = real(raw["time"]["t_end"], "time.t_end", positive=True)
    snapshots = integer(raw["time"]["snapshots"], "time.snapshots", 2)
    times = np.linspace(0.0, t_end, snapshots)
    steps = np.rint(times / lr).astype(np.int64)
    chains = integer(raw["mc"]["chains"], "mc.chains", 1)
    substeps = integer(raw["mc"]["sde_substeps"], "mc.sde_substeps", 1)
    max_steps = integer(raw["mc"]["max_steps"], "mc.max_steps", 1)
    if steps[-1] > max_steps:
        raise ConfigError(f"time.t_end: {t_end} / lr {lr} = {steps[-1]} SGD steps exceeds "
                          f"mc.max_steps = {max_steps}")
    if steps[-1] < 1:
        raise ConfigError(f"time.t_end: {t_end} is shorter than one SGD step (lr = {lr})")

    temp = raw["langevin"]["temperature"]
    temperature = None if temp is None else real(temp, "langevin.temperature", positive=True)
    convention = raw["fp"]["convention"]
    if convention not in CONVENTIONS:
        raise ConfigError(f"fp.convention: unknown {convention!r} (known: {', '.join(CONVENTIONS)})")
    fp_dt = raw["fp"]["dt"]
    fp_dt = None if fp_dt is None else real(fp_dt, "fp.dt", positive=True)
    fp_refine = integer(raw["fp"]["refine"], "fp.refine", 1)
    thr = raw["escape"]["threshold"]
    thr = None if thr is None else real(thr, "escape.threshold")
    if thr is not None and land.dim == 1:  # the FP grid, fp_refine times finer, holds the threshold
        from sgdsweep.escape import check_threshold

        check_threshold(thr, Grid1D(grids[0].lower, grids[0].upper, grids[0].cells * fp_refine))

    return CellConfig(
        landscape=land, lr=lr, batch_size=batch_size, sampling=sampling,
        methods=tuple(methods), seed=seed, init=init, grids=grids, times=times, steps=steps,
        chains=chains, sde_substeps=substeps, temperature=temperature, convention=convention,
        fp_dt=fp_dt, fp_refine=fp_refine, escape_threshold=thr, raw=raw,
    )
