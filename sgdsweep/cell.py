"""The seam: ``run_cell(config) -> xarray.Dataset`` for one grid point.

Everything computed for one (lr, batch size, landscape parameters, …) point: the
Fokker–Planck solution, Monte Carlo ensembles of SGD / SDE / Langevin / GD, the
stationary references, distances and escape statistics, on one density grid.
Deterministic given the mapping: every random stream derives from ``seed``
(the same master seed in every cell — common random numbers across cells, so a
cell's numbers do not depend on where it sits in a sweep).

``cell_template(config)`` returns the same structure filled with NaN without
computing anything; the pipeline builds its store from it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import xarray as xr

from sgdsweep.basins import Basins, escape_threshold, find_basins, named_basins
from sgdsweep.cellconfig import CONVENTIONS, FP_METHODS, MC_METHODS, CellConfig, parse_cell
from sgdsweep.errors import ConfigError
from sgdsweep.escape import mean_passage_times
from sgdsweep.fokker_planck import FokkerPlanck1D
from sgdsweep.grid import Grid1D
from sgdsweep.metrics import kl_divergence, total_variation, wasserstein1
from sgdsweep.noise import diffusion

STATIONARY_KINDS = (*CONVENTIONS, "gibbs")
DISTANCE_REFERENCE = "fp"

_ATTRS: dict[str, dict[str, str]] = {
    "x": {"long_name": "parameter θ (cell centre)", "units": "1"},
    "y": {"long_name": "parameter θ₂ (cell centre)", "units": "1"},
    "t": {"long_name": "SDE time t = lr · step (nominal snapshot time)", "units": "1"},
    "method": {"long_name": "dynamics: sgd, sde (Itô Euler–Maruyama), langevin, gd, fp, fp_drift"},
    "kind": {"long_name": "stationary reference: FP null vector under a convention, or Gibbs"},
    "basin": {"long_name": "basin of attraction of L"},
    "axis": {"long_name": "parameter component"},
    "density": {"long_name": "probability density of θ", "units": "1/θ"},
    "stationary": {"long_name": "stationary density", "units": "1/θ"},
    "mean": {"long_name": "ensemble mean of θ", "units": "1"},
    "std": {"long_name": "ensemble standard deviation of θ", "units": "1"},
    "basin_mass": {"long_name": "probability mass in basin", "units": "1"},
    "lost_fraction": {"long_name": "fraction of chains that diverged or left the grid", "units": "1"},
    "tv": {"long_name": "total variation distance to the FP density", "units": "1"},
    "kl": {"long_name": "KL(method ‖ fp) of normalised densities (floor 1e-12)", "units": "nat"},
    "w1": {"long_name": "Wasserstein-1 distance to the FP density", "units": "1"},
    "escape_time_mean": {"long_name": "mean first-passage time over escaped chains", "units": "1"},
    "escaped_fraction": {"long_name": "fraction of chains past the escape threshold by t_end",
                         "units": "1"},
    "escape_time_exact": {"long_name": "mean first-passage time of the Itô SDE from the initial law "
                          "(backward equation on the refined FP grid)", "units": "1"},
    "escape_threshold": {"long_name": "escape threshold (θ)", "units": "1"},
    "loss": {"long_name": "training loss L(θ)", "units": "1"},
    "grad_mean": {"long_name": "mean gradient G(θ) = L'(θ)", "units": "1"},
    "grad_var": {"long_name": "per-sample gradient variance Σ(θ) (population)", "units": "1"},
    "diffusion": {"long_name": "Itô diffusion D = lr · Σ_b / 2", "units": "1"},
    "temperature": {"long_name": "Langevin / Gibbs temperature T", "units": "1"},
    "fp_degenerate": {"long_name": "stationary FP density collapsed where D → 0"},
    "runtime": {"long_name": "wall time to compute the cell", "units": "s"},
}


def _basins_of(cell: CellConfig, x: np.ndarray, loss: np.ndarray) -> Basins:
    if cell.landscape.basins is not None:
        return named_basins(cell.landscape.basins)
    return find_basins(x, loss)


def _layout(cell: CellConfig) -> tuple[dict[str, Any], dict[str, tuple[str, ...]], Basins, dict]:
    """Coordinates, variable dims, basins and the landscape on the grid."""
    g = cell.grids
    methods = list(cell.methods)
    if cell.dim == 1:
        x = g[0].centres
        land = cell.landscape.evaluate(x)
        basins = _basins_of(cell, x, land["loss"])
        coords: dict[str, Any] = {
            "x": x, "t": cell.times, "method": methods,
            "kind": list(STATIONARY_KINDS), "basin": list(basins.names),
        }
        space: tuple[str, ...] = ("x",)
        per_method: dict[str, tuple[str, ...]] = {"mean": ("method", "t"), "std": ("method", "t")}
        landscape_vars = {k: ("x",) for k in ("loss", "grad_mean", "grad_var", "diffusion")}
        extra: dict[str, tuple[str, ...]] = {
            "stationary": ("kind", "x"),
            "basin_mass": ("method", "t", "basin"),
            "escape_time_exact": (),
            "escape_threshold": (),
            "fp_degenerate": (),
        }
    else:
        xs, ys = g[0].centres, g[1].centres
        pts = np.stack(np.meshgrid(xs, ys, indexing="ij"), axis=-1).reshape(-1, 2)
        land = cell.landscape.evaluate(pts)
        basins = Basins(("all",), np.empty(0), np.empty(0))
        coords = {"x": xs, "y": ys, "t": cell.times, "method": methods, "axis": ["x", "y"]}
        space = ("x", "y")
        per_method = {"mean": ("method", "t", "axis"), "std": ("method", "t", "axis")}
        landscape_vars = {"loss": ("x", "y"), "grad_mean": ("x", "y", "axis"),
                          "grad_var": ("x", "y", "axis")}
        extra = {}
    dims = {
        "density": ("method", "t", *space),
        **per_method,
        "lost_fraction": ("method", "t"),
        "tv": ("method", "t"), "kl": ("method", "t"), "w1": ("method", "t"),
        "escape_time_mean": ("method",),
        "escaped_fraction": ("method",),
        **landscape_vars,
        **extra,
        "temperature": (),
        "runtime": (),
    }
    return coords, dims, basins, land


def _empty(coords: dict[str, Any], dims: dict[str, tuple[str, ...]], cell: CellConfig) -> xr.Dataset:
    sizes = {k: len(v) for k, v in coords.items()}
    data_vars = {}
    for name, d in dims.items():
        if name == "fp_degenerate":
            arr = np.zeros((), dtype=bool)
        else:
            arr = np.full(tuple(sizes[k] for k in d), np.nan)
        data_vars[name] = xr.Variable(d, arr, attrs=_ATTRS.get(name, {}))
    ds = xr.Dataset(data_vars, coords=coords)
    for c in ds.coords:
        ds[c].attrs.update(_ATTRS.get(str(c), {}))
    ds.attrs.update({
        "distance_reference": DISTANCE_REFERENCE,
        "sde_convention": "Ito",
        "fp_convention": cell.convention,
        "landscape": cell.landscape.name,
        "n_datapoints": cell.landscape.n,
        "sampling": cell.sampling,
        "chains": cell.chains,
        "dx": cell.grids[0].dx,
    })
    return ds


def cell_template(cfg: Mapping[str, Any]) -> xr.Dataset:
    """The structure ``run_cell(cfg)`` returns (variables, dims, coords, attrs), NaN-filled."""
    cell = parse_cell(cfg)
    coords, dims, _, _ = _layout(cell)
    return _empty(coords, dims, cell)


def run_cell(cfg: Mapping[str, Any]) -> xr.Dataset:
    """Compute everything for one grid point; see the module docstring.

    ``cfg`` is a mapping laid out like :data:`sgdsweep.cellconfig.DEFAULTS` plus a
    ``landscape`` mapping. Raises :class:`~sgdsweep.errors.ConfigError` on bad input.
    """
    t_start = time.perf_counter()
    cell = parse_cell(cfg)
    coords, dims, basins, land = _layout(cell)
    ds = _empty(coords, dims, cell)
    if cell.dim == 1:
        _fill_1d(ds, cell, basins, land)
    else:
        _fill_2d(ds, cell, land)
    ds["runtime"] = ((), time.perf_counter() - t_start, _ATTRS["runtime"])
    return ds


# --------------------------------------------------------------------------- 1-D


def _fill_1d(ds: xr.Dataset, cell: CellConfig, basins: Basins, land: dict) -> None:
    from sgdsweep.references import gibbs_density, langevin_default_temperature

    grid = cell.grids[0]
    dx = grid.dx
    factor = cell.noise_factor
    D = diffusion(land["cov"][:, 0, 0], cell.lr, factor)
    ds["loss"][:] = land["loss"]
    ds["grad_mean"][:] = land["grad"][:, 0]
    ds["grad_var"][:] = land["cov"][:, 0, 0]
    ds["diffusion"][:] = D

    temperature = cell.temperature
    if temperature is None:
        temperature = langevin_default_temperature(cell.landscape, grid, cell.lr, factor)
    ds["temperature"] = ((), float(temperature), _ATTRS["temperature"])

    # The FP solver runs on a grid `fp.refine` times finer than the output grid (narrow
    # pits need it; MC histograms do not), and is averaged back onto the output cells.
    fine = Grid1D(grid.lower, grid.upper, grid.cells * cell.fp_refine)

    def coarse(p: np.ndarray) -> np.ndarray:
        return p.reshape(*p.shape[:-1], grid.cells, cell.fp_refine).mean(axis=-1)

    solvers: dict[tuple[float, bool], FokkerPlanck1D] = {}

    def solver(alpha: float, drift_only: bool = False) -> FokkerPlanck1D:
        # One operator per (convention, drift-only): stationary, evolve and escape share it.
        key = (alpha, drift_only)
        if key not in solvers:
            solvers[key] = FokkerPlanck1D.from_landscape(cell.landscape, fine, cell.lr, factor,
                                                         alpha=alpha, drift_only=drift_only)
        return solvers[key]

    # Stationary references: the FP null vector under each convention, and Gibbs.
    degenerate = False
    for kind, alpha in CONVENTIONS.items():
        st = solver(alpha).stationary()
        ds["stationary"].loc[{"kind": kind}] = coarse(st.density)
        if kind == cell.convention:
            degenerate = bool(st.degenerate)
    fine_loss = cell.landscape.evaluate(fine.centres)["loss"]
    ds["stationary"].loc[{"kind": "gibbs"}] = coarse(gibbs_density(fine_loss, temperature, fine.dx))
    ds["fp_degenerate"] = ((), degenerate, _ATTRS["fp_degenerate"])

    # Escape threshold: configured, or the barrier top next to the starting basin.
    start = cell.init.mean[0]
    if cell.escape_threshold is not None:
        threshold = cell.escape_threshold
        direction = 1 if threshold > start else -1
        esc: tuple[float, int] | None = (threshold, direction)
    else:
        esc = escape_threshold(basins, start)
    if esc is not None:
        ds["escape_threshold"] = ((), esc[0], _ATTRS["escape_threshold"])

    edges = basins.edges
    basin_of_fine = np.searchsorted(edges, fine.centres, side="right")
    alpha = CONVENTIONS[cell.convention]

    x0 = _initial_positions(cell)
    p0_mass = cell.init.cell_masses(fine)  # initial law on the FP grid (probability per cell)
    for method in cell.methods:
        if method in FP_METHODS:
            p0 = p0_mass / fine.dx
            dt = cell.fp_dt if cell.fp_dt is not None else cell.lr / cell.sde_substeps
            dens = solver(alpha, drift_only=(method == "fp_drift")).evolve(p0, cell.times, dt)
            # Moments and basin masses from the fine solution; only the density is coarsened.
            xf, dxf = fine.centres, fine.dx
            mass = dens.sum(axis=1) * dxf
            mean = (dens * xf).sum(axis=1) * dxf / mass
            var = (dens * (xf[None, :] - mean[:, None]) ** 2).sum(axis=1) * dxf / mass
            bmass = np.stack([dens[:, basin_of_fine == k].sum(axis=1) * dxf
                              for k in range(len(basins.names))], axis=1)
            sel = {"method": method}
            ds["density"].loc[sel] = coarse(dens)
            ds["mean"].loc[sel] = mean
            ds["std"].loc[sel] = np.sqrt(var)
            ds["basin_mass"].loc[sel] = bmass
            ds["lost_fraction"].loc[sel] = 0.0
        else:
            _run_mc_1d(ds, cell, method, x0, temperature, edges, esc)

    if esc is not None and "sde" in cell.methods:
        fp = solver(CONVENTIONS["ito"])
        T = _exact_escape(fp, p0_mass, esc)
        ds["escape_time_exact"] = ((), T, _ATTRS["escape_time_exact"])

    if DISTANCE_REFERENCE in cell.methods:
        ref = ds["density"].sel({"method": DISTANCE_REFERENCE}).values
        for method in cell.methods:
            if method == DISTANCE_REFERENCE:
                continue
            p = ds["density"].sel({"method": method}).values
            ds["tv"].loc[{"method": method}] = total_variation(p, ref, dx)
            ds["kl"].loc[{"method": method}] = kl_divergence(p, ref, dx)
            ds["w1"].loc[{"method": method}] = wasserstein1(p, ref, dx)


def _initial_positions(cell: CellConfig) -> np.ndarray:
    # One initial ensemble for every MC method (common random numbers between methods).
    rng = np.random.default_rng(np.random.SeedSequence([cell.seed, 0x1D17]))
    return cell.init.sample(cell.chains, rng)


def _run_mc_1d(ds: xr.Dataset, cell: CellConfig, method: str, x0: np.ndarray, temperature: float,
               edges: np.ndarray, esc: tuple[float, int] | None) -> None:
    from sgdsweep.montecarlo import run_ensemble

    grid = cell.grids[0]
    res = run_ensemble(
        cell.landscape, method, x0, cell.lr, cell.steps, cell.grids,
        batch_size=cell.batch_size, sampling=cell.sampling, noise_factor=cell.noise_factor,
        substeps=cell.sde_substeps, temperature=temperature if method == "langevin" else None,
        seed=cell.seed, basin_edges=tuple(edges),
        escape_threshold=None if esc is None else esc[0],
        escape_direction=1 if esc is None else esc[1],
    )
    sel = {"method": method}
    ds["density"].loc[sel] = res.counts / (res.chains * grid.dx)
    ds["mean"].loc[sel] = res.mean[:, 0]
    ds["std"].loc[sel] = np.sqrt(res.var[:, 0])
    ds["basin_mass"].loc[sel] = res.basin_counts / res.chains
    ds["lost_fraction"].loc[sel] = res.lost / res.chains
    if esc is not None:
        steps = res.escape_step.astype(float)
        escaped = steps >= 0
        ds["escaped_fraction"].loc[sel] = escaped.mean()
        ds["escape_time_mean"].loc[sel] = (
            steps[escaped].mean() * cell.lr if escaped.any() else np.nan
        )


def _exact_escape(fp: FokkerPlanck1D, p0: np.ndarray, esc: tuple[float, int]) -> float:
    """E[T(X₀)] of the Itô SDE from the initial law (cell masses ``p0`` on the FP grid)."""
    T = mean_passage_times(fp, *esc)
    return float(np.dot(T, p0) / p0.sum())


# --------------------------------------------------------------------------- 2-D


def _fill_2d(ds: xr.Dataset, cell: CellConfig, land: dict) -> None:
    from sgdsweep.montecarlo import run_ensemble

    gx, gy = cell.grids
    nx, ny = gx.cells, gy.cells
    ds["loss"][:] = land["loss"].reshape(nx, ny)
    ds["grad_mean"][:] = land["grad"].reshape(nx, ny, 2)
    ds["grad_var"][:] = np.diagonal(land["cov"], axis1=1, axis2=2).reshape(nx, ny, 2)
    temperature = cell.temperature
    if temperature is None and "langevin" in cell.methods:
        # As in 1-D: the SDE's diffusion at the grid's lowest loss, here tr(D)/2.
        k = int(np.argmin(land["loss"]))
        temperature = 0.5 * np.trace(diffusion(land["cov"][k], cell.lr, cell.noise_factor))
        if temperature <= 0:
            raise ConfigError("langevin.temperature: the gradient noise vanishes at the minimum; "
                              "give a temperature explicitly")
    ds["temperature"] = ((), np.nan if temperature is None else float(temperature),
                         _ATTRS["temperature"])
    x0 = _initial_positions(cell)
    for method in cell.methods:
        if method not in MC_METHODS:
            continue
        res = run_ensemble(
            cell.landscape, method, x0, cell.lr, cell.steps, cell.grids,
            batch_size=cell.batch_size, sampling=cell.sampling, noise_factor=cell.noise_factor,
            substeps=cell.sde_substeps, temperature=temperature if method == "langevin" else None,
            seed=cell.seed,
        )
        sel = {"method": method}
        ds["density"].loc[sel] = res.counts / (res.chains * gx.dx * gy.dx)
        ds["mean"].loc[sel] = res.mean
        ds["std"].loc[sel] = np.sqrt(res.var)
        ds["lost_fraction"].loc[sel] = res.lost / res.chains
