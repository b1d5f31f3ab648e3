"""A custom landscape built by a Python callable (the ``_target_`` escape hatch)."""

from sgdsweep import Landscape, build_landscape


def double_well(separation: float) -> Landscape:
    """Two Gaussian wells at ±separation/2, as four shifted datapoints."""
    half = separation / 2
    land = build_landscape({
        "name": "double_well",
        "reference": [{"kind": "gaussian", "amplitude": -1.0, "centre": -half, "width": 0.5},
                      {"kind": "gaussian", "amplitude": -1.0, "centre": half, "width": 0.5}],
        "shifts": {"n": 4, "std": 0.1},
    })
    return land
