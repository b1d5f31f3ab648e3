"""The edge of stability in a model store: where the sharpness settles relative to 2/η.

Full-batch GD is linearly stable at a minimum only while its sharpness λ_max ≤ 2/η; Cohen
et al. (ICLR 2021) report that GD on networks drives the sharpness up to 2/η and holds it
there. :func:`plateau_sharpness` measures sharpness · η/2 at the end of each cell's run
(1: at the edge; below 1: inside the stable region).
"""

from __future__ import annotations

import numpy as np
import xarray as xr


def plateau_sharpness(ds: xr.Dataset, method: str = "gd", tail: float = 0.25) -> xr.DataArray:
    """Mean of ``sharpness`` · η/2 over the last ``tail`` fraction of the snapshots, per cell.

    ``sharpness`` is the mean top Hessian eigenvalue of ``models.sharpness_chains`` chains
    (NaN where every chain was lost). Dims: the sweep dims of ``ds``.
    """
    if not 0 < tail <= 1:
        raise ValueError(f"tail: must be in (0, 1], got {tail}")
    sharp = ds["sharpness"].sel({"method": method})
    n = sharp.sizes["t"]
    last = sharp.isel(t=slice(n - max(1, int(np.ceil(tail * n))), None)).mean("t")
    out = last * ds["lr"] / 2.0
    out.name = "plateau_sharpness"
    out.attrs = {"long_name": f"sharpness of {method} · η/2 over the last {tail:.0%} of the run "
                 "(1: at GD's edge of stability 2/η)", "units": "1"}
    return out
