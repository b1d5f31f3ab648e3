"""Stability of GD and SGD at a minimum, measured in a model store.

Full-batch GD is linearly stable at a minimum only while its sharpness λ_max ≤ 2/η; Cohen
et al. (ICLR 2021) report that GD on networks drives the sharpness up to 2/η and holds it
there. :func:`plateau_sharpness` measures sharpness · η/2 at the end of each cell's run
(1: at the edge; below 1: inside the stable region).

SGD's own stability (Wu, Ma & E, NeurIPS 2018): :func:`divergent` calls a Monte Carlo cell
divergent when its second moment about θ* grows over the run or chains are lost, and
:func:`divergence_boundary` brackets, per batch size, the learning rate where that starts —
for comparison with the exact ``ms_edge`` and the bound ``wme_edge``.
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


def mean_square_distance(ds: xr.Dataset, method: str = "sgd") -> xr.DataArray:
    """E|θ − θ*|² over the chains not lost, per snapshot: tr(cov) + |mean − θ*|² (``var``
    summed where only the diagonal is stored; parameters past a cell's d are NaN and skipped;
    NaN where every chain is lost). Units θ²."""
    sel = {"method": method}
    if "cov" in ds:
        c = ds["cov"].sel(sel)
        spread = xr.apply_ufunc(lambda a: np.diagonal(a, axis1=-2, axis2=-1), c,
                                input_core_dims=[["param", "param2"]], output_core_dims=[["param"]])
    else:
        spread = ds["var"].sel(sel)
    # min_count: a cell whose chains were all lost has no moments (NaN), not a zero one
    spread = spread.sum("param", skipna=True, min_count=1)
    shift = ((ds["mean"].sel(sel) - ds["theta_star"]) ** 2).sum("param", skipna=True, min_count=1)
    out = spread + shift
    out.name = "mean_square_distance"
    out.attrs = {"long_name": f"E|θ − θ*|² of {method} over the chains not lost", "units": "θ²"}
    return out


def divergent(ds: xr.Dataset, method: str = "sgd", growth: float = 2.0) -> xr.DataArray:
    """Whether each cell's ``method`` ensemble diverged: some chain lost by the last snapshot
    (non-finite, or beyond ``models.bound``), or E|θ − θ*|² at the last snapshot above ``growth``
    times its value at the first (t = 0). Started well above SGD's noise floor (``models.start_std``),
    the second moment then falls towards that floor where SGD is mean-square stable and grows
    geometrically where it is not; near the edge the growth is slow, so the boundary this draws is
    only as sharp as the lr grid (and, for a finite ensemble, the heavy tail beyond the edge makes
    the sample moment lag the exact one). NaN where the cell is not done."""
    if growth <= 0:
        raise ValueError(f"growth: must be > 0, got {growth}")
    msd = mean_square_distance(ds, method)
    lost = ds["lost_fraction"].sel({"method": method}).isel(t=-1)
    grew = msd.isel(t=-1) > growth * msd.isel(t=0)
    out = ((lost > 0) | grew | ~np.isfinite(msd.isel(t=-1))).astype(float)
    if "done" in ds:
        out = out.where(ds["done"].astype(bool))
    out.name = "divergent"
    out.attrs = {"long_name": f"{method} diverged: chains lost, or E|θ − θ*|² grew more than "
                 f"{growth:g}× over the run", "units": "1"}
    return out.drop_vars(["method", "t"], errors="ignore")


def divergence_boundary(ds: xr.Dataset, method: str = "sgd", growth: float = 2.0) -> xr.Dataset:
    """Per point of the other sweep dims: ``first_divergent``, the smallest swept η whose cell
    diverged (:func:`divergent`), and ``last_stable``, the largest stable η below it (NaN where
    none); ``stable_above``, the number of stable cells above ``first_divergent`` (0 where the
    boundary is a clean step)."""
    if "lr" not in ds.dims:
        raise ValueError("divergence_boundary: needs an lr axis")
    div = divergent(ds, method, growth).transpose("lr", ...)
    lr = ds["lr"].values.astype(float)
    order = np.argsort(lr)

    def bracket(flags: np.ndarray) -> np.ndarray:
        f = flags[order]
        hit = np.flatnonzero(f == 1)
        if not len(hit):
            below = np.flatnonzero(f == 0)
            return np.array([lr[order][below[-1]] if len(below) else np.nan, np.nan, 0.0])
        j = hit[0]
        below = np.flatnonzero(f[:j] == 0)
        last = lr[order][below[-1]] if len(below) else np.nan
        return np.array([last, lr[order][j], float(np.sum(f[j:] == 0))])

    out = xr.apply_ufunc(bracket, div, input_core_dims=[["lr"]], output_core_dims=[["which"]],
                         vectorize=True, dask_gufunc_kwargs={"output_sizes": {"which": 3}})
    res = xr.Dataset({
        "last_stable": out.isel(which=0),
        "first_divergent": out.isel(which=1),
        "stable_above": out.isel(which=2),
    })
    res["last_stable"].attrs = {"long_name": f"largest η at which {method} stayed stable, below the "
                                "first divergent one", "units": "1"}
    res["first_divergent"].attrs = {"long_name": f"smallest η at which {method} diverged", "units": "1"}
    res["stable_above"].attrs = {"long_name": "stable cells above the first divergent η", "units": "1"}
    return res
