"""Monte Carlo methods on model landscapes: the ensemble in d dimensions, observed.

One compiled ensemble (:class:`sgdsweep.montecarlo.models.ModelEnsemble`) per method from
the cell's shared initial positions, advanced snapshot by snapshot; at each snapshot its
moments, loss and gradient-norm statistics, the densities of its projections on the
Hessian eigenvectors of θ* (the cell's ``density_grid``), and the sharpness of the first
``models.sharpness_chains`` chains not lost. Hill's tail index of every projection at the
last snapshot. Snapshot statistics are sums in chain order: the same for any thread count.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from sgdsweep.cell.model_context import ModelContext
from sgdsweep.cell.model_schema import QUANTILES
from sgdsweep.errors import ConfigError
from sgdsweep.models.sharpness import top_eigenvalue
from sgdsweep.models.tails import hill
from sgdsweep.montecarlo.models import ModelEnsemble, snapshot_stats


def fill_model_ensemble(ctx: ModelContext, ds: xr.Dataset, name: str, **extra) -> None:
    """Run method ``name``'s ensemble on the cell's model and write its ``method`` slice.

    ``extra``: method parameters of :class:`~sgdsweep.montecarlo.models.ModelEnsemble`
    (``svag_l``, ``grad_noise``).
    """
    cell = ctx.cell
    model = cell.model
    args = model.kernel_args()
    ens = ModelEnsemble(
        args, name, ctx.initial_positions, cell.lr, batch_size=cell.batch_size, sampling=cell.sampling,
        substeps=cell.sde_substeps,
        temperature=ctx.temperature if name == "langevin" else None, seed=cell.seed,
        bound=cell.models.bound, **extra)
    chains = cell.chains
    edges = np.tile(cell.grid.edges, (len(ctx.directions), 1))
    full = "cov" in ds
    sel = {"method": name}
    proj = None
    for s, step in enumerate(cell.steps):
        ens.advance(int(step))
        lost = ens.lost_step >= 0
        st = snapshot_stats(args, ens.positions, lost, directions=ctx.directions,
                            theta_ref=ctx.minimum.theta, proj_edges=edges,
                            max_cov_dim=cell.models.max_cov_dim, quantiles=QUANTILES)
        at = {**sel, "t": cell.times[s]}
        ds["lost_fraction"].loc[at] = lost.mean()
        ds["density"].loc[at] = st["proj_counts"] / (chains * cell.grid.dx)
        ds["mean"].loc[at] = st["mean"]
        if full:
            ds["cov"].loc[at] = st["cov"]
        else:
            ds["var"].loc[at] = st["cov"] if st["cov"].ndim == 1 else np.diag(st["cov"])
        proj = st["proj"]
        alive = ~lost
        if alive.any():
            ds["proj_mean"].loc[at] = proj[:, alive].mean(axis=1)
            ds["proj_var"].loc[at] = proj[:, alive].var(axis=1)
        ds["loss_mean"].loc[at] = st["loss_mean"]
        ds["loss_quantile"].loc[at] = st["loss_quantiles"]
        ds["grad_norm_mean"].loc[at] = st["grad_norm_mean"]
        ds["grad_norm_quantile"].loc[at] = st["grad_norm_quantiles"]
        picked = np.flatnonzero(alive)[: cell.models.sharpness_chains]
        if len(picked):
            ds["sharpness"].loc[at] = float(np.mean([top_eigenvalue(model, ens.positions[c])
                                                     for c in picked]))
    if proj is not None:
        alive = ens.lost_step < 0
        for k in range(proj.shape[0]):
            z = proj[k, alive]
            try:
                alpha, se, _ = hill(z, cell.models.hill_frac)
            except ConfigError:  # too few chains, or no spread (gd: every chain the same)
                continue
            ds["tail_index"].loc[{**sel, "direction": ds.direction.values[k]}] = alpha
            ds["tail_index_se"].loc[{**sel, "direction": ds.direction.values[k]}] = se

