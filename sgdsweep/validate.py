"""Scalar checks shared by every public entry point: one-line ConfigError naming the field."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from sgdsweep.errors import ConfigError


def real(value: Any, field: str, *, positive: bool = False) -> float:
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
    return x


def integer(value: Any, field: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer | float):
        raise ConfigError(f"{field}: expected an integer, got {value!r}")
    if int(value) != value:
        raise ConfigError(f"{field}: expected an integer, got {value!r}")
    if value < minimum:
        raise ConfigError(f"{field}: must be >= {minimum}, got {value!r}")
    return int(value)
