"""Density methods: the Itô Fokker–Planck equation of SGD's SDE, and its drift-only part.

1-D: both evolve the initial law on the refined FP grid (:attr:`CellContext.fine`) with
the shared operator of the cell's convention; moments and basin masses come from the
fine solution, only the density and the current are averaged back onto the density grid.
2-D: the operator (:class:`~sgdsweep.fokker_planck.fp2d.FokkerPlanck2D`) lives
on the density grid itself.

The probability current J = −G p − ∇·(D p) is the scheme's own face flux
(:mod:`sgdsweep.fokker_planck.current`), stored at cell centres: in 1-D the mean of a fine
cell's two face fluxes, averaged over the ``fp.refine`` fine cells of each density cell
(the same averaging as the density); in 2-D the mean of each cell's two faces per axis.

This module also holds the stationary references of the FP picture (null vectors per
convention, Gibbs) and their summary numbers, used by :func:`sgdsweep.cell.run.fill_references`.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from sgdsweep.cell.context import CellContext
from sgdsweep.fokker_planck.conventions import CONVENTIONS
from sgdsweep.landscapes.grid import Grid1D
from sgdsweep.methods.registry import register_method

#: Store variables every density method fills (its ``method`` slice).
DENSITY_FILLS = ("density", "mean", "std", "lost_fraction", "basin_mass")


def fill_fokker_planck(ctx: CellContext, ds: xr.Dataset, name: str) -> None:
    """Evolve the FP equation (``fp``) or its drift-only part (``fp_drift``) into ``ds``."""
    cell = ctx.cell
    op = ctx.fp_operator(CONVENTIONS[cell.convention], drift_only=name == "fp_drift")
    dens = op.evolve(ctx.initial_masses / op.cell_volume, cell.times, ctx.fp_dt)
    write_density(ctx, ds, name, dens)
    ds["current"].loc[{"method": name}] = ctx.coarse(op.centre_current(dens))


def write_density(ctx: CellContext, ds: xr.Dataset, name: str, dens: np.ndarray,
                  fine: Grid1D | None = None) -> None:
    """Write densities (S, *FP-grid shape) as method ``name``'s slice.

    1-D: densities (S, fine cells) on ``fine``, a refinement of the density grid (default
    :attr:`CellContext.fine`, the FP grid); moments and basin masses come from it, the
    density is averaged back. 2-D: densities (S, nx, ny) on the density grid itself.
    """
    if ctx.dim == 2:
        _write_density_2d(ctx, ds, name, dens)
        return
    fine = ctx.fine if fine is None else fine
    xf, dxf = fine.centres, fine.dx
    mass = dens.sum(axis=1) * dxf
    mean = (dens * xf).sum(axis=1) * dxf / mass
    var = (dens * (xf[None, :] - mean[:, None]) ** 2).sum(axis=1) * dxf / mass
    basin_of_fine = np.searchsorted(ctx.basins.edges, xf, side="right")
    bmass = np.stack([dens[:, basin_of_fine == k].sum(axis=1) * dxf
                      for k in range(len(ctx.basins.names))], axis=1)
    sel = {"method": name}
    ds["density"].loc[sel] = dens.reshape(dens.shape[0], ctx.grid.cells, -1).mean(axis=-1)
    ds["mean"].loc[sel] = mean
    ds["std"].loc[sel] = np.sqrt(var)
    ds["basin_mass"].loc[sel] = bmass
    ds["lost_fraction"].loc[sel] = 0.0


def _write_density_2d(ctx: CellContext, ds: xr.Dataset, name: str, dens: np.ndarray) -> None:
    """Write densities (S, nx, ny) on the density grid as method ``name``'s slice: the
    density, mean and std per axis (cell-centre quadrature), lost fraction 0."""
    gx, gy = ctx.cell.grids
    w = dens * (gx.dx * gy.dx)
    mass = w.sum(axis=(1, 2))
    X, Y = np.meshgrid(gx.centres, gy.centres, indexing="ij")
    mean = np.stack([(w * X).sum(axis=(1, 2)), (w * Y).sum(axis=(1, 2))], axis=1) / mass[:, None]
    var = np.stack([(w * (X - mean[:, :1, None]) ** 2).sum(axis=(1, 2)),
                    (w * (Y - mean[:, 1:, None]) ** 2).sum(axis=(1, 2))], axis=1) / mass[:, None]
    sel = {"method": name}
    ds["density"].loc[sel] = dens
    ds["mean"].loc[sel] = mean
    ds["std"].loc[sel] = np.sqrt(var)
    ds["lost_fraction"].loc[sel] = 0.0


# --------------------------------------------------------------------------- stationary references


def fill_stationary_fp(ctx: CellContext, ds: xr.Dataset) -> None:
    """The FP stationary densities of every convention and their currents, Gibbs, and the
    summary numbers of the cell's convention: ``stationary_mean_abs_current``,
    ``stationary_circulation`` (2-D), ``stationary_kl_gibbs``, ``stationary_min_density``,
    ``fp_monotone_violation``, ``fp_negative_offdiag``, ``fp_degenerate``. Gibbs has no
    current of its own (NaN)."""
    from sgdsweep.fokker_planck.nonequilibrium import current_summary, kl_to_gibbs
    from sgdsweep.fokker_planck.references import gibbs_density

    T = ctx.temperature
    conv = ctx.cell.convention
    summary: dict[str, float | bool] = {"fp_degenerate": False}
    # The loss on the FP grid's cells (1-D: the refined grid; 2-D: the density grid).
    loss = (ctx.cell.landscape.evaluate(ctx.fine.centres)["loss"] if ctx.dim == 1
            else ctx.land["loss"])
    for kind, alpha in CONVENTIONS.items():
        op = ctx.fp_operator(alpha)
        st = op.stationary()
        ds["stationary"].loc[{"kind": kind}] = ctx.coarse(st.density)
        ds["stationary_current"].loc[{"kind": kind}] = ctx.coarse(op.centre_current(st.density))
        if kind == conv:
            cs = current_summary(op, st.density)
            summary.update(
                fp_degenerate=bool(st.degenerate),
                stationary_mean_abs_current=cs.mean_abs_current,
                stationary_min_density=st.min_density,
                fp_monotone_violation=op.monotonicity.fraction_violating,
                fp_negative_offdiag=float(op.monotonicity.negative_offdiag))
            if ctx.dim == 2:  # a vortex needs a plane
                summary["stationary_circulation"] = cs.circulation
            if T is not None:
                summary["stationary_kl_gibbs"] = kl_to_gibbs(st.density, loss, T, op.cell_volume)
    if T is not None:
        gibbs = gibbs_density(loss, T, op.cell_volume)
        ds["stationary"].loc[{"kind": "gibbs"}] = ctx.coarse(gibbs.reshape(op.shape))
    from sgdsweep.cell.schema import ATTRS

    for name, value in summary.items():
        ds[name] = ((), value, ATTRS[name])


_COMMON = dict(kind="density", fill=fill_fokker_planck, dims=(1, 2), fills=(*DENSITY_FILLS, "current"))

register_method(
    name="fp", label="Fokker–Planck (Itô)", color="black", reads=("fp", "mc.sde_substeps"),
    summary="Itô Fokker–Planck ∂p/∂t = ∇·(G p) + Σ ∂_j∂_k(D_jk p): finite volumes, "
            "Scharfetter–Gummel fluxes (+ a 9-point cross-diffusion stencil in 2-D), implicit "
            "Euler (Thomas in 1-D, sparse LU in 2-D), zero-flux walls; 1-D on a grid `fp.refine` "
            "times finer than the density grid, 2-D on the density grid; stores the current J",
    **_COMMON)
register_method(
    name="fp_drift", label="FP, drift only", color="sky", linestyle="--", reads=("fp", "mc.sde_substeps"),
    summary="the same with D = 0 (transport of the density by gradient descent)", **_COMMON)
