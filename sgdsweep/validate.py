"""Checks shared by every public entry point: one-line ConfigError naming the field."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from sgdsweep.errors import ConfigError


def real(value: Any, field: str, *, positive: bool = False, nonnegative: bool = False) -> float:
    """``value`` as a finite float; ``positive``: > 0, ``nonnegative``: >= 0."""
    if isinstance(value, bool):
        raise ConfigError(f"{field}: expected a number, got {value!r}")
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{field}: expected a number, got {value!r}") from None
    if not math.isfinite(x):
        raise ConfigError(f"{field}: must be finite, got {value!r}")
    if positive and x <= 0:
        raise ConfigError(f"{field}: must be > 0, got {value!r}")
    if nonnegative and x < 0:
        raise ConfigError(f"{field}: must be >= 0, got {value!r}")
    return x


def number_entry(term: Mapping[str, Any], key: str, what: str, default: float | None = None) -> Any:
    """``term[key]`` (a number or array of numbers, all finite) as given; ``default`` if absent,
    else a ConfigError naming ``what.key``."""
    if key not in term:
        if default is None:
            raise ConfigError(f"{what}.{key}: missing")
        return default
    value = term[key]
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ConfigError(f"{what}.{key}: expected a number, got {value!r}") from None
    if not np.all(np.isfinite(arr)):
        raise ConfigError(f"{what}.{key}: must be finite, got {value!r}")
    return value


def integer(value: Any, field: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer | float):
        raise ConfigError(f"{field}: expected an integer, got {value!r}")
    if int(value) != value:
        raise ConfigError(f"{field}: expected an integer, got {value!r}")
    if value < minimum:
        raise ConfigError(f"{field}: must be >= {minimum}, got {value!r}")
    return int(value)


def snapshot_steps(steps: Any) -> np.ndarray:
    """SGD step counts of the snapshots: a non-empty, non-decreasing 1-D array of integers ≥ 0."""
    st = np.asarray(steps)
    if st.ndim != 1 or st.size < 1 or not np.issubdtype(st.dtype, np.number):
        raise ConfigError("steps: expected a non-empty 1-D array of SGD step counts")
    if not np.all(np.isfinite(st)) or np.any(st != np.round(st)) or np.any(st < 0):
        raise ConfigError("steps: must be non-negative integers")
    st = st.astype(np.int64)
    if np.any(np.diff(st) < 0):
        raise ConfigError("steps: must be non-decreasing")
    return st


def density_march(p0: Any, shape: tuple[int, ...], times: Any, dt: float) -> tuple[np.ndarray, np.ndarray]:
    """The inputs of a density time march: a copy of ``p0`` (finite, ≥ 0, of ``shape``) and the
    snapshot times (finite, ≥ 0, strictly increasing); ``dt`` > 0."""
    p = np.array(p0, dtype=np.float64, copy=True)
    if p.shape != shape:
        raise ConfigError(f"p0: expected shape {shape}, got {p.shape}")
    if not np.all(np.isfinite(p)) or np.any(p < 0):
        raise ConfigError("p0: initial density must be finite and >= 0")
    t = np.asarray(times, dtype=np.float64)
    if t.ndim != 1 or t.size == 0:
        raise ConfigError("times: expected a non-empty 1-D array of snapshot times")
    if not np.all(np.isfinite(t)) or t[0] < 0 or np.any(np.diff(t) <= 0):
        raise ConfigError(f"times: must be finite, >= 0 and strictly increasing, got {t.tolist()}")
    if not (math.isfinite(dt) and dt > 0):
        raise ConfigError(f"dt: must be > 0, got {dt!r}")
    return p, t
