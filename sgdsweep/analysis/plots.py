"""Figures of a sweep store (or of any ``.sel`` subset, or one ``run_cell`` result).

(A little above the usual module size: these are the 1-D stores' figures, one public function
each, sharing the facet and heatmap helpers; the 2-D, model and claims figures have their own
modules.)

Each function takes a dataset and returns a :class:`matplotlib.figure.Figure`
built without pyplot (no global state; works under any backend, displays in
Jupyter, saves with ``fig.savefig``). Colours are the Okabe–Ito palette, safe for
the common colour-vision deficiencies; θ and t = η·step are dimensionless.

Graceful degradation: figures of one cell take the first finished cell of the
selection (and say which in the title; :func:`most_informative_cell` picks a better
one to pass them); heatmaps over (lr, batch_size) become a
single row or column when an axis is absent; further sweep axes (e.g. basin
widths) become panels; cells not ``done`` show as grey "n/a".
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import matplotlib as mpl
import numpy as np
import xarray as xr
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import NullLocator

from sgdsweep.analysis.figure import (  # noqa: F401  (re-exported: the cell pickers, styles)
    DENSITY,
    KIND_STYLE,
    MAX_PANELS,
    OKABE_ITO,
    STYLE,
    THETA,
    TIME,
    _axes,
    _cell_label,
    _figure,
    _fmt,
    _legend_below,
    _message,
    _methods,
    _snapshot_indices,
    _support,
    first_done_cell,
    method_style,
    most_informative_cell,
)
from sgdsweep.analysis.metrics import total_variation
from sgdsweep.analysis.plots2d import FIGURES_2D, current_2d, nonequilibrium_summary  # noqa: F401
from sgdsweep.methods.registry import registered

# --------------------------------------------------------------------------- one cell


def density_evolution(ds: xr.Dataset, times: Sequence[float] | None = None,
                      methods: Sequence[str] = ("fp", "sgd", "sde", "sgd_op"), panels: int = 4) -> Figure:
    """FP density (lines) and Monte Carlo histograms (steps) at several times, one cell.

    ``times`` are SDE times (nearest snapshot); by default ``panels`` snapshots
    evenly spaced from t = 0 to the last one.
    """
    found = first_done_cell(ds)
    if found is None:
        return _message("density evolution: no finished cell in this selection")
    cell, where = found
    wanted, methods = methods, _methods(cell, methods)
    if not methods:
        return _message("density evolution: none of the methods " + ", ".join(wanted) + " in the store")
    t_all = np.asarray(cell["t"].values, dtype=float)
    idx = (_snapshot_indices(len(t_all), panels) if times is None
           else sorted({int(np.abs(t_all - float(t)).argmin()) for t in times}))
    x = np.asarray(cell["x"].values, dtype=float)
    dens = cell["density"].sel({"method": methods}).isel(t=idx).load()
    xlabel = THETA
    if "y" in dens.dims:  # 2-D landscapes: the marginal density of the first component
        y = np.asarray(cell["y"].values, dtype=float)
        dens = dens.sum("y") * (y[1] - y[0])
        xlabel = "θ₁ (density marginal over θ₂)"
    fig = _figure(len(idx), width=3.3, height=3.0)
    axs = _axes(fig)
    for ax, k in zip(axs, range(len(idx)), strict=True):
        for m in methods:
            st = method_style(m)
            y = dens.sel({"method": m}).isel(t=k).values
            if cell.sgd.method_kind(m) == "density":
                ax.plot(x, y, lw=1.8, **st)
            else:
                ax.plot(x, y, drawstyle="steps-mid", lw=1.1, alpha=0.9, **st)
        ax.set_title(f"t = {t_all[idx[k]]:.3g}")
        ax.set_xlabel(xlabel)
        ax.set_ylim(bottom=0)
    axs[0].set_ylabel(DENSITY)
    lo, hi = _support(x, dens.values)
    for ax in axs:
        ax.set_xlim(lo, hi)
    _legend_below(fig, axs[0])
    fig.suptitle("Density evolution" + (f" ({_cell_label(where)})" if where else ""))
    return fig


def cell_densities(cell: xr.Dataset, t: Any = "last", methods: Sequence[str] = ("fp", "sgd", "sde", "sgd_op"),
                   kinds: Sequence[str] = ("ito", "gibbs", "sgd")) -> Figure:
    """One cell at one snapshot: the densities of ``methods`` (FP as a line, Monte Carlo
    histograms as steps, TV to FP in the legend) and the stationary ``kinds``.

    ``cell`` is one cell (a ``run_cell`` result or a selection of one cell of a store);
    ``t`` as in the accessor: "last", a negative index, or a time (nearest snapshot).
    """
    found = first_done_cell(cell)
    if found is None:
        return _message("cell densities: this cell is not finished")
    cell, where = found
    methods = _methods(cell, methods)
    kinds = [k for k in kinds if k in cell.sgd.kinds]
    x = np.asarray(cell["x"].values, dtype=float)
    t_all = np.asarray(cell["t"].values, dtype=float)
    if t == "last":
        it = len(t_all) - 1
    elif isinstance(t, int | np.integer) and t < 0:
        it = len(t_all) + int(t)
    else:
        it = int(np.abs(t_all - float(t)).argmin())
    fig = _figure(1, width=6.4, height=3.6)
    (ax,) = _axes(fig)
    shown = []
    fp = None
    if "fp" in methods:
        fp = np.asarray(cell["density"].sel({"method": "fp"}).isel(t=it).values, float)
    for k in kinds:
        y = np.asarray(cell["stationary"].sel(kind=k).values, float)
        ax.plot(x, y, lw=1.4, **KIND_STYLE.get(k, {"label": k}))
        shown.append(y)
    for m in methods:
        st = method_style(m)
        y = np.asarray(cell["density"].sel({"method": m}).isel(t=it).values, float)
        if m != "fp" and fp is not None:
            st["label"] = f"{st['label']} (TV to FP {float(total_variation(y, fp, cell.sgd.dx)):.3f})"
        if cell.sgd.method_kind(m) == "density":
            ax.plot(x, y, lw=1.8, **st)
        else:
            ax.plot(x, y, drawstyle="steps-mid", lw=1.1, **st)
        shown.append(y)
    lo, hi = _support(x, np.asarray(shown))
    ax.set_xlim(lo, hi)
    ax.set_ylim(bottom=0)
    ax.set_xlabel(THETA)
    ax.set_ylabel(DENSITY)
    _legend_below(fig, ax, ncols=3)
    fig.suptitle(f"t = {t_all[it]:.3g}" + (f" ({_cell_label(where)})" if where else ""))
    return fig


def moments(ds: xr.Dataset, methods: Sequence[str] = ("fp", "sgd", "gd", "fp_drift", "sde", "sgd_op",
                                                     "gauss_step")) -> Figure:
    """Ensemble mean ± std of θ over time (left) and the std alone (right), one cell."""
    found = first_done_cell(ds)
    if found is None:
        return _message("moments: no finished cell in this selection")
    cell, where = found
    methods = _methods(cell, methods)
    t = np.asarray(cell["t"].values, dtype=float)
    mean = cell["mean"].sel({"method": methods}).load()
    std = cell["std"].sel({"method": methods}).load()
    component = "θ"
    if "axis" in mean.dims:  # 2-D landscapes: the first component
        mean, std = mean.isel(axis=0), std.isel(axis=0)
        component = "θ₁"
    fig = _figure(2, width=4.6, height=3.2)
    ax_m, ax_s = _axes(fig)
    for m in methods:
        st = method_style(m)
        mu, sd = mean.sel({"method": m}).values, std.sel({"method": m}).values
        marker = None if cell.sgd.method_kind(m) == "density" else "o"
        ax_m.plot(t, mu, marker=marker, ms=3, lw=1.5, **st)
        if m in ("fp", "sgd"):  # two bands stay readable; more turn to mud
            ax_m.fill_between(t, mu - sd, mu + sd, color=st.get("color"), alpha=0.12, lw=0)
        ax_s.plot(t, sd, marker=marker, ms=3, lw=1.5, **st)
    ax_m.set_xlabel(TIME)
    ax_m.set_ylabel(f"mean {component} (band: ± std of FP, SGD)")
    ax_s.set_xlabel(TIME)
    ax_s.set_ylabel(f"std of {component}")
    ax_s.set_ylim(bottom=0)
    _legend_below(fig, ax_m, ncols=3)
    fig.suptitle("Mean and spread over time" + (f" ({_cell_label(where)})" if where else ""))
    return fig


# --------------------------------------------------------------------------- over learning rates


def stationary_densities(ds: xr.Dataset, method: str = "sgd", kinds: Sequence[str] = ("ito", "gibbs", "sgd"),
                         panels: int = 4) -> Figure:
    """Stationary FP (Itô) and Gibbs densities beside the long-run (last-snapshot) ``method``
    histogram, one panel per learning rate (up to ``panels``, evenly picked).

    Other sweep dims: the first finished cell for each learning rate.
    """
    if "stationary" not in ds:
        return _message("stationary densities: this store has no stationary references (2-D landscape?)")
    lrs = list(ds["lr"].values) if "lr" in ds.sgd.sweep_dims else [None]
    lrs = [lrs[i] for i in _snapshot_indices(len(lrs), panels)]
    cells = []
    for lr in lrs:
        found = first_done_cell(ds if lr is None else ds.sel(lr=[lr]))
        if found is not None:
            cells.append(found)
    if not cells:
        return _message("stationary densities: no finished cell in this selection")
    kinds = [k for k in kinds if k in ds.sgd.kinds]
    x = np.asarray(ds["x"].values, dtype=float)
    fig = _figure(len(cells), width=3.4, height=3.0)
    axs = _axes(fig)
    for ax, (cell, where) in zip(axs, cells, strict=True):
        for k in kinds:
            ax.plot(x, cell["stationary"].sel(kind=k).values, lw=1.7, **KIND_STYLE.get(k, {"label": k}))
        if method in cell.sgd.methods:
            st = method_style(method)
            st["label"] = f"{st['label']}, t = {float(cell['t'].values[-1]):.3g}"
            ax.plot(x, cell["density"].sel({"method": method}).isel(t=-1).values,
                    drawstyle="steps-mid", lw=1.1, **st)
        if where:
            first, *rest = list(where.items())
            ax.set_title(_cell_label(dict([first])) + ("\n" + _cell_label(dict(rest)) if rest else ""),
                         fontsize=9)
        ax.set_xlabel(THETA)
        ax.set_yscale("symlog", linthresh=1e-2)
        ax.set_ylim(bottom=0)
    axs[0].set_ylabel(DENSITY + " (log above 0.01)")
    _legend_below(fig, axs[0])
    fig.suptitle("Stationary densities: Fokker–Planck (Itô), Gibbs, and long-run " + method.upper())
    return fig


# --------------------------------------------------------------------------- heatmaps


def _facets(da: xr.DataArray, keep: Sequence[str]) -> list[dict[str, Any]]:
    """Index combinations of every dim of ``da`` outside ``keep`` (capped at MAX_PANELS)."""
    other = [d for d in da.dims if d not in keep]
    combos = itertools.product(*(range(da.sizes[d]) for d in other))
    return [dict(zip(other, c, strict=True)) for c in itertools.islice(combos, MAX_PANELS)]


def _shown(da: xr.DataArray, keep: Sequence[str], panels: int) -> str:
    total = int(np.prod([da.sizes[d] for d in da.dims if d not in keep]))
    return f" — first {panels} of {total} panels; select with .sel" if total > panels else ""


#: Most cells along a heatmap axis that are numbered (and all ticked); beyond, at most
#: HEAT_TICKS tick labels per axis.
HEAT_LABELS = 12
HEAT_TICKS = 6


def _heatmap(ax: Any, da: xr.DataArray, norm: Normalize, cmap: str, fmt: Any) -> Any:
    """lr along x, batch_size along y; an absent axis is a single row/column. Each cell is
    numbered up to :data:`HEAT_LABELS` cells per axis; beyond, the colour alone says it."""
    for d in ("batch_size", "lr"):
        if d not in da.dims:
            da = da.expand_dims({d: [None]})
    da = da.transpose("batch_size", "lr")
    vals = np.asarray(da.values, dtype=float)
    cm = mpl.colormaps[cmap].copy()
    cm.set_bad("#DDDDDD")
    # ±inf (e.g. a ratio with an empty basin) takes the end colour; NaN (not done) is grey.
    shown = np.clip(np.where(np.isnan(vals), np.nan, vals), norm.vmin, norm.vmax)
    im = ax.imshow(np.ma.masked_invalid(shown), origin="lower", aspect="auto", cmap=cm, norm=norm)
    for name, setter, label in (("lr", ax.set_xticks, "learning rate η"),
                                ("batch_size", ax.set_yticks, "batch size b")):
        values = da[name].values
        if values[0] is None:
            setter([])
        else:
            every = -(-len(values) // HEAT_TICKS) if len(values) > HEAT_LABELS else 1
            setter(range(0, len(values), every), [_fmt(v) for v in values[::every]])
            (ax.set_xlabel if name == "lr" else ax.set_ylabel)(label)
    ax.grid(False)
    if max(vals.shape) > HEAT_LABELS:  # numbers in cells too small to read them; the colour says it
        return im
    for (i, j), v in np.ndenumerate(vals):
        if np.isnan(v):
            ax.text(j, i, "n/a", ha="center", va="center", fontsize=8, color="#555555")
            continue
        r, g, b, _ = cm(norm(shown[i, j]))
        colour = "black" if 0.2126 * r + 0.7152 * g + 0.0722 * b > 0.45 else "white"
        ax.text(j, i, fmt(v), ha="center", va="center", fontsize=8, color=colour)
    return im


def _heat_height(ds: xr.Dataset) -> float:
    return 2.9 if ds.sizes.get("batch_size", 1) > 1 else 1.9


def _ratio_text(log_ratio: float) -> str:
    if np.isinf(log_ratio):
        return "∞" if log_ratio > 0 else "0"
    r = 10.0**log_ratio
    return f"{r:.2g}" if 1e-2 <= r < 1e3 else f"1e{log_ratio:.0f}"


def basin_heatmaps(ds: xr.Dataset, source: str = "sgd", numerator: str | None = None,
                   denominator: str | None = None, t: Any = "last", reference: str = "gibbs") -> Figure:
    """log10 of mass(numerator)/mass(denominator) over (lr, batch size): ``source`` at time ``t``
    (left) beside the stationary ``reference`` prediction (right), one row per value of
    the other sweep dims (e.g. basin width).

    Basin masses of the reference integrate its density over the basins of L (see
    :meth:`SweepAccessor.basin_masses`). Colours share one diverging scale, clipped at
    ±4 decades; the numbers printed are the ratios themselves.
    """
    if len(ds.sgd.basins) < 2:
        return _message("basin heatmaps: the landscape has a single basin")
    # Only the cells of the panels drawn (the first MAX_PANELS along each other sweep axis hold
    # them): a reference's basin masses integrate each cell's density (10⁵ cells: seconds).
    other = [d for d in ds.sgd.sweep_dims if d not in ("lr", "batch_size")]
    total = int(np.prod([ds.sizes[d] for d in other]))
    ds = ds.isel({d: slice(0, MAX_PANELS) for d in other})
    acc = ds.sgd
    numerator = acc.basins[-1] if numerator is None else numerator
    denominator = acc.basins[0] if denominator is None else denominator
    cols = {source: acc.basin_ratio(source, numerator, denominator, t)}
    if reference in acc.kinds:
        cols[reference] = acc.basin_ratio(reference, numerator, denominator)
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = {k: np.log10(v.compute()) for k, v in cols.items()}
    finite = np.concatenate([np.asarray(v.values, float).ravel() for v in logs.values()])
    finite = finite[np.isfinite(finite)]
    lim = min(max(float(np.abs(finite).max()) if finite.size else 1.0, 0.5), 4.0)
    norm = Normalize(-lim, lim)
    rows = _facets(next(iter(logs.values())), ("lr", "batch_size"))
    fig = _figure(len(cols), len(rows), width=4.2, height=_heat_height(ds))
    axs = _axes(fig).reshape(len(rows), len(cols))
    im = None
    for r, facet in enumerate(rows):
        for c, (name, da) in enumerate(logs.items()):
            ax = axs[r, c]
            im = _heatmap(ax, da.isel(facet), norm, "PuOr", _ratio_text)
            style = method_style(name) if name in registered() else KIND_STYLE.get(name, {})
            what = style.get("label", name)
            label = ", ".join(f"{d} = {_fmt(da[d].values[i])}" for d, i in facet.items())
            ax.set_title(f"{what}" + (f"\n{label}" if label else ""))
    cb = fig.colorbar(im, ax=axs.ravel().tolist(), shrink=0.8, extend="both")
    cb.set_label(f"log10 mass({numerator}) / mass({denominator})")
    fig.suptitle(f"Basin-mass ratio {numerator} : {denominator}"
                 + (" (rows: other sweep axes)" if len(rows) > 1 else "")
                 + (f" — first {len(rows)} of {total} panels; select with .sel" if total > len(rows) else ""))
    return fig


def sde_validity_map(ds: xr.Dataset, metric: str = "tv", t: Any = "last", method: str = "sgd",
                     reference: str = "fp") -> Figure:
    """The SDE-validity map: distance(SGD, FP) at time ``t`` over (lr, batch size),
    one panel per value of the other sweep dims. Sequential colour scale (cividis)."""
    if method not in ds.sgd.methods or reference not in ds.sgd.methods:
        return _message(f"SDE validity: the store lacks {method!r} or {reference!r}")
    da = ds.sgd.sde_validity(metric=metric, t=t, method=method, reference=reference).compute()
    panels = _facets(da, ("lr", "batch_size"))
    vals = np.asarray(da.values, float)
    top = float(np.nanmax(vals)) if np.isfinite(vals).any() else 1.0
    norm = Normalize(0.0, top if top > 0 else 1.0)
    fig = _figure(min(len(panels), 3), int(np.ceil(len(panels) / 3)), width=4.2, height=_heat_height(ds))
    axs = _axes(fig)
    im = None
    for ax, facet in zip(axs, panels, strict=False):
        im = _heatmap(ax, da.isel(facet), norm, "cividis", lambda v: f"{v:.3f}")
        ax.set_title(", ".join(f"{d} = {_fmt(da[d].values[i])}" for d, i in facet.items()))
    for ax in axs[len(panels):]:
        ax.set_visible(False)
    t_txt = f"t = {float(ds['t'].values[-1]):.3g}" if t == "last" or t == -1 else f"t ≈ {t}"
    cb = fig.colorbar(im, ax=[a for a in axs if a.get_visible()], shrink=0.85)
    cb.set_label(f"{metric.upper()}({method.upper()}, {reference.upper()})")
    fig.suptitle(f"SDE validity: {metric.upper()} distance between {method.upper()} and "
                 f"{reference.upper()} at {t_txt}" + _shown(da, ("lr", "batch_size"), len(panels)))
    return fig


# --------------------------------------------------------------------------- escapes


def escape_times(ds: xr.Dataset, methods: Sequence[str] = ("sgd", "sde", "langevin"),
                 operators: Sequence[str] = ("sgd_op", "gauss_step")) -> Figure:
    """Mean escape time of each Monte Carlo method against the learning rate, beside the
    exact passage times: the Itô SDE's (black) and those of the one-step operators that ran
    (``sgd_op``: real SGD's exact time, dashed); log scale, t = η·step, one panel per value
    of the other sweep dims. The Monte Carlo estimate counts the chains still waiting as
    censored (``escape_time_mle``, with ±2 standard-error bars; stores without it: the mean
    over the escapers, biased low where not all escaped). Hollow markers: not every chain
    escaped by the last snapshot, or — with the censored estimate — fewer than MIN_ESCAPES
    did, too few to say; the escaped fractions are listed under the panel (labels beside
    the markers overlapped)."""
    try:
        es = ds.sgd.escape_summary().compute()
    except KeyError:
        return _message("escape times: this store holds no escape statistics")
    rows = [str(m) for m in es["method"].values]
    exact_rows = dict(zip(rows, np.asarray(es["exact"].values, bool), strict=True))
    methods = [m for m in methods if m in rows and not exact_rows[m]]
    operators = [m for m in operators if m in rows and exact_rows[m]]
    exact = es["escape_time_exact"]
    if not np.isfinite(np.asarray(exact.values, float)).any():
        return _message("escape times: no finished cell with an escape threshold in this selection")
    censored = "escape_time_mle" in es
    dims = list(ds.sgd.sweep_dims)
    xdim = "lr" if "lr" in dims else (dims[0] if dims else None)
    panels = _facets(exact, (xdim,) if xdim else ())
    fig = _figure(min(len(panels), 3), int(np.ceil(len(panels) / 3)), width=4.6, height=3.6)
    axs = _axes(fig)
    for ax, facet in zip(axs, panels, strict=False):
        sub = es.isel(facet)
        x = np.atleast_1d(np.asarray(sub[xdim].values, float)) if xdim else np.zeros(1)
        ax.plot(x, np.atleast_1d(sub["escape_time_exact"].values), color=OKABE_ITO["black"], lw=1.8,
                marker="s", ms=4, label="exact: Itô SDE")
        for m in operators:
            st = method_style(m)
            ax.plot(x, np.atleast_1d(np.asarray(sub["escape_time"].sel({"method": m}).values, float)),
                    lw=1.6, ls="--", marker="D", ms=4, color=st.get("color"), label=f"exact: {st['label']}")
        partial = []
        for m in methods:
            st = method_style(m)
            sel = sub.sel({"method": m})
            mean = np.atleast_1d(np.asarray(sel["escape_time"].values, float))
            frac = np.atleast_1d(np.asarray(sel["escaped_fraction"].values, float))
            full = (~np.atleast_1d(np.asarray(sel["too_few_escapes"].values, bool)) if censored
                    else frac >= 1)
            if not np.isfinite(mean).any():
                continue
            ax.plot(x, mean, lw=1.2, color=st.get("color"), label=st["label"])
            if censored:
                se = np.atleast_1d(np.asarray(sel["escape_time_mle_se"].values, float))
                ax.errorbar(x, mean, yerr=[np.minimum(2 * se, 0.9 * mean), 2 * se], fmt="none",
                            ecolor=st.get("color"), elinewidth=0.8, capsize=2)
            for xi, mi, ok in zip(x, mean, full, strict=True):
                if np.isfinite(mi):
                    ax.plot([xi], [mi], "o", ms=5, color=st.get("color"),
                            markerfacecolor=st.get("color") if ok else "white")
            short = [f"{_fmt(xi)}: {100 * fi:.2g}%" for xi, mi, fi in zip(x, mean, frac, strict=True)
                     if np.isfinite(mi) and fi < 1]
            if short:
                partial.append(f"{m} " + ", ".join(short))
        ax.set_yscale("log")
        if xdim:
            note = ["hollow, escaped fraction: " + partial[0], *partial[1:3]] if partial else []
            ax.set_xlabel(("learning rate η" if xdim == "lr" else xdim) + "".join("\n" + p for p in note))
            if x.size > 1 and x.min() > 0 and x.max() / x.min() > 3:
                ax.set_xscale("log")
            if x.size <= 8:  # the swept values themselves: log-axis minor labels overlapped
                ax.set_xticks(x, [_fmt(v) for v in x])
                ax.xaxis.set_minor_locator(NullLocator())
        ax.set_ylabel("mean escape time (t = η·step)")
        ax.set_title(", ".join(f"{d} = {_fmt(exact[d].values[i])}" for d, i in facet.items()))
    for ax in axs[len(panels):]:
        ax.set_visible(False)
    _legend_below(fig, axs[0], ncols=3)
    fig.suptitle("Escape over the barrier:" + ("\n" if len(panels) < 3 else " ")
                 + "Monte Carlo means " + ("(censoring-aware, ±2 SE) " if censored else "")
                 + "vs exact passage times"
                 + _shown(exact, (xdim,) if xdim else (), len(panels)))
    return fig


def gradient_noise(ds: xr.Dataset, panels_per: str = "batch_size") -> Figure:
    """The exact shape of the minibatch gradient noise over θ (1-D): the loss, the skewness
    and excess kurtosis of the minibatch mean gradient and the noise-to-signal ratio
    tr Σ_b/‖G‖² (log scale), one line per value of ``panels_per`` (default the batch size)
    when it is a sweep axis, else for the first finished cell. Where these are far from 0
    (skewness, kurtosis) the Gaussian-noise assumption of the SDE fails; where NSR is small
    the noise is too weak against the drift for the SDE (and the linear scaling rule)."""
    if "noise_to_signal" not in ds:
        return _message("gradient noise: this store holds no noise diagnostics")
    if "y" in ds.dims:
        return _message("gradient noise: the figure is 1-D; read noise_* from the store in 2-D")
    dims = ds.sgd.sweep_dims
    cells: list[tuple[xr.Dataset, dict[str, Any]]] = []
    if panels_per in dims:
        for v in ds[panels_per].values:
            found = first_done_cell(ds.sel({panels_per: v}))
            if found is not None:
                cells.append((found[0], {panels_per: v, **found[1]}))
    else:
        found = first_done_cell(ds)
        if found is not None:
            cells.append(found)
    if not cells:
        return _message("gradient noise: no finished cell in this selection")
    fig = _figure(4, width=3.3, height=3.0)
    axs = _axes(fig)
    colours = itertools.cycle(OKABE_ITO[c] for c in ("vermillion", "blue", "green", "orange", "purple",
                                                     "sky"))
    for (cell, where), colour in zip(cells, colours, strict=False):
        x = np.asarray(cell["x"].values, float)
        label = _cell_label({k: v for k, v in where.items() if k == panels_per}) or "this cell"
        for ax, var in zip(axs, ("loss", "noise_skewness", "noise_kurtosis", "noise_to_signal"), strict=True):
            ax.plot(x, np.asarray(cell[var].values, float).ravel(), color=colour, lw=1.4, label=label)
    for ax, title in zip(axs, ("loss L(θ)", "skewness of ḡ_B", "excess kurtosis of ḡ_B",
                              "noise-to-signal tr Σ_b / |G|²"), strict=True):
        ax.set_xlabel(THETA)
        ax.set_title(title)
    for ax in axs[1:3]:
        ax.axhline(0.0, color="grey", lw=0.8)
        # Rounding-level wiggles (1e-4) must not fill the panel: show at least ±0.5.
        lo, hi = ax.get_ylim()
        ax.set_ylim(min(lo, -0.5), max(hi, 0.5))
    axs[3].set_yscale("log")
    axs[3].axhline(1.0, color="grey", lw=0.8)
    axs[3].set_ylim(bottom=max(axs[3].get_ylim()[0], 1e-6))  # where the noise vanishes NSR → 0
    _legend_below(fig, axs[0], ncols=6)
    first = cells[0][1]
    rest = {k: v for k, v in first.items() if k != panels_per}
    fig.suptitle("Minibatch gradient noise, exact from the n per-sample gradients"
                 + (f" ({_cell_label(rest)})" if rest else ""))
    return fig


#: The figures ``python -m pipeline report`` renders, by file stem.
FIGURES = {
    "density_evolution": density_evolution,
    "moments": moments,
    "stationary_densities": stationary_densities,
    "basin_heatmaps": basin_heatmaps,
    "sde_validity": sde_validity_map,
    "escape_times": escape_times,
    "gradient_noise": gradient_noise,
}

