"""Heavy tails of SGD in a model store: where Hill's tail index crosses a level.

Beyond the mean-square edge SGD's stationary law on least squares has infinite variance,
so its tail index α falls below 2 there (Kesten–Goldie; Gürbüzbalaban, Şimşekli & Zhu
2021). :func:`tail_crossing` finds, per batch size, the learning rate at which the stored
Hill estimate ``tail_index`` crosses a level, for comparison with the exact ``ms_edge``.
"""

from __future__ import annotations

import numpy as np
import xarray as xr


def tail_crossing(ds: xr.Dataset, level: float = 2.0, method: str = "sgd",
                  direction: str = "h1") -> xr.DataArray:
    """The η at which Hill's α along ``direction`` first falls below ``level`` as η grows.

    Linear interpolation in η between the last sweep point with α ≥ level and the first with
    α < level; NaN where α never crosses inside the swept range. Dims: every sweep dim of
    ``ds`` except ``lr`` (which must be one).
    """
    if "lr" not in ds.dims:
        raise ValueError("tail_crossing: needs an lr axis")
    alpha = ds["tail_index"].sel({"method": method, "direction": direction}).transpose("lr", ...)
    lr = ds["lr"].values.astype(float)

    def crossing(a: np.ndarray) -> float:
        below = np.flatnonzero(np.isfinite(a) & (a < level))
        if not len(below) or below[0] == 0:
            return float("nan")
        j = below[0]
        a0, a1 = a[j - 1], a[j]
        if not np.isfinite(a0):
            return float("nan")
        return float(lr[j - 1] + (lr[j] - lr[j - 1]) * (a0 - level) / (a0 - a1))

    out = xr.apply_ufunc(crossing, alpha, input_core_dims=[["lr"]], vectorize=True)
    out.name = "tail_crossing_lr"
    out.attrs = {"long_name": f"learning rate at which Hill's α along {direction} falls below {level}",
                 "units": "1"}
    return out
