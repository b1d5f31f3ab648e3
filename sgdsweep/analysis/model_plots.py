"""Figures of sweeps on models with many parameters (stores with a ``direction`` dim).

Each takes a sweep dataset (or one cell of it) and returns a matplotlib Figure:
``projection_variance`` (the stationary variance along each Hessian eigenvector, Monte
Carlo against SGD's exact law, the Itô SDE's and Gibbs', over the learning rate),
``projection_densities`` (one cell: the densities of the projections at the last snapshot
beside the Gaussians of the exact references), ``sharpness_loss`` (one cell: sharpness
over time with 2/η marked, and the loss), ``noise_geometry`` (one cell: per-direction
gradient noise against curvature, and the temperature each reference would need),
``tail_index``, ``edge_of_stability``, ``linear_scaling`` and ``sgd_stability`` (the (η, b)
map of Monte Carlo divergence with the exact mean-square edge and the Wu–Ma–E bound).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr
from matplotlib.figure import Figure

from sgdsweep.analysis import figure
from sgdsweep.analysis.figure import TIME, _axes, _cell_label, _figure, _legend_below, _message, method_style

# the 1-D figures' colours for the same references, labelled for moments in d dimensions
KIND_STYLE = {kind: {**figure.KIND_STYLE[kind], "label": label}
              for kind, label in (("sgd", "SGD exact"), ("ito", "Itô SDE exact"), ("gibbs", "Gibbs T·H⁻¹"))}


def _one(ds: xr.Dataset, keep: tuple[str, ...] = ()) -> tuple[xr.Dataset, dict[str, Any]]:
    """The first finished cell along every sweep dim not in ``keep``, and its coordinates."""
    sel = {}
    for d in ds.sgd.sweep_dims:
        if d in keep:
            continue
        done = ds["done"].any([k for k in ds["done"].dims if k != d]) if ds["done"].ndim > 1 else ds["done"]
        idx = int(np.argmax(np.asarray(done.values, dtype=bool))) if ds.sizes[d] > 1 else 0
        sel[d] = idx
    cell = ds.isel(sel)
    return cell, {d: ds[d].values[i] for d, i in sel.items()}


def _ensembles(ds: xr.Dataset) -> list[str]:
    return [m for m in ds.sgd.methods if m != "gd"]


def projection_variance(ds: xr.Dataset) -> Figure:
    """Last-snapshot variance of (θ − θ*)·v_k per direction, over ``lr`` (others: first cell)."""
    if "lr" not in ds.dims:
        return _message("projection variance: needs an lr axis")
    view, where = _one(ds, keep=("lr",))
    dirs = view.direction.values[:4]
    fig = _figure(len(dirs))
    axs = _axes(fig)
    lr = view["lr"].values
    for ax, k in zip(axs, dirs, strict=False):
        for m in _ensembles(view):
            v = view["proj_var"].sel({"method": m, "direction": k}).isel(t=-1).values
            ax.plot(lr, v, marker="o", lw=0, **method_style(m))
        for kind, st in KIND_STYLE.items():
            v = view["stationary_proj_var"].sel(kind=kind, direction=k).values
            if np.isfinite(v).any():
                ax.plot(lr, v, **st)
        ax.set(xscale="log", yscale="log", xlabel="learning rate η", title=f"direction {k}")
    axs[0].set_ylabel("variance of (θ − θ*)·v_k")
    if "ms_edge" in view and np.isfinite(view["ms_edge"].values).any():
        for ax in axs:
            ax.axvline(float(np.nanmin(view["ms_edge"].values)), color="#D55E00", lw=0.8,
                       label="mean-square edge")
    fig.suptitle("Stationary variance along the Hessian's eigenvectors" +
                 (f" ({_cell_label(where)})" if where else ""))
    _legend_below(fig, axs[0])
    return fig


def projection_densities(ds: xr.Dataset) -> Figure:
    """One cell: last-snapshot densities of the projections, with the exact references' Gaussians."""
    cell, where = _one(ds)
    dirs = cell.direction.values[:4]
    fig = _figure(len(dirs))
    axs = _axes(fig)
    x = cell["x"].values
    for ax, k in zip(axs, dirs, strict=False):
        for m in _ensembles(cell):
            ax.step(x, cell["density"].sel({"method": m, "direction": k}).isel(t=-1).values, where="mid",
                    **method_style(m))
        for kind, st in KIND_STYLE.items():
            var = float(cell["stationary_proj_var"].sel(kind=kind, direction=k).values)
            if np.isfinite(var) and var > 0:
                ax.plot(x, np.exp(-0.5 * x**2 / var) / np.sqrt(2 * np.pi * var), **st)
        ax.set(xlabel=f"(θ − θ*)·v_{k[1:]}", title=f"direction {k}")
    axs[0].set_ylabel("density")
    fig.suptitle("Densities of the projections at the last snapshot" +
                 (f" ({_cell_label(where)})" if where else ""))
    _legend_below(fig, axs[0])
    return fig


def sharpness_loss(ds: xr.Dataset) -> Figure:
    """One cell: sharpness (top Hessian eigenvalue) and loss over time, with 2/η."""
    cell, where = _one(ds)
    fig = _figure(2)
    ax, bx = _axes(fig)
    t = cell["t"].values
    for m in cell.sgd.methods:
        ax.plot(t, cell["sharpness"].sel({"method": m}).values, **method_style(m))
        bx.plot(t, cell["loss_mean"].sel({"method": m}).values, **method_style(m))
    lr = float(np.atleast_1d(cell["lr"].values)[0]) if "lr" in cell.coords else None
    if lr:
        ax.axhline(2.0 / lr, color="#D55E00", lw=0.8, ls="--", label="2/η")
    ax.set(xlabel=TIME, ylabel="sharpness λ_max(H(θ))", title="sharpness")
    bx.set(xlabel=TIME, ylabel="mean training loss", yscale="log", title="loss")
    fig.suptitle("Sharpness and loss" + (f" ({_cell_label(where)})" if where else ""))
    _legend_below(fig, ax)
    return fig


def noise_geometry(ds: xr.Dataset) -> Figure:
    """One cell: gradient noise v_kᵀΣ*v_k against curvature λ_k, and per-direction temperatures."""
    cell, where = _one(ds)
    fig = _figure(2)
    ax, bx = _axes(fig)
    lam = cell["hessian_eig"].values
    noise = cell["noise_proj"].values
    ax.loglog(lam, noise, "o", color="black")
    for i, k in enumerate(cell.direction.values):
        ax.annotate(str(k), (lam[i], noise[i]), textcoords="offset points", xytext=(4, 2), fontsize=8)
    ax.set(xlabel="Hessian eigenvalue λ_k", ylabel="v_kᵀ Σ* v_k",
           title=f"alignment {float(cell['noise_alignment'].values):.3g}")
    idx = np.arange(len(lam))
    for kind, st in KIND_STYLE.items():
        v = cell["temperature_direction"].sel(kind=kind).values
        if np.isfinite(v).any():
            bx.plot(idx + 1, v, marker="o", **st)
    bx.set(xlabel="direction k", ylabel="λ_k · var_k (temperature)", yscale="log",
           title="the temperature each direction needs")
    fig.suptitle("Noise geometry at θ*" + (f" ({_cell_label(where)})" if where else ""))
    _legend_below(fig, bx)
    return fig


def tail_index(ds: xr.Dataset) -> Figure:
    """Hill's tail index along h1 over η, one line per batch size, with the exact Kesten index
    (one parameter, b = 1) and each batch size's mean-square edge; α = 2 marked."""
    if "lr" not in ds.dims or not np.isfinite(ds["tail_index"].values).any():
        return _message("tail index: needs an lr axis and Hill estimates")
    view, where = _one(ds, keep=("lr", "batch_size"))
    fig = _figure(1, width=5.5, height=3.6)
    ax = _axes(fig)[0]
    lr = view["lr"].values
    sizes = view["batch_size"].values if "batch_size" in view.dims else [None]
    for i, b in enumerate(sizes):
        cell = view.sel(batch_size=b) if b is not None else view
        alpha = cell["tail_index"].sel({"method": "sgd", "direction": "h1"})
        se = cell["tail_index_se"].sel({"method": "sgd", "direction": "h1"})
        colour = f"C{i}"
        ax.errorbar(lr, alpha.values, yerr=se.values, marker="o", ms=3, color=colour,
                    label=f"Hill, b = {b}" if b is not None else "Hill")
        edge = float(np.nanmin(cell["ms_edge"].values)) if "ms_edge" in cell else np.nan
        if np.isfinite(edge):
            ax.axvline(edge, color=colour, lw=0.8, ls="--")
        if "kesten_index" in cell and np.isfinite(cell["kesten_index"].values).any():
            k = cell["kesten_index"].values
            ax.plot(lr, np.where(np.isfinite(k), k, np.nan), color="black", lw=1.2,
                    label="exact (Kesten), b = 1")
    ax.axhline(2.0, color="grey", lw=0.8)
    ax.set(xlabel="learning rate η (dashed: mean-square edge of each b)", ylabel="tail index α",
           yscale="log", title="SGD's stationary tail index")
    fig.suptitle("Heavy tails beyond the mean-square edge" + (f" ({_cell_label(where)})" if where else ""))
    _legend_below(fig, ax)
    return fig


def edge_of_stability(ds: xr.Dataset) -> Figure:
    """Sharpness over optimisation steps, one column per η (at most 5), with 2/η marked:
    GD, and SGD at each batch size; the mean loss below."""
    if "lr" not in ds.dims or not np.isfinite(ds["sharpness"].values).any():
        return _message("edge of stability: needs an lr axis and sharpness")
    view, where = _one(ds, keep=("lr", "batch_size"))
    lrs = view["lr"].values[:5]
    fig = _figure(len(lrs), nrows=2, height=2.8)
    axs = np.asarray(fig.axes).reshape(2, len(lrs))
    sizes = view["batch_size"].values if "batch_size" in view.dims else [None]
    for j, lr in enumerate(lrs):
        top, bottom = axs[0, j], axs[1, j]
        cell_lr = view.sel(lr=lr)
        for m in cell_lr.sgd.methods:
            for i, b in enumerate(sizes):
                if m == "gd" and i > 0:
                    continue  # GD does not see the batch size
                cell = cell_lr.sel(batch_size=b) if b is not None else cell_lr
                steps = cell["t"].values / float(lr)
                style = method_style(m)
                if m != "gd" and b is not None:
                    style = {**style, "label": f"{style['label']}, b = {b}", "alpha": 1.0 - 0.3 * i}
                top.plot(steps, cell["sharpness"].sel({"method": m}).values, **style)
                bottom.plot(steps, cell["loss_mean"].sel({"method": m}).values, **style)
        top.axhline(2.0 / float(lr), color="black", lw=0.8, ls="--", label="2/η")
        # a chain on its way to divergence has a huge sharpness and loss for a snapshot or two
        start = cell_lr["sharpness"].isel(t=0).values
        s0 = float(np.nanmax(start)) if np.isfinite(start).any() else 0.0
        top.set_ylim(0.0, 1.5 * max(2.0 / float(lr), s0))
        bottom.set_yscale("log")
        loss = cell_lr["loss_mean"].values
        loss0 = cell_lr["loss_mean"].isel(t=0).values
        if np.isfinite(loss0).any() and (loss > 0).any():
            bottom.set_ylim(0.7 * float(np.nanmin(np.where(loss > 0, loss, np.nan))),
                            3.0 * float(np.nanmax(loss0)))
        top.set(title=f"η = {float(lr):g}", xlabel="step")
        bottom.set(xlabel="step")
    axs[0, 0].set_ylabel("sharpness λ_max(H(θ))")
    axs[1, 0].set_ylabel("mean training loss")
    fig.suptitle("Edge of stability: sharpness against 2/η" + (f" ({_cell_label(where)})" if where else ""))
    _legend_below(fig, axs[0, 0])
    return fig


def linear_scaling(ds: xr.Dataset) -> Figure:
    """Along each line η/b = const of an (lr, batch_size) grid: SGD's exact stationary excess
    loss over the Itô SDE's (constant on the line), and Monte Carlo SGD's over the exact."""
    from sgdsweep.analysis.scaling import along_lines

    if not {"lr", "batch_size"} <= set(ds.dims) or "stationary_excess_loss" not in ds:
        return _message("linear scaling: needs lr and batch_size axes")
    ex = ds["stationary_excess_loss"]
    if not np.isfinite(ex.sel(kind="ito").values).any():
        return _message("linear scaling: no exact stationary loss (least squares only)")
    exact = along_lines(ex.sel(kind="sgd") / ex.sel(kind="ito"))
    mc = along_lines((ds["loss_mean"].sel({"method": "sgd"}).isel(t=-1) - ds["loss_star"])
                     / ex.sel(kind="sgd"))
    fig = _figure(2)
    ax, bx = _axes(fig)
    lr = exact["lr"].values
    for i, c in enumerate(exact["ratio"].values):
        ax.plot(lr, exact.sel(ratio=c).values, marker="o", ms=3, color=f"C{i}", label=f"η/b = {c:g}")
        bx.plot(lr, mc.sel(ratio=c).values, marker="o", ms=3, color=f"C{i}")
    ax.axhline(1.0, color="black", lw=0.8)
    bx.axhline(1.0, color="black", lw=0.8)
    ax.set(xscale="log", xlabel="learning rate η", ylabel="SGD exact / Itô SDE exact",
           title="stationary excess loss along η/b = const")
    bx.set(xscale="log", xlabel="learning rate η", ylabel="Monte Carlo / SGD exact",
           title="Monte Carlo SGD at the last snapshot")
    fig.suptitle("The linear scaling rule")
    _legend_below(fig, ax)
    return fig


def sgd_stability(ds: xr.Dataset) -> Figure:
    """The (η, b) stability map: each cell stable (hollow) or divergent (filled) by
    :func:`~sgdsweep.analysis.stability.divergent`, with the exact mean-square edge ms_edge(b),
    the Wu–Ma–E bound min(2/a, √b/s) and the one-step (sufficient) edge over b."""
    from sgdsweep.analysis.stability import divergent

    if not {"lr", "batch_size"} <= set(ds.dims) or "wme_edge" not in ds:
        return _message("SGD stability: needs lr and batch_size axes and the Wu–Ma–E bound")
    view, where = _one(ds, keep=("lr", "batch_size"))
    div = divergent(view).transpose("lr", "batch_size").values
    lr, b = view["lr"].values.astype(float), view["batch_size"].values.astype(float)
    fig = _figure(1, width=5.5, height=3.8)
    ax = _axes(fig)[0]
    L, B = np.meshgrid(lr, b, indexing="ij")
    for flag, style in ((0.0, {"facecolors": "none", "label": "Monte Carlo: stable"}),
                        (1.0, {"label": "Monte Carlo: diverged"})):
        pick = div == flag
        ax.scatter(B[pick], L[pick], s=18, edgecolors="black", color="black", lw=0.8, **style)

    def edge(name: str) -> np.ndarray:
        if name not in view:
            return np.full(b.shape, np.nan)
        return view[name].transpose("batch_size", ...).max([d for d in view[name].dims
                                                             if d != "batch_size"]).values

    for name, st in (("ms_edge", {"color": "#D55E00", "label": "exact mean-square edge"}),
                     ("wme_edge", {"color": "#0072B2", "ls": "--", "label": "Wu–Ma–E min(2/a, √b/s)"}),
                     ("one_step_edge", {"color": "#009E73", "ls": ":", "label": "one-step (sufficient)"})):
        v = edge(name)
        if np.isfinite(v).any():
            ax.plot(b, v, marker=".", **st)
    ax.set(xscale="log", yscale="log", xlabel="batch size b", ylabel="learning rate η",
           title="SGD's stability at θ*")
    fig.suptitle("Dynamical stability of SGD's minimum" + (f" ({_cell_label(where)})" if where else ""))
    _legend_below(fig, ax)
    return fig


FIGURES_MODEL = {
    "projection_variance": projection_variance,
    "projection_densities": projection_densities,
    "sharpness_loss": sharpness_loss,
    "noise_geometry": noise_geometry,
    "tail_index": tail_index,
    "edge_of_stability": edge_of_stability,
    "linear_scaling": linear_scaling,
    "sgd_stability": sgd_stability,
}
