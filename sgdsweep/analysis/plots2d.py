"""Figures of 2-D stores: the stationary density with its probability current, and how
far the FP stationary state is from equilibrium along a sweep axis."""

from __future__ import annotations

import itertools
from typing import Any

import matplotlib as mpl
import numpy as np
import xarray as xr
from matplotlib.figure import Figure

from sgdsweep.analysis.figure import (
    OKABE_ITO,
    STYLE,
    _axes,
    _cell_label,
    _figure,
    _fmt,
    _legend_below,
    _message,
    first_done_cell,
    method_style,
)
from sgdsweep.cell.schema import DONE

# --------------------------------------------------------------------------- 2-D


def _most_circulating_cell(ds: xr.Dataset) -> tuple[xr.Dataset, dict[str, Any]] | None:
    """The finished cell with the largest |stationary_circulation| (else the first finished)."""
    dims = ds.sgd.sweep_dims
    if dims and "stationary_circulation" in ds:
        vals = np.abs(np.asarray(ds["stationary_circulation"].where(ds[DONE]).transpose(*dims).values,
                                 dtype=float))
        if np.isfinite(vals).any():
            idx = np.unravel_index(int(np.nanargmax(vals)), vals.shape)
            isel = {d: int(i) for d, i in zip(dims, idx, strict=True)}
            return ds.isel(isel), {d: ds[d].values[i] for d, i in isel.items()}
    return first_done_cell(ds)


#: Streamlines of J are drawn where p is above this fraction of its maximum.
STREAM_FLOOR = 1e-3


def _density_panel(ax: Any, fig: Figure, x: np.ndarray, y: np.ndarray, p: np.ndarray,
                   J: np.ndarray | None, title: str) -> None:
    """p (nx, ny) as a colour map, J (nx, ny, 2) as streamlines (width ∝ |J|)."""
    with mpl.rc_context(STYLE):
        mesh = ax.pcolormesh(x, y, p.T, shading="nearest", cmap="viridis")
        fig.colorbar(mesh, ax=ax, shrink=0.85, label="p  [1/θ²]")
        if J is not None and np.isfinite(J).all() and np.abs(J).max() > 0:
            # Only where there is mass: elsewhere J is round-off and its direction noise.
            empty = (p < STREAM_FLOOR * np.nanmax(p)).T
            speed = np.hypot(J[..., 0], J[..., 1]).T
            u = np.ma.masked_where(empty, J[..., 0].T)
            v = np.ma.masked_where(empty, J[..., 1].T)
            ax.streamplot(x, y, u, v, color="white", density=1.1,
                          linewidth=0.4 + 1.6 * speed / speed[~empty].max(), arrowsize=0.8)
    ax.set_xlabel("θ₁ (x)")
    ax.set_ylabel("θ₂ (y)")
    ax.set_title(title)
    ax.grid(False)


def _zoom(axs: Any, x: np.ndarray, y: np.ndarray, densities: list[np.ndarray]) -> None:
    """Limit every axis to where any of ``densities`` has mass (above STREAM_FLOOR of its
    maximum), with three cells of margin."""
    mass = np.nanmax(np.stack([np.nan_to_num(p / np.nanmax(p)) for p in densities]), axis=0)
    ix, iy = np.nonzero(mass > STREAM_FLOOR)
    if ix.size:
        pad_x, pad_y = 3 * (x[1] - x[0]), 3 * (y[1] - y[0])
        for ax in axs:
            ax.set_xlim(max(x[0], x[ix.min()] - pad_x), min(x[-1], x[ix.max()] + pad_x))
            ax.set_ylim(max(y[0], y[iy.min()] - pad_y), min(y[-1], y[iy.max()] + pad_y))


def current_2d(ds: xr.Dataset) -> Figure:
    """A 2-D cell: the stationary FP density (cell's convention) with streamlines of its
    probability current, the FP density at the last snapshot with its current, and SGD's
    Monte Carlo histogram at the last snapshot. The cell is the one with the largest
    absolute ``stationary_circulation`` of the selection."""
    if "y" not in ds.dims:
        return _message("current_2d: a 2-D store is needed")
    found = _most_circulating_cell(ds)
    if found is None:
        return _message("current_2d: no finished cell")
    cell, where = found
    x = np.asarray(cell["x"].values, dtype=float)
    y = np.asarray(cell["y"].values, dtype=float)
    kind = str(cell.attrs.get("fp_convention", "ito"))
    panels: list[tuple[np.ndarray, np.ndarray | None, str]] = []
    if kind in cell.sgd.kinds:
        panels.append((np.asarray(cell["stationary"].sel(kind=kind).values, float),
                       np.asarray(cell["stationary_current"].sel(kind=kind).values, float),
                       f"stationary FP ({kind}) and J"))
    t_last = float(cell["t"].values[-1])
    if "fp" in cell.sgd.methods:
        panels.append((np.asarray(cell["density"].sel({"method": "fp"}).isel(t=-1).values, float),
                       np.asarray(cell["current"].sel({"method": "fp"}).isel(t=-1).values, float),
                       f"FP at t = {t_last:.3g} and J"))
    if "sgd" in cell.sgd.methods:
        p = np.asarray(cell["density"].sel({"method": "sgd"}).isel(t=-1).values, float)
        label = f"SGD histogram at t = {t_last:.3g}"
        if "tv" in cell and "fp" in cell.sgd.methods:
            label += f" (TV to FP {float(cell['tv'].sel({'method': 'sgd'}).isel(t=-1)):.3f})"
        panels.append((p, None, label))
    if not panels:
        return _message("current_2d: the cell has neither a stationary density nor fp or sgd")
    fig = _figure(len(panels), width=4.6, height=3.9)
    axs = _axes(fig)
    for ax, (p, J, title) in zip(axs, panels, strict=True):
        _density_panel(ax, fig, x, y, p, J, title)
    _zoom(axs, x, y, [p for p, _, _ in panels])
    facts = []
    for name, label in (("stationary_circulation", "circulation"), ("stationary_mean_abs_current", "∫|J|"),
                        ("stationary_kl_gibbs", "KL(stationary‖Gibbs)"),
                        ("fp_monotone_violation", "non-monotone faces")):
        if name in cell:
            facts.append(f"{label} {float(cell[name]):.3g}")
    fig.suptitle("Probability current" + (f" ({_cell_label(where)})" if where else "")
                 + ("\n" + ", ".join(facts) if facts else ""))
    return fig


def nonequilibrium_summary(ds: xr.Dataset, along: str | None = None) -> Figure:
    """Stationary circulation, ∫|J| and KL(stationary ‖ Gibbs) against one sweep axis
    (``along``: default ``tilt`` if swept, else the last sweep axis), one line per point
    of the other sweep axes."""
    names = [n for n in ("stationary_circulation", "stationary_mean_abs_current", "stationary_kl_gibbs")
             if n in ds]
    dims = ds.sgd.sweep_dims
    if not dims or not names:
        return _message("nonequilibrium summary: needs a sweep store with stationary summaries")
    along = along or ("tilt" if "tilt" in dims else dims[-1])
    others = [d for d in dims if d != along]
    xv = np.asarray(ds[along].values, dtype=float)
    fig = _figure(len(names), width=4.0, height=3.2)
    axs = _axes(fig)
    colours = itertools.cycle(OKABE_ITO.values())
    combos = list(itertools.product(*(range(ds.sizes[d]) for d in others))) or [()]
    styles = [(next(colours), c) for c in combos]
    for ax, name in zip(axs, names, strict=True):
        da = ds[name].where(ds[DONE]).transpose(*others, along)
        for colour, combo in styles:
            vals = np.asarray(da.isel(dict(zip(others, combo, strict=True))).values, dtype=float)
            label = ", ".join(f"{d} = {_fmt(ds[d].values[i])}" for d, i in zip(others, combo, strict=True))
            ax.plot(xv, vals, "o-", ms=4, color=colour, label=label or name)
        ax.set_xlabel(along)
        ax.set_title(ATTRS_SHORT.get(name, name))
    _legend_below(fig, axs[0], ncols=4)
    fig.suptitle("How far the FP stationary state is from equilibrium")
    return fig


ATTRS_SHORT = {"stationary_circulation": "circulation (prob./time)",
               "stationary_mean_abs_current": "∫|J| dθ",
               "stationary_kl_gibbs": "KL(stationary ‖ Gibbs)  [nat]"}

#: The figures the report renders for a 2-D store, by file stem.
def method_densities_2d(ds: xr.Dataset, columns: int = 4) -> Figure:
    """A 2-D cell: every method's density at the last snapshot, side by side with SGD's
    exact stationary law (the invariant law of ``sgd_op``, stationary kind ``sgd``) — or,
    without ``sgd_op``, the FP stationary state of the cell's convention. Each method panel
    names its TV distance to the FP density. The cell is the one
    :func:`current_2d` shows (largest |stationary_circulation|)."""
    if "y" not in ds.dims:
        return _message("method_densities_2d: a 2-D store is needed")
    found = _most_circulating_cell(ds)
    if found is None:
        return _message("method_densities_2d: no finished cell")
    cell, where = found
    x = np.asarray(cell["x"].values, dtype=float)
    y = np.asarray(cell["y"].values, dtype=float)
    t_last = float(cell["t"].values[-1])
    panels: list[tuple[np.ndarray, str]] = []
    kinds = cell.sgd.kinds
    reference = "sgd" if "sgd" in kinds else str(cell.attrs.get("fp_convention", "ito"))
    if reference in kinds:
        what = "SGD's exact stationary law (sgd_op)" if reference == "sgd" else f"stationary FP ({reference})"
        panels.append((np.asarray(cell["stationary"].sel(kind=reference).values, float), what))
    for m in cell.sgd.methods:
        p = np.asarray(cell["density"].sel({"method": m}).isel(t=-1).values, float)
        if not np.isfinite(p).any():
            continue
        label = f"{method_style(m)['label']}, t = {t_last:.3g}"
        if "tv" in cell and m != "fp" and "fp" in cell.sgd.methods:
            tv = float(cell["tv"].sel({"method": m}).isel(t=-1))
            if np.isfinite(tv):
                label += f"\nTV to FP {tv:.3f}"
        panels.append((p, label))
    if not panels:
        return _message("method_densities_2d: the cell holds no density")
    ncols = min(columns, len(panels))
    fig = _figure(ncols, int(np.ceil(len(panels) / ncols)), width=4.4, height=3.7)
    axs = _axes(fig)
    for ax, (p, title) in zip(axs, panels, strict=False):
        _density_panel(ax, fig, x, y, p, None, title)
    for ax in axs[len(panels):]:
        ax.set_visible(False)
    _zoom(axs[:len(panels)], x, y, [p for p, _ in panels])
    fig.suptitle("Each method's density beside " + ("SGD's exact stationary law" if reference == "sgd"
                                                    else "the FP stationary state")
                 + (f" ({_cell_label(where)})" if where else ""))
    return fig


FIGURES_2D = {
    "current_2d": current_2d,
    "method_densities_2d": method_densities_2d,
    "nonequilibrium": nonequilibrium_summary,
}
