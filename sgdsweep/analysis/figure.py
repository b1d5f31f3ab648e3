"""What every figure of :mod:`sgdsweep.analysis.plots` shares: the palette and line styles
(methods draw as their registry entry declares), the rc style, empty-figure messages and
the choice of the cell that single-cell figures show."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import matplotlib as mpl
import numpy as np
import xarray as xr
from matplotlib.figure import Figure

from sgdsweep.cell.schema import DONE
from sgdsweep.methods.registry import registered

#: Okabe & Ito (2008) colour-blind-safe palette.
OKABE_ITO = {
    "black": "#000000", "orange": "#E69F00", "sky": "#56B4E9", "green": "#009E73",
    "yellow": "#F0E442", "blue": "#0072B2", "vermillion": "#D55E00", "purple": "#CC79A7",
}


def method_style(name: str) -> dict[str, Any]:
    """Line style of a method (label, colour, line style), as its registry entry declares it;
    a name the registry does not know is drawn under its own name in the colour cycle."""
    rec = registered().get(name)
    if rec is None:
        return {"label": name}
    style: dict[str, Any] = {"label": rec.label}
    if rec.color is not None:
        style["color"] = OKABE_ITO.get(rec.color, rec.color)
    if rec.linestyle != "-":
        style["linestyle"] = rec.linestyle
    return style


KIND_STYLE: dict[str, dict[str, Any]] = {
    "ito": {"color": OKABE_ITO["black"], "label": "stationary FP (Itô)"},
    "stratonovich": {"color": OKABE_ITO["sky"], "label": "stationary FP (Stratonovich)", "linestyle": ":"},
    "isothermal": {"color": OKABE_ITO["orange"], "label": "stationary FP (isothermal)", "linestyle": "-."},
    "gibbs": {"color": OKABE_ITO["green"], "label": "Gibbs ∝ exp(−L/T)", "linestyle": "--"},
    "sme2": {"color": OKABE_ITO["sky"], "label": "stationary FP of SME-2", "linestyle": "--"},
    "sgd": {"color": OKABE_ITO["vermillion"], "label": "stationary SGD (operator)", "linestyle": ":"},
    "gauss_step": {"color": OKABE_ITO["blue"], "label": "stationary Gaussian step", "linestyle": ":"},
}
STYLE = {
    "font.size": 10, "axes.titlesize": 10, "axes.labelsize": 10, "legend.fontsize": 8.5,
    "axes.grid": True, "grid.alpha": 0.3, "axes.spines.top": False, "axes.spines.right": False,
}
THETA = "θ"
TIME = "t = η·step"
DENSITY = "density p(θ)  [1/θ]"
MAX_PANELS = 6


def _figure(ncols: int, nrows: int = 1, width: float = 3.6, height: float = 3.0) -> Figure:
    with mpl.rc_context(STYLE):
        fig = Figure(figsize=(min(width * ncols, 16), height * nrows + 0.6), dpi=100, layout="constrained")
        fig.subplots(nrows, ncols, squeeze=False)
    return fig


def _axes(fig: Figure) -> np.ndarray:
    axs = np.asarray(fig.axes, dtype=object)
    for ax in axs:
        with mpl.rc_context(STYLE):
            ax.grid(True, alpha=0.3)
            ax.spines[["top", "right"]].set_visible(False)
    return axs


def _message(text: str) -> Figure:
    fig = Figure(figsize=(8, 1.2), dpi=100)
    fig.text(0.5, 0.5, text, ha="center", va="center", fontsize=10, wrap=True)
    return fig


def _fmt(v: Any) -> str:
    if isinstance(v, float | np.floating):
        return f"{float(v):.4g}"
    return str(v.item() if hasattr(v, "item") else v)


def _cell_label(sel: dict[str, Any]) -> str:
    return ", ".join(f"{k} = {_fmt(v)}" for k, v in sel.items())


def first_done_cell(ds: xr.Dataset) -> tuple[xr.Dataset, dict[str, Any]] | None:
    """The first finished cell of ``ds`` (C order over the sweep dims) and its coordinates."""
    dims = ds.sgd.sweep_dims
    if not dims:
        return ds, {}
    done = np.asarray(ds[DONE].values, dtype=bool)
    if not done.any():
        return None
    idx = np.unravel_index(int(np.argmax(done)), done.shape)
    isel = dict(zip(dims, (int(i) for i in idx), strict=True))
    return ds.isel(isel), {d: ds[d].values[i] for d, i in isel.items()}


def most_informative_cell(ds: xr.Dataset, metric: str = "tv", method: str = "sgd",
                          reference: str = "fp") -> tuple[xr.Dataset, dict[str, Any]] | None:
    """The finished cell where ``method`` departs most from ``reference`` at the last
    snapshot (largest ``metric``, by default TV(SGD, FP)), as a selection that keeps its
    sweep dims (length 1), and its coordinates.

    Falls back to :func:`first_done_cell` when either method is missing or no distance
    is finite; None when no cell is finished.
    """
    dims = ds.sgd.sweep_dims
    if not dims:
        return ds, {}
    if method in ds.sgd.methods and reference in ds.sgd.methods and "y" not in ds.dims:
        dist = ds.sgd.sde_validity(metric, method=method, reference=reference).transpose(*dims)
        vals = np.asarray(dist.values, dtype=float)
        if np.isfinite(vals).any():
            idx = np.unravel_index(int(np.nanargmax(vals)), vals.shape)
            isel = dict(zip(dims, (int(i) for i in idx), strict=True))
            # length-1 sweep dims: the one-cell figures then name the cell in their titles
            return ds.isel({d: [i] for d, i in isel.items()}), {d: ds[d].values[i] for d, i in isel.items()}
    return first_done_cell(ds)


#: Legend entry width estimate (inches): the handle and padding, plus per label character.
LEGEND_HANDLE_IN, LEGEND_CHAR_IN = 0.55, 0.068


def _legend_below(fig: Figure, ax: Any, ncols: int = 5) -> None:
    """The legend of ``ax`` under the panels, in as many columns (up to ``ncols``) as fit the
    figure's width: a row wider than the figure is clipped when saved."""
    handles, labels = ax.get_legend_handles_labels()
    if not labels:
        return
    entry = LEGEND_HANDLE_IN + LEGEND_CHAR_IN * max(len(lab) for lab in labels)
    fit = max(1, int(fig.get_figwidth() // entry))
    fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), ncols, fit), frameon=False)


def _support(x: np.ndarray, dens: np.ndarray, tail: float = 5e-4) -> tuple[float, float]:
    """θ-range holding all but ``tail`` of the mass on each side, for every density shown."""
    d = np.nan_to_num(np.asarray(dens, float).reshape(-1, len(x)))
    cdf = np.cumsum(d, axis=1)
    total = cdf[:, -1:]
    ok = total[:, 0] > 0
    if not ok.any():
        return float(x[0]), float(x[-1])
    cdf = cdf[ok] / total[ok]
    i_lo = int(min(np.argmax(c >= tail) for c in cdf))
    i_hi = int(max(np.argmax(c >= 1 - tail) for c in cdf))
    pad = max(0.1 * (x[i_hi] - x[i_lo]), 3 * (x[1] - x[0]))
    return max(float(x[0]), float(x[i_lo] - pad)), min(float(x[-1]), float(x[i_hi] + pad))


def _snapshot_indices(n: int, k: int) -> list[int]:
    return sorted({round(float(i)) for i in np.linspace(0, n - 1, min(k, n))})


def _methods(ds: xr.Dataset, wanted: Sequence[str]) -> list[str]:
    return [m for m in wanted if m in ds.sgd.methods]


