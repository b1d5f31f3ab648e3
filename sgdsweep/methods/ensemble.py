"""Monte Carlo methods: real minibatch SGD, its Itô SDE, Langevin and gradient descent.

Each runs one compiled ensemble (:func:`sgdsweep.montecarlo.run.simulate`) from the
cell's shared initial positions and writes its histogram density, moments, basin
masses, lost fraction and escape statistics.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from sgdsweep.cell.context import CellContext
from sgdsweep.methods.registry import get_method, register_method
from sgdsweep.montecarlo import kernels
from sgdsweep.montecarlo.escapes import censored_escapes

#: Store variables every ensemble method fills (its ``method`` slice).
ENSEMBLE_FILLS = ("density", "mean", "std", "lost_fraction", "basin_mass",
                  "escape_time_mean", "escaped_fraction", "escape_time_mle", "escape_time_mle_se",
                  "escape_count")


def fill_ensemble(ctx: CellContext, ds: xr.Dataset, name: str) -> None:
    """Run the ensemble of method ``name`` and write its statistics into ``ds``."""
    write_ensemble(ctx, ds, name, simulate_cell(ctx, name))


def simulate_cell(ctx: CellContext, name: str, params: dict | None = None):
    """The compiled ensemble of method ``name`` for the cell, from its shared initial positions.

    ``params``: the method's own kernel parameters (``{"l": …}`` for ``svag``, ``{"sigma": …}``
    for ``sgd_noise``; :func:`sgdsweep.montecarlo.run.simulate`). Returns the
    :class:`~sgdsweep.montecarlo.run.EnsembleResult`.
    """
    from sgdsweep.montecarlo.run import simulate

    cell = ctx.cell
    esc = ctx.escape
    edges = ctx.basins.edges if ctx.dim == 1 else ()
    # The cell was validated by parse_cell: no second round of checks (run_ensemble's).
    return simulate(
        cell.landscape, name, ctx.initial_positions, cell.lr, cell.steps, cell.grids,
        batch_size=cell.batch_size, sampling=cell.sampling, noise_factor=cell.noise_factor,
        substeps=cell.sde_substeps,
        temperature=ctx.temperature if get_method(name).kernel == kernels.LANGEVIN else 0.0,
        seed=cell.seed, basin_edges=np.asarray(edges, dtype=np.float64).reshape(-1),
        escape_threshold=None if esc is None else float(esc[0]),
        escape_direction=1 if esc is None else int(esc[1]), params=params,
    )


def write_ensemble(ctx: CellContext, ds: xr.Dataset, name: str, res) -> None:
    """Write an :class:`~sgdsweep.montecarlo.run.EnsembleResult` as method ``name``'s slice."""
    sel = {"method": name}
    if ctx.dim == 1:
        ds["density"].loc[sel] = res.counts / (res.chains * ctx.grid.dx)
        ds["mean"].loc[sel] = res.mean[:, 0]
        ds["std"].loc[sel] = np.sqrt(res.var[:, 0])
        ds["basin_mass"].loc[sel] = res.basin_counts / res.chains
    else:
        gx, gy = ctx.cell.grids
        ds["density"].loc[sel] = res.counts / (res.chains * gx.dx * gy.dx)
        ds["mean"].loc[sel] = res.mean
        ds["std"].loc[sel] = np.sqrt(res.var)
    ds["lost_fraction"].loc[sel] = res.lost / res.chains
    if ctx.escape is not None:
        steps = res.escape_step.astype(float)
        escaped = steps >= 0
        ds["escaped_fraction"].loc[sel] = escaped.mean()
        ds["escape_time_mean"].loc[sel] = (
            steps[escaped].mean() * ctx.cell.lr if escaped.any() else np.nan
        )
        # The chains still waiting (or lost before escaping) count as censored.
        cens = censored_escapes(res.escape_step, int(ctx.cell.steps[-1]), res.lost_step)
        ds["escape_time_mle"].loc[sel] = cens.steps * ctx.cell.lr
        ds["escape_time_mle_se"].loc[sel] = cens.se * ctx.cell.lr
        ds["escape_count"].loc[sel] = cens.escapes


def fill_model(ctx, ds: xr.Dataset, name: str, **extra) -> None:
    """The method on a model landscape (:mod:`sgdsweep.methods.model_ensemble`; imported when
    a model cell runs, so term-landscape cells do not load it)."""
    from sgdsweep.methods.model_ensemble import fill_model_ensemble

    fill_model_ensemble(ctx, ds, name, **extra)


_COMMON = dict(kind="ensemble", fill=fill_ensemble, dims=(1, 2), fills=ENSEMBLE_FILLS, fill_model=fill_model)

register_method(
    name="sgd", label="SGD (Monte Carlo)", color="vermillion", kernel=kernels.SGD,
    reads=("lr", "batch_size", "sampling", "mc"), time="t = η·step",
    summary="real minibatch SGD θ ← θ − η·mean_{i∈B} ∇l_i, batches with replacement, without "
            "replacement within a step, or random reshuffling per epoch", **_COMMON)
register_method(
    name="sde", label="SDE (Euler–Maruyama)", color="blue", kernel=kernels.SDE,
    reads=("lr", "batch_size", "sampling", "mc"),
    summary="Euler–Maruyama of the **Itô** SDE dθ = −G dt + sqrt(η Σ_b) dW, Σ_b = Σ/b "
            "(× (n−b)/(n−1) without replacement), `mc.sde_substeps` steps per SGD step", **_COMMON)
register_method(
    name="langevin", label="Langevin", color="green", kernel=kernels.LANGEVIN,
    needs_temperature=True, reads=("lr", "mc", "langevin"),
    summary="dθ = −G dt + sqrt(2T) dW, stationary law ∝ exp(−L/T); default T = the SDE's "
            "D = ηΣ_b/2 at the grid's lowest loss (mean D over the grid if that is 0)", **_COMMON)
register_method(
    name="gd", label="gradient descent", color="purple", kernel=kernels.GD, reads=("lr", "mc"),
    summary="full-batch gradient descent (drift only)", **_COMMON)
