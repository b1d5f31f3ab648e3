"""Figures of the published-claim experiments (docs/experiments_claims.md).

* :func:`escape_validity_map` — each escape-time approximation over SGD's exact escape time,
  over (η, b), one column per basin width (``kramers_validity``);
* :func:`centre_density_ratios` — p at the wider basin's bottom over the narrower's against
  the width ratio, beside the seed post's e⁴ (``seed_claims`` (a));
* :func:`effective_potentials` — −log p of each stationary kind split into ∫G/D and log D,
  beside L/T (``seed_claims`` (b), 1-D);
* :func:`noise_coordinate` — φ = ∫ dθ/sqrt(2D), its drift and the densities in φ
  (``seed_claims`` (c));
* :func:`local_potential_fit` — rms residual of the best local fit of −log p on L, |G|², Σ
  against the stationary circulation, 2-D (``nonequilibrium_2d``).

:func:`claims_figures` picks those the dataset can draw, for ``python -m pipeline report``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import xarray as xr
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from sgdsweep.analysis.plots import (
    KIND_STYLE,
    OKABE_ITO,
    THETA,
    _axes,
    _facets,
    _figure,
    _fmt,
    _heatmap,
    _message,
    _ratio_text,
    first_done_cell,
)
from sgdsweep.cell.schema import DONE

#: Ratios within this factor of SGD's exact escape time count as "holds".
WITHIN = 2.0
APPROXIMATIONS = {"sde_over_sgd": "exact SDE", "kramers_over_sgd": "Kramers (D at minimum)",
                  "xie_over_sgd": "Xie–Sato–Sugiyama"}
#: The seed post's first estimate of the density ratio for a twice wider basin.
POST_ESTIMATE = math.exp(4.0)


def _width_dim(ds: xr.Dataset) -> str | None:
    return next((d for d in ds.sgd.sweep_dims if d.startswith("width")), None)


def escape_validity_map(ds: xr.Dataset, operator: str = "sgd_op") -> Figure:
    """log10(approximation / SGD's exact escape time) over (η, b): rows the exact SDE,
    Kramers and Xie–Sato–Sugiyama, columns the other sweep axes (basin width). Diverging
    scale clipped at ±3 decades; cells within 2× are boxed; ∞ SGD times (trapped) print 0."""
    try:
        v = ds.sgd.escape_validity(operator).compute()
    except KeyError as exc:
        return _message(f"escape validity: {exc}")
    first = v[next(iter(APPROXIMATIONS))]
    cols = _facets(first, ("lr", "batch_size"))
    fig = _figure(len(cols), len(APPROXIMATIONS), width=4.0, height=2.6)
    axs = _axes(fig).reshape(len(APPROXIMATIONS), len(cols))
    norm = Normalize(-3.0, 3.0)
    im = None
    for r, (name, label) in enumerate(APPROXIMATIONS.items()):
        with np.errstate(divide="ignore", invalid="ignore"):
            logs = np.log10(v[name])
        for c, facet in enumerate(cols):
            ax = axs[r, c]
            da = logs.isel(facet)
            im = _heatmap(ax, da, norm, "PuOr", _ratio_text)
            for d in ("batch_size", "lr"):
                if d not in da.dims:
                    da = da.expand_dims({d: [None]})
            vals = np.asarray(da.transpose("batch_size", "lr").values, float)
            for (i, j), val in np.ndenumerate(vals):
                if np.isfinite(val) and abs(val) <= math.log10(WITHIN):
                    ax.add_patch(_box(j, i))
            where = ", ".join(f"{d} = {_fmt(first[d].values[k])}" for d, k in facet.items())
            ax.set_title(label + (f"\n{where}" if where else ""))
    cb = fig.colorbar(im, ax=axs.ravel().tolist(), shrink=0.8, extend="both")
    cb.set_label("log10 (approximation / SGD's exact escape time)")
    fig.suptitle("Escape-time validity map: boxed where within 2× of SGD's exact time "
                 "(transfer operator)")
    return fig


def _box(j: int, i: int) -> Any:
    from matplotlib.patches import Rectangle

    return Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor=OKABE_ITO["green"], linewidth=2.5)


def centre_density_ratios(ds: xr.Dataset, kinds: tuple[str, ...] = ("ito", "sgd", "gibbs")) -> Figure:
    """p(bottom of the wider basin) / p(bottom of the narrower) against the width ratio,
    one line per stationary kind and learning rate, beside the post's e⁴ at ratio 2."""
    wdim = _width_dim(ds)
    if wdim is None or len(ds.sgd.basins) < 2:
        return _message("centre densities: needs a sweep over a basin width and two basins")
    widths = np.asarray(ds[wdim].values, float)
    ref = float(widths.min())
    fig = _figure(1, 1, width=6.0, height=3.8)
    ax = _axes(fig)[0]
    other = [d for d in ds.sgd.sweep_dims if d != wdim]
    markers = "osd^v"
    for kind in (k for k in kinds if k in ds.sgd.kinds):
        ratio = ds.sgd.centre_density_ratio(kind).compute()
        for m, facet in enumerate(_facets(ratio.transpose(*other, wdim), (wdim,))):
            y = np.asarray(ratio.isel(facet).values, float)  # log10
            style = KIND_STYLE.get(kind, {})
            label = style.get("label", kind) + "".join(
                f", {d} = {_fmt(ratio[d].values[k])}" for d, k in facet.items())
            ax.plot(widths / ref, y, marker=markers[m % len(markers)], color=style.get("color"),
                    linestyle=style.get("linestyle", "-"), label=label)
    ax.axhline(0.0, color="#888888", linewidth=0.8)
    ax.plot([2.0], [math.log10(POST_ESTIMATE)], marker="*", markersize=14, color=OKABE_ITO["orange"],
            linestyle="none", label="post's first estimate e⁴ ≈ 56 (r = 2)")
    ax.set_yscale("symlog", linthresh=1.0)
    ax.set_xlabel("width ratio r (wider / narrower)")
    ax.set_ylabel("log10 p(wider centre) / p(narrower centre)")
    ax.legend(fontsize=7, loc="upper left")
    fig.suptitle("Seed claim (a): density at the wider basin's centre")
    return fig


def _one_cell(ds: xr.Dataset) -> tuple[xr.Dataset, str]:
    """The finished cell with the largest width and the smallest other coordinates."""
    dims = ds.sgd.sweep_dims
    if not dims:
        return ds, ""
    wdim = _width_dim(ds)
    if wdim is not None:
        sub = ds.isel({wdim: -1})
        if bool(np.asarray(sub[DONE].values).any()):
            ds = sub.expand_dims(wdim)
    found = first_done_cell(ds)
    if found is None:
        raise ValueError("no finished cell")
    cell, where = found
    return cell, ", ".join(f"{k} = {_fmt(v)}" for k, v in where.items())


def effective_potentials(ds: xr.Dataset, kinds: tuple[str, ...] = ("ito", "sgd", "gibbs")) -> Figure:
    """For one cell: −log p of each stationary kind, the Itô parts ∫G/D and log D (with
    their sum) and L/T, all shifted to 0 at the lowest −log p (nats)."""
    cell, where = _one_cell(ds)
    kinds = tuple(k for k in kinds if k in cell.sgd.kinds)
    x = np.asarray(cell["x"].values, float)
    fig = _figure(2, 1, width=5.0, height=3.6)
    ax, ax2 = _axes(fig)
    parts = None
    for kind in kinds:
        pot = cell.sgd.effective_potential(kind).compute()
        tot = np.asarray(pot["total"].values, float)
        style = KIND_STYLE.get(kind, {})
        ax.plot(x, tot - np.nanmin(tot), color=style.get("color"), linestyle=style.get("linestyle", "-"),
                label=f"−log p, {style.get('label', kind)}")
        ax2.plot(x, np.asarray(pot["residual"].values, float), color=style.get("color"),
                 linestyle=style.get("linestyle", "-"), label=style.get("label", kind))
        parts = pot if kind == "ito" else parts
    if parts is not None:
        drift, noise = (np.asarray(parts[k].values, float) for k in ("drift_part", "noise_part"))
        both = drift + noise
        ax.plot(x, both - np.nanmin(both), color=OKABE_ITO["sky"], linewidth=3, alpha=0.5,
                label="∫G/D + log D")
        ax.plot(x, drift - np.nanmin(drift), color=OKABE_ITO["blue"], linestyle="--", label="drift part ∫G/D")
        ax.plot(x, noise - np.nanmin(noise), color=OKABE_ITO["purple"], linestyle=":",
                label="noise part log D")
        lt = np.asarray(parts["loss_over_t"].values, float)
        ax.plot(x, lt - np.nanmin(lt), color=OKABE_ITO["green"], linestyle="-.", label="L/T (Gibbs)")
    ax.set_ylim(-1, 60)
    ax.set_xlabel(THETA)
    ax.set_ylabel("nats")
    ax.set_title("effective potential −log p and its parts")
    ax.legend(fontsize=7)
    ax2.set_xlabel(THETA)
    ax2.set_ylabel("−log p − ∫G/D − log D  [nat]")
    ax2.set_title("what the Itô decomposition leaves out")
    ax2.legend(fontsize=7)
    fig.suptitle(f"Seed claim (b): effective potential ({where})")
    return fig


def noise_coordinate(ds: xr.Dataset, kinds: tuple[str, ...] = ("ito", "sgd")) -> Figure:
    """For one cell: φ(θ), the drift of φ, and the stationary densities in φ."""
    cell, where = _one_cell(ds)
    x = np.asarray(cell["x"].values, float)
    fig = _figure(3, 1, width=4.0, height=3.3)
    a1, a2, a3 = _axes(fig)
    for kind in (k for k in kinds if k in cell.sgd.kinds):
        nc = cell.sgd.noise_coordinate(kind).compute()
        phi = np.asarray(nc["phi"].values, float)
        style = KIND_STYLE.get(kind, {})
        a3.plot(phi, np.asarray(nc["density"].values, float), color=style.get("color"),
                linestyle=style.get("linestyle", "-"), label=style.get("label", kind))
    a1.plot(x, phi, color=OKABE_ITO["black"])
    a1.set_xlabel(THETA)
    a1.set_ylabel("φ = ∫ dθ / sqrt(2D)")
    a2.plot(phi, np.asarray(nc["drift"].values, float), color=OKABE_ITO["blue"])
    a2.set_xlabel("φ")
    a2.set_ylabel("drift of φ, −(G + D′/2)/sqrt(2D)")
    a2.set_yscale("symlog", linthresh=1.0)
    a3.set_xlabel("φ")
    a3.set_ylabel("density in φ")
    a3.legend(fontsize=7)
    fig.suptitle(f"Seed claim (c): the coordinate with unit noise ({where})")
    return fig


def local_potential_fit(ds: xr.Dataset, kind: str = "ito") -> Figure:
    """2-D: p-weighted rms residual of the best local fit of −log p on (L, |G|², tr Σ,
    log Σ_xx Σ_yy) against |stationary circulation|, one point per cell."""
    if "y" not in ds.dims or kind not in ds.sgd.kinds:
        return _message("local potential fit: needs a 2-D store with the Itô stationary law")
    fit = ds.sgd.local_potential_fit(kind).compute()
    rms = np.asarray(fit["rms_residual"].values, float).ravel()
    circ = np.abs(np.asarray(ds["stationary_circulation"].values, float)).ravel()
    fig = _figure(1, 1, width=5.5, height=3.6)
    ax = _axes(fig)[0]
    ax.scatter(circ, rms, color=OKABE_ITO["vermillion"])
    ax.set_xlabel("|stationary circulation| (probability / time)")
    ax.set_ylabel("rms residual of the local fit [nat]")
    ax.set_title("Seed claim (b), 2-D: no local potential where the current circulates")
    return fig


def claims_figures(ds: xr.Dataset) -> dict[str, Callable[[xr.Dataset], Figure]]:
    """The claim figures ``ds`` holds what they need for, by file stem."""
    out: dict[str, Callable[[xr.Dataset], Figure]] = {}
    if "y" in ds.dims:
        if "ito" in ds.sgd.kinds and "stationary_circulation" in ds:
            out["local_potential_fit"] = local_potential_fit
        return out
    if "escape_time_operator" in ds and "escape_time_exact" in ds and "sgd_op" in ds.sgd.methods:
        out["escape_validity_map"] = escape_validity_map
    if "sgd" in ds.sgd.kinds and len(ds.sgd.basins) >= 2 and "diffusion" in ds:
        if _width_dim(ds) is not None:
            out["centre_density_ratios"] = centre_density_ratios
        out["effective_potentials"] = effective_potentials
        out["noise_coordinate"] = noise_coordinate
    return out
