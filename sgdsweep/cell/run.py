"""The seam: ``run_cell(config) -> xarray.Dataset`` for one grid point.

Everything computed for one (lr, batch size, landscape parameters, …) point, on one
density grid: the landscape on the grid and the references (temperature, stationary
densities, escape threshold and the exact escape time), every method of the cell
(the :mod:`method registry <sgdsweep.methods>`: Monte Carlo ensembles and density
methods), and the distances to the Fokker–Planck density. Deterministic given the
config: every random stream derives from ``seed`` (the same master seed in every cell
— common random numbers across cells, so a cell's numbers do not depend on where it
sits in a sweep).

``cell_template(config)`` returns the same structure filled with NaN without
computing anything; the pipeline builds its store from it. Both accept a plain
mapping or an already parsed :class:`~sgdsweep.cell.config.CellConfig`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import xarray as xr

from sgdsweep.analysis.metrics import kl_divergence, total_variation, wasserstein1
from sgdsweep.cell.config import CellConfig, parse_cell
from sgdsweep.cell.context import CellContext
from sgdsweep.cell.layout import (  # noqa: F401  (re-exported: the layout's names)
    NOISE_SHAPE_VARS,
    STATIONARY_KINDS,
    STATIONARY_SUMMARY,
    cell_memory,
    layout_dims,
    stationary_kinds,
)
from sgdsweep.cell.model_config import ModelCellConfig
from sgdsweep.cell.model_run import model_template, run_model_cell
from sgdsweep.cell.schema import ATTRS, DISTANCE_REFERENCE, METHOD_KINDS_ATTR, RUNTIME
from sgdsweep.fokker_planck.conventions import CONVENTIONS
from sgdsweep.fokker_planck.fp2d import marginals
from sgdsweep.fokker_planck.passage import mean_passage_times
from sgdsweep.landscapes.noise import diffusion
from sgdsweep.landscapes.noise_diagnostics import minibatch_shape, noise_to_signal
from sgdsweep.transfer.markov import mean_over_start

__all__ = ["DISTANCE_REFERENCE", "STATIONARY_KINDS", "cell_memory", "cell_template", "run_cell"]


def _parsed(cfg: Mapping[str, Any] | CellConfig | ModelCellConfig) -> CellConfig | ModelCellConfig:
    return cfg if isinstance(cfg, CellConfig | ModelCellConfig) else parse_cell(cfg)


def _layout(ctx: CellContext) -> tuple[dict[str, Any], dict[str, tuple[str, ...]]]:
    """Coordinates and variable dims of the cell."""
    cell = ctx.cell
    methods = list(cell.methods)
    if cell.dim == 1:
        coords: dict[str, Any] = {"x": ctx.grid.centres, "t": cell.times, "method": methods,
                                  "kind": stationary_kinds(cell), "basin": list(ctx.basins.names)}
    else:
        gx, gy = cell.grids
        coords = {"x": gx.centres, "y": gy.centres, "t": cell.times, "method": methods,
                  "kind": stationary_kinds(cell), "axis": ["x", "y"]}
    return coords, layout_dims(cell)


def _empty(ctx: CellContext) -> xr.Dataset:
    cell = ctx.cell
    coords, dims = _layout(ctx)
    sizes = {k: len(v) for k, v in coords.items()}
    data_vars = {}
    for name, d in dims.items():
        if name == "fp_degenerate":
            arr = np.zeros((), dtype=bool)
        else:
            arr = np.full(tuple(sizes[k] for k in d), np.nan)
        data_vars[name] = xr.Variable(d, arr, attrs=ATTRS.get(name, {}))
    for m in cell.method_specs:
        for name, v in m.variables.items():
            arr = np.full(tuple(sizes[k] for k in v.dims), v.fill)
            data_vars.setdefault(name, xr.Variable(v.dims, arr,
                                                   attrs={"long_name": v.long_name, "units": v.units}))
    ds = xr.Dataset(data_vars, coords=coords)
    for c in ds.coords:
        ds[c].attrs.update(ATTRS.get(str(c), {}))
    ds.attrs.update({
        "distance_reference": DISTANCE_REFERENCE,
        "sde_convention": "Ito",
        "fp_convention": cell.convention,
        "landscape": cell.landscape.name,
        "n_datapoints": cell.landscape.n,
        "sampling": cell.sampling,
        "chains": cell.chains,
        "dx": cell.grids[0].dx,
        METHOD_KINDS_ATTR: json.dumps({m.name: m.kind for m in cell.method_specs}),
    })
    return ds


def cell_template(cfg: Mapping[str, Any] | CellConfig | ModelCellConfig) -> xr.Dataset:
    """The structure ``run_cell(cfg)`` returns (variables, dims, coords, attrs), NaN-filled."""
    cell = _parsed(cfg)
    if isinstance(cell, ModelCellConfig):
        return model_template(cell)
    return _empty(CellContext(cell))


def run_cell(cfg: Mapping[str, Any] | CellConfig) -> xr.Dataset:
    """Compute everything for one grid point; see the module docstring.

    ``cfg`` is a :class:`~sgdsweep.cell.config.CellConfig` or a mapping laid out like
    :class:`sgdsweep.cell.config.CellSchema` (plus ``landscape``). Raises
    :class:`~sgdsweep.errors.ConfigError` on bad input.
    """
    t_start = time.perf_counter()
    cell = _parsed(cfg)
    if isinstance(cell, ModelCellConfig):
        return run_model_cell(cell)
    ctx = CellContext(cell)
    ds = _empty(ctx)
    fill_landscape(ctx, ds)
    fill_references(ctx, ds)
    for method in ctx.cell.method_specs:
        method.fill(ctx, ds, method.name)
    fill_escape_exact(ctx, ds)
    fill_distances(ctx, ds)
    ds[RUNTIME] = ((), time.perf_counter() - t_start, ATTRS[RUNTIME])
    return ds


# --------------------------------------------------------------------------- stages


def fill_landscape(ctx: CellContext, ds: xr.Dataset) -> None:
    """L, G, Σ (and D in 1-D) on the density grid, and the exact shape of the minibatch
    gradient noise there for the cell's b and sampling (:mod:`sgdsweep.landscapes.noise_diagnostics`)."""
    land = ctx.land
    cell = ctx.cell
    _, skew, kurt = minibatch_shape(land["sample_grads"], cell.batch_size, cell.sampling)
    nsr = noise_to_signal(land["grad"], land["cov"], cell.noise_factor)
    if ctx.dim == 1:
        ds["noise_skewness"][:] = skew[:, 0]
        ds["noise_kurtosis"][:] = kurt[:, 0]
        ds["noise_to_signal"][:] = nsr
    else:
        nx, ny = (g.cells for g in cell.grids)
        ds["noise_skewness"][:] = skew.reshape(nx, ny, 2)
        ds["noise_kurtosis"][:] = kurt.reshape(nx, ny, 2)
        ds["noise_to_signal"][:] = nsr.reshape(nx, ny)
    if ctx.dim == 1:
        ds["loss"][:] = land["loss"]
        ds["grad_mean"][:] = land["grad"][:, 0]
        ds["grad_var"][:] = land["cov"][:, 0, 0]
        ds["diffusion"][:] = diffusion(land["cov"][:, 0, 0], ctx.cell.lr, ctx.cell.noise_factor)
    else:
        nx, ny = (g.cells for g in ctx.cell.grids)
        ds["loss"][:] = land["loss"].reshape(nx, ny)
        ds["grad_mean"][:] = land["grad"].reshape(nx, ny, 2)
        ds["grad_var"][:] = np.diagonal(land["cov"], axis1=1, axis2=2).reshape(nx, ny, 2)


def fill_references(ctx: CellContext, ds: xr.Dataset) -> None:
    """Temperature, the stationary densities and currents with their summary numbers
    (:func:`sgdsweep.methods.fokker_planck.fill_stationary_fp`), the methods' own
    stationary kinds, and (1-D) the escape threshold."""
    from sgdsweep.methods.fokker_planck import fill_stationary_fp

    T = ctx.temperature
    ds["temperature"] = ((), np.nan if T is None else float(T), ATTRS["temperature"])
    fill_stationary_fp(ctx, ds)
    for m in ctx.cell.method_specs:
        for kind, density in m.stationary.items():
            ds["stationary"].loc[{"kind": kind}] = density(ctx)
    if ctx.escape is not None:
        ds["escape_threshold"] = ((), ctx.escape[0], ATTRS["escape_threshold"])


def exact_escape_time(ctx: CellContext, refine: int | None = None) -> float:
    """E[T(X₀)] of the Itô SDE from the initial law, on the density grid refined ``refine``
    times (default ``fp.refine``): the backward equation of the FP generator. Mass already
    past the threshold counts 0; cells without initial mass count nothing (even if their
    passage never happens); inf if some initial mass never passes."""
    if refine is None or refine == ctx.cell.fp_refine:
        fp, p0 = ctx.operator(CONVENTIONS["ito"]), ctx.initial_masses
    else:
        grid = ctx.grid.refined(refine)
        fp, p0 = ctx.operator(CONVENTIONS["ito"], grid=grid), ctx.cell.init.cell_masses(grid)
    return mean_over_start(mean_passage_times(fp, *ctx.escape), p0)


def fill_escape_exact(ctx: CellContext, ds: xr.Dataset) -> None:
    """``escape_time_exact`` whenever there is a threshold (1-D), and its relative grid error:
    |T(refine) − T(2·refine)| / T(2·refine)."""
    if ctx.dim != 1 or ctx.escape is None:
        return
    T = exact_escape_time(ctx)
    T2 = exact_escape_time(ctx, 2 * ctx.cell.fp_refine)
    with np.errstate(invalid="ignore", divide="ignore"):
        err = abs(T - T2) / abs(T2) if np.isfinite(T2) and T2 != 0 else np.nan
    ds["escape_time_exact"] = ((), T, ATTRS["escape_time_exact"])
    ds["escape_time_exact_error"] = ((), float(err), ATTRS["escape_time_exact_error"])


def fill_distances(ctx: CellContext, ds: xr.Dataset) -> None:
    """TV, KL, W1 of every method's density to the FP density (when ``fp`` runs).

    2-D: TV and KL over the plane (cells of area dx·dy); ``w1`` is the mean of the W1
    distances of the two marginals — a lower bound on the planar W1 (each marginal W1
    is), not the planar W1 itself.
    """
    if DISTANCE_REFERENCE not in ctx.cell.methods:
        return
    ref = ds["density"].sel({"method": DISTANCE_REFERENCE}).values
    gs = ctx.cell.grids
    for method in ctx.cell.methods:
        if method == DISTANCE_REFERENCE:
            continue
        p = ds["density"].sel({"method": method}).values
        sel = {"method": method}
        if ctx.dim == 1:
            dx = ctx.grid.dx
            ds["tv"].loc[sel] = total_variation(p, ref, dx)
            ds["kl"].loc[sel] = kl_divergence(p, ref, dx)
            ds["w1"].loc[sel] = wasserstein1(p, ref, dx)
            continue
        area = gs[0].dx * gs[1].dx
        flat = (p.shape[0], -1)
        ds["tv"].loc[sel] = total_variation(p.reshape(flat), ref.reshape(flat), area)
        ds["kl"].loc[sel] = kl_divergence(p.reshape(flat), ref.reshape(flat), area)
        (px, py), (rx, ry) = marginals(p, gs[0].dx, gs[1].dx), marginals(ref, gs[0].dx, gs[1].dx)
        ds["w1"].loc[sel] = 0.5 * (wasserstein1(px, rx, gs[0].dx) + wasserstein1(py, ry, gs[1].dx))
