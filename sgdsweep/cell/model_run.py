"""``run_cell`` for a cell on a model with many parameters (``landscape.family: model``).

Everything for one grid point: the reference minimum θ* with its Hessian's top
eigenpairs and the noise covariance there, the exact stationary references of the
moments (least squares: SGD's discrete-time second moment and the Itô SDE's, exact;
Gibbs T·H*⁻¹ for every model, exact for least squares and the Laplace approximation
otherwise), the mean-square stability edge and the Wu–Ma–E bound from the
non-uniformity of the per-sample Hessians, then every method's ensemble observed
through its moments, loss, gradient norm, sharpness and the densities of its
projections on the Hessian eigenvectors (:mod:`sgdsweep.methods.model_ensemble`).
The layout is :mod:`sgdsweep.cell.model_schema`.
"""

from __future__ import annotations

import json
import time

import numpy as np
import xarray as xr

from sgdsweep.cell.model_config import ModelCellConfig
from sgdsweep.cell.model_context import ModelContext
from sgdsweep.cell.model_schema import ATTRS, MODEL_KINDS, QUANTILES, variables
from sgdsweep.cell.schema import METHOD_KINDS_ATTR, RUNTIME
from sgdsweep.errors import ConfigError
from sgdsweep.models import moments, nonuniformity, sharpness, tails


def full_cov(cell: ModelCellConfig) -> bool:
    """Whether the cell stores full covariances (d ≤ models.max_cov_dim)."""
    return cell.model.d <= cell.models.max_cov_dim


def model_template(cell: ModelCellConfig) -> xr.Dataset:
    """The NaN-filled structure of the cell's result (nothing computed: no minimum is solved)."""
    k, d = cell.models.directions, cell.model.d
    user = len(cell.models.project_on)
    coords = {"method": list(cell.methods), "t": cell.times, "x": cell.grid.centres,
              "direction": [f"h{j + 1}" for j in range(k)] + [f"u{j + 1}" for j in range(user)],
              "rank": np.arange(1, k + 1),
              "param": np.arange(d), "param2": np.arange(d), "kind": list(MODEL_KINDS),
              "quantile": list(QUANTILES)}
    sizes = {name: len(v) for name, v in coords.items()}
    data = {name: xr.Variable(dims, np.full(tuple(sizes[s] for s in dims), np.nan), attrs=ATTRS.get(name, {}))
            for name, dims in variables(full_cov(cell)).items()}
    for m in cell.method_specs:
        for name, v in m.variables.items():
            if set(v.dims) <= set(coords):
                data.setdefault(name, xr.Variable(v.dims, np.full(tuple(sizes[s] for s in v.dims), v.fill),
                                                  attrs={"long_name": v.long_name, "units": v.units}))
    ds = xr.Dataset(data, coords=coords)
    for c in ds.coords:
        ds[c].attrs.update(ATTRS.get(str(c), {}))
    data_ = cell.model.data
    ds.attrs.update({
        "sde_convention": "Ito",
        "landscape_family": "model",
        "landscape": cell.model.kind,
        "model": cell.model.kind,
        "n_params": d,
        "n_datapoints": cell.model.n,
        "dataset": data_.name,
        "dataset_n": data_.n,
        "dataset_p": data_.p,
        "dataset_digest": data_.digest,
        "sampling": cell.sampling,
        "chains": cell.chains,
        "dx": cell.grid.dx,
        METHOD_KINDS_ATTR: json.dumps({m.name: m.kind for m in cell.method_specs}),
    })
    return ds


def run_model_cell(cell: ModelCellConfig) -> xr.Dataset:
    """Compute everything for one model cell; see the module docstring."""
    t_start = time.perf_counter()
    ctx = ModelContext(cell)
    ds = model_template(cell)
    fill_model_references(ctx, ds)
    for method in cell.method_specs:
        method.fill_model(ctx, ds, method.name)
    ds[RUNTIME] = ((), time.perf_counter() - t_start, ATTRS[RUNTIME])
    return ds


def _exact_least_squares(cell: ModelCellConfig) -> bool:
    """Whether SGD's moments close exactly: squared loss of a linear model, iid minibatches."""
    return cell.model.kind == "linear_regression" and cell.sampling != "reshuffle"


def fill_nonuniformity(cell: ModelCellConfig, ds: xr.Dataset, theta: np.ndarray, sharp: float, *,
                       dense: bool) -> None:
    """s at θ*, the Wu–Ma–E bound for the cell's batch and, with ``dense`` Hessians, the one-step
    edge (:mod:`sgdsweep.models.nonuniformity`)."""
    s = nonuniformity.nonuniformity(cell.model, theta)
    c = cell.noise_factor
    ds["nonuniformity"] = ((), s, ATTRS["nonuniformity"])
    ds["wme_edge"] = ((), nonuniformity.wme_edge(sharp, s, c), ATTRS["wme_edge"])
    if dense:
        try:
            edge = nonuniformity.one_step_edge(cell.model, theta, c)
        except ConfigError:  # H* not positive definite: the sufficient condition has no edge
            edge = np.nan
        ds["one_step_edge"] = ((), edge, ATTRS["one_step_edge"])


def fill_model_references(ctx: ModelContext, ds: xr.Dataset) -> None:
    """θ*, the Hessian and noise at θ*, temperatures, the stationary references, the edges."""
    cell, mini = ctx.cell, ctx.minimum
    d = cell.model.d
    ds["theta_star"][:] = mini.theta
    ds["loss_star"] = ((), float(mini.loss), ATTRS["loss_star"])
    ds["grad_norm_star"] = ((), float(mini.grad_norm), ATTRS["grad_norm_star"])
    V, lam = ctx.directions, ctx.eigenvalues
    ds["hessian_eig"][:] = lam
    sigma = ctx.noise_cov
    ds["noise_proj"][:] = np.einsum("kd,de,ke->k", V, sigma, V)
    ds["noise_eig"][:] = mini.noise_eigvals[: cell.models.directions]
    H = cell.model.hessian(mini.theta) if d <= 2000 else None
    if H is not None:
        geo = sharpness.noise_geometry(H, sigma)
        ds["noise_alignment"] = ((), float(geo.alignment), ATTRS["noise_alignment"])
    T = ctx.temperature
    ds["temperature"] = ((), T, ATTRS["temperature"])
    ds["gd_edge"] = ((), 2.0 / float(mini.hessian_eigvals[0]), ATTRS["gd_edge"])
    fill_nonuniformity(cell, ds, mini.theta, float(mini.hessian_eigvals[0]), dense=H is not None)
    covs: dict[str, np.ndarray | None] = {"sgd": None, "ito": None, "gibbs": None}
    if H is not None and np.isfinite(T):
        covs["gibbs"] = T * np.linalg.inv(H)
    if _exact_least_squares(cell):
        b, s = cell.batch_size, cell.sampling
        ds["ms_edge"] = ((), float(moments.ms_edge(cell.model, b, s)), ATTRS["ms_edge"])
        # beyond either mean-square edge (SGD's, or the Itô SDE's: its multiplicative noise has
        # one too) that second moment has no fixed point: the reference is left NaN
        for kind, solve in (("sgd", moments.sgd_stationary_cov), ("ito", moments.sde_stationary_cov)):
            try:
                covs[kind] = solve(cell.model, cell.lr, b, s)
            except ConfigError:
                covs[kind] = None
        if d == 1 and b == 1 and s == "with_replacement" and cell.model.l2 == 0:
            a = cell.model.X[:, 0] ** 2
            ds["kesten_index"] = ((), float(tails.kesten_index(a, cell.lr)), ATTRS["kesten_index"])
    stat = "stationary_cov" if "stationary_cov" in ds else "stationary_var"
    for kind, C in covs.items():
        if C is None:
            continue
        sel = {"kind": kind}
        if stat == "stationary_cov":
            ds[stat].loc[sel] = C
        else:
            ds[stat].loc[sel] = np.diag(C)
        if H is not None:
            ds["stationary_excess_loss"].loc[sel] = 0.5 * float(np.sum(H * C))
        var_k = np.einsum("kd,de,ke->k", V, C, V)
        ds["stationary_proj_var"].loc[sel] = var_k
        # λ_k · var_k is a temperature only along an eigenvector (Gibbs: var_k = T/λ_k)
        eig = np.arange(len(lam)) < ctx.hessian_directions
        ds["temperature_direction"].loc[sel] = np.where(eig, lam * var_k, np.nan)


__all__ = ["model_template", "run_model_cell"]
