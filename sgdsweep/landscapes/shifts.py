"""Dataset offsets of a shifted template landscape: l_i(θ) = l(θ − c_i), c_i from a
deterministic distribution (quantiles, not draws, so a landscape needs no RNG)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from sgdsweep.errors import ConfigError
from sgdsweep.validate import number_entry, real


def standard_shifts(n: int, std: float) -> np.ndarray:
    """Deterministic dataset offsets: n evenly spaced points, mean 0, population std ``std``."""
    if n == 1:
        return np.zeros(1)
    z = np.linspace(-1.0, 1.0, n)
    return std * z / z.std()


#: Offset distributions of ``shifts`` and the extra keys each takes (besides n, std, direction).
SHIFT_DISTRIBUTIONS = {"even": (), "normal": (), "student_t": ("nu",), "outliers": ("k", "scale")}


def _rescaled(z: np.ndarray, std: float) -> np.ndarray:
    """z shifted to mean 0 and scaled to population std ``std`` (zeros if z has no spread)."""
    z = z - z.mean()
    s = z.std()
    return std * z / s if s > 0.0 else np.zeros_like(z)


def distribution_shifts(n: int, std: float, distribution: str = "even", *, nu: float | None = None,
                        k: int = 0, scale: float = 1.0) -> np.ndarray:
    """Deterministic offsets of n samples with mean 0 and population std ``std``.

    * ``even``: :func:`standard_shifts` (n evenly spaced points; light tails, excess
      kurtosis → −1.2);
    * ``normal``: the standard normal quantiles at (i + ½)/n, i = 0 … n − 1;
    * ``student_t``: the Student-t quantiles at (i + ½)/n with ``nu`` > 0 degrees of
      freedom (heavy tails; ν ≤ 4 has no finite kurtosis in the limit, but n quantiles
      always do);
    * ``outliers``: n − k evenly spaced points on [−1, 1] plus k far points at ±``scale``
      (alternating, first +, so k = 1 is one-sided and skews the noise, k = 2 is symmetric).

    All but ``even`` are then shifted to mean 0 and rescaled to population std ``std``;
    quantiles instead of random draws keep a landscape reproducible without an RNG.
    """
    if distribution == "even":
        return standard_shifts(n, std)
    q = (np.arange(n) + 0.5) / n
    # scipy.stats is imported here, not at module level: it costs ~0.3 s and only these need it.
    if distribution == "normal":
        from scipy.stats import norm

        z = norm.ppf(q)
    elif distribution == "student_t":
        from scipy.stats import t

        z = t.ppf(q, nu)
    elif distribution == "outliers":
        bulk = np.linspace(-1.0, 1.0, n - k) if n - k > 1 else np.zeros(n - k)
        far = scale * np.where(np.arange(k) % 2 == 0, 1.0, -1.0)
        z = np.concatenate([bulk, far])
    else:
        raise ConfigError(f"distribution: unknown {distribution!r} (known: {', '.join(SHIFT_DISTRIBUTIONS)})")
    return _rescaled(z, std)


def _shift_spec(spec: Mapping[str, Any], what: str) -> np.ndarray:
    """Validate a {n, std, distribution, …} mapping and return its 1-D offsets."""
    n = spec.get("n")
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ConfigError(f"{what}.n: expected a positive integer, got {n!r}")
    std = real(number_entry(spec, "std", what), f"{what}.std", nonnegative=True)
    dist = spec.get("distribution", "even")
    if not isinstance(dist, str) or dist not in SHIFT_DISTRIBUTIONS:
        raise ConfigError(f"{what}.distribution: unknown {dist!r} (known: {', '.join(SHIFT_DISTRIBUTIONS)})")
    known = {"n", "std", "direction", "distribution", *SHIFT_DISTRIBUTIONS[dist]}
    extra = set(spec) - known
    if extra:
        raise ConfigError(f"{what}: unknown key(s) {sorted(extra)} for distribution {dist!r} "
                          f"(known: {sorted(known)})")
    kwargs: dict[str, Any] = {}
    if dist == "student_t":
        nu = real(number_entry(spec, "nu", what), f"{what}.nu", positive=True)
        kwargs["nu"] = nu
    elif dist == "outliers":
        k = spec.get("k")
        if not isinstance(k, int) or isinstance(k, bool) or k < 0:
            raise ConfigError(f"{what}.k: expected a non-negative integer, got {k!r}")
        if k >= n:
            raise ConfigError(f"{what}.k: must be < n (= {n}), got {k}")
        scale = real(number_entry(spec, "scale", what), f"{what}.scale", positive=True)
        kwargs.update(k=k, scale=scale)
    return distribution_shifts(n, std, dist, **kwargs)


def _shift_vectors(spec: Any, dim: int, what: str) -> np.ndarray:
    """Offsets c_i of a shifted template: {n, std[, direction, distribution, …]} or an explicit list."""
    if isinstance(spec, Mapping):
        offsets = _shift_spec(spec, what)
        direction = np.asarray(spec.get("direction", [1.0] * dim), dtype=np.float64)
        if direction.shape != (dim,) or not np.any(direction):
            raise ConfigError(f"{what}.direction: expected {dim} numbers, not all zero")
        direction = direction / np.linalg.norm(direction)
        return offsets[:, None] * direction[None, :]
    arr = np.asarray(spec, dtype=np.float64)
    if arr.ndim == 1 and dim == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or arr.shape[1] != dim or arr.shape[0] < 1:
        raise ConfigError(f"{what}: expected a mapping {{n, std}} or a list of {dim}-vectors")
    return arr
