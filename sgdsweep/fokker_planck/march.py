"""The implicit time march shared by the Fokker–Planck operators of every dimension."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from sgdsweep.validate import density_march

#: ``advance(p, h, nsteps)``: ``nsteps`` implicit steps of length h; returns the new density
#: (it may update ``p`` in place and return it).
Advance = Callable[[np.ndarray, float, int], np.ndarray]


def march(p0: Any, shape: tuple[int, ...], times: Any, dt: float, advance: Advance) -> np.ndarray:
    """Densities at ``times`` (S,), shape (S, *shape), starting from ``p0`` at t = 0.

    Steps have length ``dt`` except the last one before each snapshot, which is shortened
    to land on it exactly; steps that would land within 1e-9 dt of a snapshot are merged
    into it. ``p0`` is not modified.
    """
    p, t = density_march(p0, shape, times, dt)
    out = np.empty((t.size, *shape))
    now = 0.0
    for s, target in enumerate(t):
        span = target - now
        if span > 0:
            steps = max(1, math.ceil(span / dt - 1e-9))
            if steps > 1:
                p = advance(p, dt, steps - 1)
            p = advance(p, span - (steps - 1) * dt, 1)
        now = target
        out[s] = p
    return out
