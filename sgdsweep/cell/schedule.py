"""What every cell parses the same way, term landscape or model: the step (learning rate,
batch size, sampling), the method list and the snapshot schedule (SDE times t = η·step, the
SGD steps they fall on, the chain counts)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from sgdsweep.errors import ConfigError
from sgdsweep.landscapes.noise import SAMPLINGS, batch_noise_factor
from sgdsweep.methods.registry import Method, get_method
from sgdsweep.validate import integer, real


def parse_step(raw: Mapping[str, Any], n: int) -> tuple[float, int, str]:
    """``lr`` (> 0), ``batch_size`` (1 … n for a landscape of n samples) and ``sampling``."""
    lr = real(raw["lr"], "lr", positive=True)
    batch_size = integer(raw["batch_size"], "batch_size", 1)
    sampling = raw["sampling"]
    if sampling not in SAMPLINGS:
        raise ConfigError(f"sampling: unknown {sampling!r} (known: {', '.join(SAMPLINGS)})")
    batch_noise_factor(n, batch_size, sampling)  # raises on batch_size > n
    return lr, batch_size, sampling


def parse_temperature(raw: Mapping[str, Any]) -> float | None:
    """``langevin.temperature``: > 0, or None for the cell's default."""
    temp = raw["langevin"]["temperature"]
    return None if temp is None else real(temp, "langevin.temperature", positive=True)


def parse_methods(raw: Mapping[str, Any]) -> tuple[list[str], tuple[Method, ...]]:
    """``methods``: a non-empty list of registered names, each once."""
    methods = raw["methods"]
    if isinstance(methods, str) or not methods:
        raise ConfigError(f"methods: expected a non-empty list, got {methods!r}")
    specs = tuple(get_method(m) for m in methods)
    if len(set(methods)) != len(methods):
        raise ConfigError(f"methods: {methods!r} lists a method twice")
    return list(methods), specs


@dataclass(frozen=True)
class Schedule:
    times: np.ndarray  # SDE times of the snapshots, t = η·step
    steps: np.ndarray  # the SGD step of each snapshot
    chains: int
    sde_substeps: int


def parse_schedule(raw: Mapping[str, Any], lr: float) -> Schedule:
    """``time`` and ``mc`` of a cell with learning rate ``lr``: refused when the run is
    shorter than one SGD step or longer than ``mc.max_steps``."""
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
    return Schedule(times, steps, chains, substeps)
