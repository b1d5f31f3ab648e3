"""A 2-D quadratic whose gradient noise is tilted against its Hessian (non-equilibrium SGD).

l_i(θ) = ½ (θ − s_i)ᵀ H (θ − s_i), H = diag(h_x, h_y), with n shifts s_i on an ellipse
whose axes are turned by ``tilt`` degrees: s_k = R(tilt) diag(a, b) (cos φ_k, sin φ_k),
φ_k = 2πk/n, a = √2·spread, b = √2·aspect·spread. For n ≥ 3 the shifts have mean 0 and
population covariance S = R diag(spread², (aspect·spread)²) Rᵀ, so the per-sample gradient
covariance is the constant Σ = H S H. Σ commutes with H only at tilt 0° or 90° (or when
h_x = h_y or aspect = 1): then the SDE's stationary law has no current; at any other
tilt HC ≠ CH and a stationary current circulates around the minimum.

Used as ``landscape._target_: sgdsweep.landscapes.tilted.tilted_quadratic`` (conf/landscape/
tilted_2d.yaml), so ``tilt`` is a sweepable scalar.
"""

from __future__ import annotations

import math

import numpy as np

from sgdsweep.errors import ConfigError
from sgdsweep.landscapes.landscape import Landscape, build_landscape


def tilted_shifts(tilt: float, spread: float, aspect: float, n: int) -> np.ndarray:
    """The n shifts (n, 2) described in the module docstring (``tilt`` in degrees)."""
    c, s = math.cos(math.radians(tilt)), math.sin(math.radians(tilt))
    rot = np.array([[c, -s], [s, c]])
    phi = 2.0 * math.pi * np.arange(n) / n
    unit = np.stack([math.sqrt(2.0) * spread * np.cos(phi),
                     math.sqrt(2.0) * aspect * spread * np.sin(phi)], axis=1)
    return unit @ rot.T


def tilted_quadratic(tilt: float = 45.0, h_x: float = 1.0, h_y: float = 2.0, spread: float = 0.5,
                     aspect: float = 0.6, n: int = 8) -> Landscape:
    """The landscape of the module docstring; ``tilt`` in degrees, the rest in θ units."""
    for name, v in (("h_x", h_x), ("h_y", h_y), ("spread", spread), ("aspect", aspect)):
        if not (isinstance(v, int | float) and math.isfinite(v) and v > 0):
            raise ConfigError(f"landscape.{name}: must be a number > 0, got {v!r}")
    if not (isinstance(tilt, int | float) and math.isfinite(tilt)):
        raise ConfigError(f"landscape.tilt: must be a finite number of degrees, got {tilt!r}")
    if not (isinstance(n, int) and n >= 3):
        raise ConfigError(f"landscape.n: must be an integer >= 3, got {n!r}")
    shifts = tilted_shifts(float(tilt), float(spread), float(aspect), n)
    return build_landscape({
        "name": "tilted_2d", "dim": 2,
        "reference": [{"kind": "quadratic", "curvature": [float(h_x), float(h_y)], "centre": [0.0, 0.0]}],
        "shifts": shifts.tolist(),
    })
