"""The linear scaling rule in a model store: quantities along lines η/b = const.

The Itô SDE of SGD depends on η and b only through η/b (its diffusion is η Σ/(2b) with
replacement), so every SDE prediction is constant along a line η/b = c of an (lr, batch_size)
grid. :func:`along_lines` regroups a per-cell quantity by c.
"""

from __future__ import annotations

import numpy as np
import xarray as xr


def along_lines(da: xr.DataArray, min_points: int = 2) -> xr.DataArray:
    """``da`` (dims ``lr``, ``batch_size``, …) regrouped on dims ``ratio`` (η/b) and ``lr``:
    NaN where the grid has no cell with that η and η/b. Only ratios met by at least
    ``min_points`` cells are kept."""
    lr = da["lr"].values.astype(float)
    b = da["batch_size"].values.astype(float)
    ratios = np.unique(np.round((lr[:, None] / b[None, :]).ravel(), 12))
    keep = [r for r in ratios if np.sum(np.isclose(lr[:, None] / b[None, :], r, rtol=1e-9)) >= min_points]
    rest = [d for d in da.dims if d not in ("lr", "batch_size")]
    out = np.full((len(keep), len(lr), *(da.sizes[d] for d in rest)), np.nan)
    vals = da.transpose("lr", "batch_size", *rest).values
    for i, r in enumerate(keep):
        for j, eta in enumerate(lr):
            k = np.flatnonzero(np.isclose(eta / b, r, rtol=1e-9))
            if len(k):
                out[i, j] = vals[j, k[0]]
    coords = {"ratio": keep, "lr": da["lr"].values, **{d: da[d].values for d in rest if d in da.coords}}
    res = xr.DataArray(out, dims=("ratio", "lr", *rest), coords=coords, name=da.name, attrs=da.attrs)
    res["ratio"].attrs = {"long_name": "η / b", "units": "1"}
    return res
