"""Density methods: the Itô Fokker–Planck equation of SGD's SDE, and its drift-only part.

Both evolve the initial law on the refined FP grid (:attr:`CellContext.fine`) with the
shared operator of the cell's convention; moments and basin masses come from the fine
solution, only the density is averaged back onto the density grid.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from sgdsweep.cellconfig import CONVENTIONS
from sgdsweep.grid import Grid1D
from sgdsweep.methods.context import CellContext
from sgdsweep.methods.registry import register_method

#: Store variables every density method fills (its ``method`` slice).
DENSITY_FILLS = ("density", "mean", "std", "lost_fraction", "basin_mass")


def fill_fokker_planck(ctx: CellContext, ds: xr.Dataset, name: str) -> None:
    """Evolve the FP equation (``fp``) or its drift-only part (``fp_drift``) into ``ds``."""
    cell = ctx.cell
    fp = ctx.operator(CONVENTIONS[cell.convention], drift_only=(name == "fp_drift"))
    dens = fp.evolve(ctx.initial_masses / ctx.fine.dx, cell.times, ctx.fp_dt)
    write_density(ctx, ds, name, dens)


def write_density(ctx: CellContext, ds: xr.Dataset, name: str, dens: np.ndarray,
                  fine: Grid1D | None = None) -> None:
    """Write densities (S, fine cells) on ``fine`` as method ``name``'s slice.

    ``fine``: a refinement of the density grid (default :attr:`CellContext.fine`, the FP
    grid); moments and basin masses come from it, the density is averaged back.
    """
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


_COMMON = dict(kind="density", fill=fill_fokker_planck, dims=(1,), fills=DENSITY_FILLS)

register_method(
    name="fp", reads=("fp", "mc.sde_substeps"),
    summary="Itô Fokker–Planck ∂p/∂t = ∂θ(G p) + ∂θθ(D p): finite volumes, Scharfetter–Gummel "
            "fluxes, implicit Euler (O(N) Thomas), zero-flux walls, on a grid `fp.refine` times "
            "finer than the density grid", **_COMMON)
register_method(
    name="fp_drift", reads=("fp", "mc.sde_substeps"),
    summary="the same with D = 0 (transport of the density by gradient descent)", **_COMMON)
