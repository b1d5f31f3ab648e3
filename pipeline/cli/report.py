"""``python -m pipeline report STORE [--out DIR]``: figures and one self-contained HTML page.

Writes every figure of :data:`sgdsweep.analysis.plots.FIGURES` as PNG into DIR (default:
``<store stem>_report`` beside the store; for a URL store, such as
``s3://bucket/sweep.zarr``, in the current directory) and ``report.html`` with the same
figures embedded as base64 PNG, a summary table (cells done/total, failures with
their messages, distances and basin masses at the last snapshot) and the store's
provenance. The page has no scripts and no external resources: it opens from
disk in any browser. A partially finished store reports what is done.
"""

from __future__ import annotations

import base64
import html
import io
import itertools
import json
import sys
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

import sgdsweep.analysis.accessor  # noqa: F401  (registers ds.sgd)
from pipeline.cli.args import OneLineParser
from pipeline.cli.status import add_store_options, store_options
from pipeline.store import location, metadata
from pipeline.store.integrity import mask_corrupt
from sgdsweep.analysis.claims_plots import claims_figures
from sgdsweep.analysis.plots import FIGURES, FIGURES_2D, most_informative_cell
from sgdsweep.analysis.reductions import load_variables, open_sweep
from sgdsweep.cell import schema
from sgdsweep.cell.schema import DONE, ERROR, ESCAPE_ERROR_FLAG, MIN_ESCAPES
from sgdsweep.errors import ConfigError

CAPTIONS = {
    "density_evolution": "Fokker–Planck density (line) and Monte Carlo histograms (steps) at several "
                         "times, for the cell shown (see above).",
    "moments": "Ensemble mean ± std of θ over SDE time t = η·step: FP, SGD, gradient descent, "
               "drift-only FP and the SDE, for the cell shown.",
    "stationary_densities": "Stationary FP density (Itô), Gibbs density and the last-snapshot SGD "
                            "histogram, one panel per learning rate, at the other coordinates of the "
                            "cell shown.",
    "basin_heatmaps": "Basin-mass ratio (right-most over left-most basin) of SGD at the last "
                      "snapshot beside the Gibbs prediction, over learning rate × batch size.",
    "sde_validity": "Total-variation distance between SGD and the Itô FP density at the last "
                    "snapshot: where the SDE picture holds (dark) and where it fails (bright).",
    "escape_times": "Mean escape time over the barrier of each Monte Carlo method (hollow: not every "
                    "chain escaped, so the mean is biased low; the escaped fractions are under the "
                    "axis) beside the exact mean first-passage times of the Itô SDE and, where "
                    "sgd_op ran, of SGD itself (its transfer operator), against the learning rate.",
    "projection_variance": "Variance of the projection (θ − θ*)·v_k on each of the top Hessian "
                           "eigenvectors at the last snapshot (markers: Monte Carlo) against the "
                           "stationary variance of SGD's exact discrete-time law, of the Itô SDE "
                           "(both exact for least squares) and of Gibbs T·H*⁻¹, over the learning rate.",
    "projection_densities": "Densities of the projections at the last snapshot for the cell shown, "
                            "with Gaussians of the exact references' variances.",
    "sharpness_loss": "Sharpness (top Hessian eigenvalue, Lanczos, mean over a few chains) with 2/η "
                      "marked, and the mean training loss, over SDE time.",
    "noise_geometry": "Gradient noise v_kᵀΣ*v_k against curvature λ_k at θ* (Σ* ∝ H* would be a line "
                      "of slope 1), and the temperature λ_k·var_k each reference implies per "
                      "direction: one Gibbs temperature fits only if these agree.",
    "tail_index": "Hill's tail index of SGD's projection on the sharpest Hessian direction at the last "
                  "snapshot (bars: its standard error) against the learning rate, one line per batch "
                  "size, with each batch size's exact mean-square edge (dashed) and, for one parameter "
                  "and b = 1, the exact Kesten index; α < 2 is infinite variance.",
    "edge_of_stability": "Sharpness over optimisation steps for each learning rate, GD and SGD per "
                         "batch size, with GD's stability limit 2/η dashed; the mean training loss "
                         "below.",
    "linear_scaling": "Along each line η/b = const of the grid: SGD's exact stationary excess loss "
                      "over the Itô SDE's (the same on the whole line), and Monte Carlo SGD's over "
                      "the exact, against η.",
    "sgd_stability": "Each (η, b) cell of Monte Carlo SGD started around θ*: diverged (filled: chains "
                     "lost, or E|θ − θ*|² grew more than 2× over the run) or stable (hollow), with the "
                     "exact mean-square edge, the Wu–Ma–E bound min(2/a, √b/s) (a sharpness, s "
                     "non-uniformity of the per-sample Hessians) and the one-step sufficient edge.",
    "gradient_noise": "Exact shape of the minibatch gradient noise over θ (one line per batch size "
                      "when swept): skewness and excess kurtosis of the minibatch mean gradient (0 "
                      "for Gaussian noise) and the noise-to-signal ratio tr Σ_b/|G|² of Li, Malladi & "
                      "Arora (where it is small, the noise is negligible against the drift and the "
                      "SDE picture and the linear scaling rule lose their footing).",
    "escape_validity_map": "Each escape-time approximation (exact SDE, Kramers with D at the minimum, "
                           "Xie–Sato–Sugiyama) over SGD's exact escape time from its transfer operator; "
                           "boxed where within 2×; 0 where SGD never escapes (trapped).",
    "centre_density_ratios": "Stationary density at the wider basin's bottom over the narrower's "
                             "against the width ratio (Itô, SGD's own law, Gibbs), beside the seed "
                             "post's first estimate e⁴.",
    "effective_potentials": "−log p of each stationary law beside the Itô parts ∫G/D and log D and "
                            "the Gibbs potential L/T, and the residual each law leaves.",
    "noise_coordinate": "The coordinate φ = ∫dθ/√(2D) in which the noise is the same everywhere: "
                        "φ(θ), the drift of φ and the stationary densities in φ.",
    "method_densities_2d": "Each method's density at the last snapshot (TV distance to the FP density "
                           "in its title) beside SGD's exact stationary law — the invariant law of its "
                           "transfer operator sgd_op (or the FP stationary state where sgd_op did not "
                           "run), for the cell of the probability-current figure.",
    "local_potential_fit": "rms residual of the best fit of −log p by a local function of L, |G|², "
                           "tr Σ and log Σ_xx Σ_yy, against the stationary circulation.",
}
#: The figures of one cell, and the one that keeps the learning rates of that cell's row.
ONE_CELL = ("density_evolution", "moments")
PER_LR = ("stationary_densities",)
MAX_CELL_ROWS = 60
DPI = 110

CSS = """
body { font-family: system-ui, -apple-system, 'Segoe UI', sans-serif; margin: 2em auto;
       max-width: 1200px; padding: 0 1em; color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { margin-top: 1.6em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
td { white-space: nowrap; } td.l { white-space: normal; }
th { background: #f2f2f2; } td.l, th.l { text-align: left; }
tr.fail td { background: #fde8e0; } tr.pending td { color: #888; }
figure { margin: 1.2em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: 0.9em; color: #444; }
pre { background: #f7f7f7; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
.muted { color: #666; } .warn { color: #a03000; }
"""


def report_main(argv: Sequence[str]) -> int:
    """The ``report`` command; returns the exit status (2 on bad input, with one stderr line)."""
    parser = OneLineParser(prog="python -m pipeline report",
                           description="Figures (PNG) and a self-contained report.html from a sweep store.")
    parser.add_argument("store", help="the sweep's Zarr store: a path, or a URL (s3://bucket/sweep.zarr)")
    parser.add_argument("--out", default=None, help="output directory (default: <store stem>_report "
                        "beside the store; for a URL store, in the current directory)")
    add_store_options(parser)
    try:
        args = parser.parse_args(list(argv))
        page = write_report(location.parse(args.store, store_options(args.store_options)), args.out)
    except ConfigError as exc:
        sys.stderr.write(f"error: {' '.join(str(exc).split())}\n")
        return 2
    sys.stdout.write(f"report: {page}\n")
    return 0


#: Variables up to this size are read into memory once (the per-cell summaries of a
#: 10⁵-cell store are a few MB each); larger ones (densities) stay lazy.
LOAD_BYTES = 64 * 2**20
#: The density grid's dimensions.
GRID_DIMS = {"x", "y"}


def default_out(loc: location.Location) -> Path:
    """``<store stem>_report`` beside a local store; in the current directory for a URL store."""
    path = loc.local_path
    if path is not None:
        return path.with_name(path.stem + "_report")
    return Path.cwd() / (Path(loc.name).stem + "_report")


def figure_set(ds: xr.Dataset) -> dict[str, Any]:
    """The figures of a store: model stores (a ``direction`` dim), 2-D stores, 1-D stores."""
    if "direction" in ds.dims:
        from sgdsweep.analysis.model_plots import FIGURES_MODEL

        return FIGURES_MODEL
    return {**(FIGURES_2D if "y" in ds.dims else FIGURES), **claims_figures(ds)}


def write_report(loc: location.Location, out: str | Path | None = None) -> Path:
    """Render the figures and ``report.html`` for ``store`` into ``out``; returns the page's path.

    Raises :class:`ConfigError` for a missing or foreign store or an unwritable ``out``.
    """
    if loc.local_path is None and not loc.exists():  # a local path: open_sweep names what is missing
        raise ConfigError(f"store: {loc.url}: no such store")
    try:
        ds = open_sweep(loc.dataset_path, storage_options=loc.storage_options)
    except (FileNotFoundError, ValueError) as exc:
        raise ConfigError(f"store: {metadata.explain(loc) or exc}") from None
    # Corrupt cells are shown as failed, named on stderr; the rest is reported.
    ds, corrupt = mask_corrupt(loc, ds)
    for line in corrupt:
        sys.stderr.write(f"warning: corrupt cell {line}; reported as failed, rerun the sweep to "
                         "recompute it\n")
    # The tables and figures read the per-cell summaries many times over: read each once.
    # Profiles over the density grid stay lazy: the figures take them for a few cells.
    small = [name for name, var in ds.data_vars.items()
             if var.nbytes <= LOAD_BYTES and not set(var.dims) & GRID_DIMS]
    ds = ds.assign(load_variables(loc.dataset_path, ds, small, loc.storage_options))
    out = default_out(loc) if out is None else Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"--out: cannot write to {out} ({exc.strerror or exc})") from None

    figures: list[tuple[str, str | None, str]] = []  # (name, base64 png or None, note)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        chosen = most_informative_cell(ds)
    cell, where = chosen if chosen is not None else (ds, {})
    views = {name: cell for name in ONE_CELL}
    if where:
        views.update({name: ds.sel({d: [v] for d, v in where.items() if d != "lr"}) for name in PER_LR})
    for name, plot in figure_set(ds).items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices of unfinished cells
                fig = plot(views.get(name, ds))
            buf = io.BytesIO()
            fig.savefig(buf, format="png", dpi=DPI)
            (out / f"{name}.png").write_bytes(buf.getvalue())
            figures.append((name, base64.b64encode(buf.getvalue()).decode("ascii"), ""))
        except Exception as exc:  # one figure that cannot be drawn must not sink the report
            figures.append((name, None, f"{type(exc).__name__}: {exc}"))
    page = out / "report.html"
    page.write_text(render_html(loc, ds, figures, chosen_text(ds, where)), encoding="utf-8")
    return page


# --------------------------------------------------------------------------- HTML


def _e(v: Any) -> str:
    return html.escape(str(v))


def _num(v: Any, digits: int = 3) -> str:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return _e(v)
    if not np.isfinite(f):
        return "—" if np.isnan(f) else ("∞" if f > 0 else "−∞")
    return f"{f:.{digits}g}"


def _table(header: Sequence[str] | None, rows: Sequence[Sequence[str]], left: int = 0,
           row_classes: Sequence[str] | None = None) -> str:
    th = "".join(f'<th class="{"l" if i < left else ""}">{_e(h)}</th>' for i, h in enumerate(header or ()))
    body = []
    for r, row in enumerate(rows):
        cls = f' class="{row_classes[r]}"' if row_classes and row_classes[r] else ""
        tds = "".join(f'<td class="{"l" if i < left else ""}">{c}</td>' for i, c in enumerate(row))
        body.append(f"<tr{cls}>{tds}</tr>")
    head = f"<thead><tr>{th}</tr></thead>" if header else ""
    return f"<table>{head}<tbody>{''.join(body)}</tbody></table>"


def _summary(ds: xr.Dataset) -> str:
    acc = ds.sgd
    n_done, total = acc.progress()
    failures = acc.failures()
    runtime = float(np.nansum(ds["runtime"].values)) if "runtime" in ds else float("nan")
    rows = [["cells done", f"{n_done} / {total}"],
            ["failed", str(len(failures))],
            ["pending", str(total - n_done - len(failures))],
            ["compute time of done cells", f"{_num(runtime)} s"]]
    paths = json.loads(ds.attrs.get("sweep_paths", "{}") or "{}")
    for d in acc.sweep_dims:
        vals = ", ".join(_num(v, 4) for v in ds[d].values)
        rows.append([f"axis {_e(d)} ({_e(paths.get(d, d))})", f"[{vals}]"])
    for key in ("landscape", "chains", "sampling", "fp_convention"):
        if key in ds.attrs:
            rows.append([key, _e(ds.attrs[key])])
    html_ = _table(None, [[_e(r[0]), r[1]] for r in rows], left=2)
    lost = schema.lost_cells(ds)
    if lost:
        html_ += f'<p class="fail">{_e(schema.lost_summary(lost))}.</p>'
    if failures:
        frows = [[_e(", ".join(f"{k} = {_num(v, 4)}" for k, v in f["cell"].items())), _e(f["error"])]
                 for f in failures]
        html_ += "<h3>Failed cells</h3>" + _table(["cell", "message"], frows, left=2)
    return html_


def _last_time_tables(ds: xr.Dataset) -> str:
    """Distances to FP per method (median/max over done cells) and the per-cell table."""
    acc = ds.sgd
    if "y" in ds.dims:
        return _table_2d(ds)
    if "fp" not in acc.methods:
        return '<p class="muted">No Fokker–Planck reference in this store: no distance table.</p>'
    t_last = float(ds["t"].values[-1])
    others = [m for m in acc.methods if m != "fp"]
    metrics = ("tv", "kl", "w1", "hellinger")
    dist = xr.Dataset({f"{m}:{k}": acc.distance(m, "fp", metric=k, t="last")
                       for m in others for k in metrics})
    cells = xr.Dataset()
    if "sgd" in acc.methods:
        cells["TV(SGD, FP)"] = dist["sgd:tv"]
        cells["W1(SGD, FP)"] = dist["sgd:w1"]
    if "sde" in acc.methods:
        cells["TV(SDE, FP)"] = dist["sde:tv"]
    if "gibbs" in acc.kinds and "sgd" in acc.methods:
        cells["TV(SGD, Gibbs)"] = acc.distance_to_stationary("sgd", "gibbs", "tv")
    basins = acc.basins
    for src in ("sgd", "fp", "gibbs", "stationary:sgd"):
        if (src in acc.methods or src.removeprefix("stationary:") in acc.kinds) and basins:
            bm = acc.basin_masses(src)
            for b in basins:
                cells[f"{src} mass {b}"] = bm.sel(basin=b, drop=True)
    if "lost_fraction" in ds:  # flagged above LOST_FLAG: the distances cover only the chains left
        cells["lost (max)"] = ds["lost_fraction"].isel(t=-1).max("method")
    if "relaxation_time" in ds:  # one-step operators ran: their relaxation times, and the FP's
        for m in ("sgd_op", "gauss_step", "fp"):
            if m in acc.methods:
                cells[f"τ {m}"] = ds["relaxation_time"].sel({"method": m}, drop=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        dist, cells = xr.merge([dist]).compute(), cells.compute()
        rows = []
        for m in others:
            row = [_e(m)]
            for k in metrics:
                v = np.asarray(dist[f"{m}:{k}"].values, float)
                row.append(f"{_num(np.nanmedian(v))} / {_num(np.nanmax(v))}" if np.isfinite(v).any() else "—")
            rows.append(row)
    out = (f"<p>Distance of each method from the Itô Fokker–Planck density at the last snapshot "
           f"t = {_num(t_last)}: median / max over finished cells. TV and Hellinger in [0, 1], "
           f"KL in nats (floor 1e-12), W1 in units of θ.</p>"
           + _table(["method", "TV", "KL", "W1", "Hellinger"], rows, left=1))

    dims = list(acc.sweep_dims)
    done = np.asarray(ds[DONE].values, bool) if DONE in ds else np.ones((), bool)
    header = [*dims, "status", *cells.data_vars]
    rows, classes = [], []
    for idx, coords, status in _cells_shown(ds, dims, done):
        vals = [_num(np.asarray(cells[v].values)[idx]) if done[idx] else "" for v in cells.data_vars]
        rows.append([*coords, status, *vals])
        lost_many = "lost (max)" in cells and done[idx] and \
            float(np.asarray(cells["lost (max)"].values)[idx]) > schema.LOST_FLAG
        classes.append({"failed": "fail", "pending": "pending"}.get(status, "fail" if lost_many else ""))
    out += (f"<h3>Cells at t = {_num(t_last)}</h3>"
            + _table(header, rows, left=len(dims) + 1, row_classes=classes) + _more_cells(done))
    return out


def _cells_shown(ds: xr.Dataset, dims: Sequence[str], done: np.ndarray
                 ) -> Iterator[tuple[tuple[int, ...], list[str], str]]:
    """The first :data:`MAX_CELL_ROWS` cells in C order: (index, its sweep coordinates as
    shown, status: done, failed or pending)."""
    error = np.asarray(ds[ERROR].values) if ERROR in ds else np.full(done.shape, "")
    coords = {d: ds[d].values for d in dims}
    for idx in itertools.islice(np.ndindex(done.shape), MAX_CELL_ROWS):
        status = "done" if done[idx] else ("failed" if error[idx] else "pending")
        yield idx, [_num(coords[d][i], 4) for d, i in zip(dims, idx, strict=True)], status


def _more_cells(done: np.ndarray) -> str:
    """The note under a per-cell table that shows only the first cells."""
    return (f'<p class="muted">First {MAX_CELL_ROWS} of {done.size} cells shown.</p>'
            if done.size > MAX_CELL_ROWS else "")


#: Columns of the model per-cell table: (heading, variable, selection).
COLUMNS_MODEL = (
    ("loss θ*", "loss_star", {}), ("λ_max", "hessian_eig", {"direction": 0}),
    ("2/λ_max", "gd_edge", {}), ("ms edge", "ms_edge", {}), ("s", "nonuniformity", {}),
    ("Wu–Ma–E bound", "wme_edge", {}), ("T", "temperature", {}),
    ("alignment", "noise_alignment", {}),
)


def _model_table(ds: xr.Dataset) -> str:
    """Model store: per cell, the references at θ* and, at the last snapshot, SGD's variance
    along h1 against the exact references, its loss, sharpness, tail index and lost fraction."""
    dims = list(ds.sgd.sweep_dims)
    done = np.asarray(ds[DONE].values, bool) if DONE in ds else np.ones((), bool)
    methods = ds.sgd.methods
    m = "sgd" if "sgd" in methods else methods[0]
    h1 = {"direction": 0}
    cols: list[tuple[str, xr.DataArray]] = [(h, ds[v].isel(sel)) for h, v, sel in COLUMNS_MODEL if v in ds]
    var = ds["proj_var"].sel({"method": m}).isel(t=-1, **h1)
    for kind in ("sgd", "ito", "gibbs"):
        ref = ds["stationary_proj_var"].sel(kind=kind).isel(h1)
        cols.append((f"var h1 {m} / {kind}", var / ref))
    cols += [(f"loss {m}", ds["loss_mean"].sel({"method": m}).isel(t=-1)),
             (f"sharpness {m}", ds["sharpness"].sel({"method": m}).isel(t=-1)),
             (f"tail α h1 {m}", ds["tail_index"].sel({"method": m}).isel(h1)),
             (f"lost {m}", ds["lost_fraction"].sel({"method": m}).isel(t=-1))]
    header = [*dims, "status", *(h for h, _ in cols)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        data = [np.asarray(da.transpose(*dims).values, float) if dims else np.asarray(da.values, float)
                for _, da in cols]
    rows, classes = [], []
    for idx, coords, status in _cells_shown(ds, dims, done):
        rows.append([*coords, status, *(_num(a[idx]) if done[idx] else "" for a in data)])
        classes.append({"failed": "fail", "pending": "pending"}.get(status, ""))
    out = (f"<p>Model {_e(ds.attrs.get('model', '?'))} on {_e(ds.attrs.get('dataset', '?'))} "
           f"(n = {_e(ds.attrs.get('dataset_n', '?'))}, p = {_e(ds.attrs.get('dataset_p', '?'))}, "
           f"d = {_e(ds.attrs.get('n_params', '?'))} parameters). Variance ratios: Monte Carlo "
           "variance of (θ − θ*)·v₁ at the last snapshot over each reference's stationary variance "
           "(sgd: SGD's exact discrete-time law; ito: the Itô SDE's exact moments — both least "
           "squares only; gibbs: T·H*⁻¹). The ms edge is the largest η with a bounded second "
           "moment.</p>")
    return out + _table(header, rows, left=len(dims) + 1, row_classes=classes) + _more_cells(done)


#: Columns of the 2-D per-cell table: (heading, variable, method or None).
COLUMNS_2D = (("TV(SGD, FP)", "tv", "sgd"), ("KL(SGD ‖ FP)", "kl", "sgd"),
              ("W1 marg.(SGD, FP)", "w1", "sgd"), ("circulation", "stationary_circulation", None),
              ("∫|J| dθ", "stationary_mean_abs_current", None),
              ("KL(stat ‖ Gibbs)", "stationary_kl_gibbs", None), ("min p", "stationary_min_density", None),
              ("non-monotone faces", "fp_monotone_violation", None))


def _table_2d(ds: xr.Dataset) -> str:
    """2-D store: per cell, SGD's distances to FP at the last snapshot and the numbers of the
    FP stationary state (current, circulation, KL to Gibbs, positivity)."""
    cols = [(h, v, m) for h, v, m in COLUMNS_2D
            if v in ds and (m is None or (m in ds.sgd.methods and "fp" in ds.sgd.methods))]
    dims = list(ds.sgd.sweep_dims)
    done = np.asarray(ds[DONE].values, bool) if DONE in ds else np.ones((), bool)
    data = []
    for _, v, m in cols:
        da = ds[v].sel({"method": m}).isel(t=-1) if m is not None else ds[v]
        data.append(np.asarray(da.transpose(*dims).values, float) if dims else np.asarray(da.values, float))
    rows = [[*coords, *(_num(a[idx]) if done[idx] else "" for a in data)]
            for idx, coords, _ in _cells_shown(ds, dims, done)]
    return (f"<p>Per cell at t = {_num(float(ds['t'].values[-1]))}: SGD against the Itô FP density "
            "(W1: mean of the two marginals'), and the FP stationary state of the cell's convention: "
            "circulation of its probability current (probability per unit time, &gt; 0 counter-"
            "clockwise), ∫|J| dθ, KL to Gibbs, most negative density, fraction of faces where the "
            "scheme is not monotone.</p>" + _table([*dims, *(h for h, _, _ in cols)], rows, left=len(dims)))


def _escape_table(ds: xr.Dataset) -> str:
    """Escape times per cell, when the store holds any (finished cells only)."""
    try:
        es = ds.sgd.escape_summary()
    except KeyError:
        return ""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        es = es.compute()
    exact = np.asarray(es["escape_time_exact"].values, float)
    if not np.isfinite(exact).any():
        return ""
    exact_rows = np.asarray(es["exact"].values, bool)
    methods = [str(m) for m, op in zip(es["method"].values, exact_rows, strict=True)
               if not op and np.isfinite(np.asarray(es["escaped_fraction"].sel({"method": m}).values,
                                                    float)).any()]
    dims = list(ds.sgd.sweep_dims)
    err = (np.asarray(es["escape_time_exact_error"].values, float) if "escape_time_exact_error" in es
           else np.full(exact.shape, np.nan))
    header = [*dims, "start basin", "threshold θ", "exact SDE time", "its grid error"]
    censored = "escape_time_mle" in es  # stores written before it: the escaped-only mean
    for m in methods:
        header += [f"{m} mean time" + (" ± SE" if censored else ""), f"{m} escaped", f"{m} / exact"]
    ops = [str(m) for m, op in zip(es["method"].values, exact_rows, strict=True) if op]
    header += [f"{o} exact time" for o in ops]  # the one-step chains' absorbing-chain solves
    few = (np.asarray(es["too_few_escapes"].sel({"method": methods})
                      .transpose(*es["escape_time_exact"].dims, "method").values, bool)
           if censored and methods else np.zeros((*exact.shape, 0), bool))
    rows, classes = [], []
    for idx in np.ndindex(exact.shape):
        if len(rows) == MAX_CELL_ROWS:
            break
        if not np.isfinite(exact[idx]):
            continue
        flagged = bool(err[idx] > ESCAPE_ERROR_FLAG)
        row = [_num(ds[d].values[i], 4) for d, i in zip(dims, idx, strict=True)]
        row += [str(np.asarray(es["start_basin"].values)[idx]) if "start_basin" in es else "",
                _num(np.asarray(es["escape_threshold"].values)[idx]) if "escape_threshold" in es else "",
                _num(exact[idx]), f"{_num(100 * err[idx], 2)} %" + (" (!)" if flagged else "")]
        classes.append("fail" if flagged or few[idx].any() else "")
        for k, m in enumerate(methods):
            sel = es.sel({"method": m})
            if censored:
                mle = np.asarray(sel["escape_time_mle"].values)[idx]
                mean = (f"{_num(mle)} ± {_num(np.asarray(sel['escape_time_mle_se'].values)[idx], 2)}"
                        if np.isfinite(mle) else "—") + (" (!)" if few[idx][k] else "")
            else:
                mean = _num(np.asarray(sel["escape_time_mean"].values)[idx])
            row += [mean, *(_num(np.asarray(sel[v].values)[idx])
                            for v in ("escaped_fraction", "ratio_to_exact"))]
        row += [_num(np.asarray(es["escape_time"].sel({"method": o}).values)[idx]) for o in ops]
        rows.append(row)
    n_flagged = int(np.sum(np.nan_to_num(err, nan=0.0) > ESCAPE_ERROR_FLAG))
    warn = (f'<p class="fail">{n_flagged} cell(s) have an exact passage time whose grid error '
            f"(change from a solve at twice fp.refine) exceeds {ESCAPE_ERROR_FLAG:.0%}: refine the density "
            "grid or raise fp.refine before trusting it.</p>" if n_flagged else "")
    n_few = int(few.any(axis=-1).sum()) if few.size else 0
    if n_few:
        warn += (f'<p class="fail">{n_few} cell(s) have a method with fewer than {MIN_ESCAPES} escapes '
                 "(marked (!)): too few to estimate its mean escape time; raise time.t_end or mc.chains.</p>")
    what = ("Mean first-passage time counting the chains still waiting at the last snapshot as "
            "censored (total time at risk / escapes, the exponential maximum-likelihood estimate, "
            "± its standard error)" if censored else
            "Mean first-passage time over the chains that crossed the threshold by the last snapshot "
            "(biased low where not all did)")
    return ("<h3>Escapes</h3><p>" + what + ", in t = η·step, beside the exact "
            "passage time of the Itô SDE and its relative grid error, and that of each one-step "
            "operator's chain (sgd_op: real SGD's) where they ran.</p>" + warn
            + _table(header, rows, left=len(dims), row_classes=classes))


def _weighted_mean(v: np.ndarray, w: np.ndarray) -> float:
    """Mean of v under weights w, over the points where v is defined (NaN: no noise there)."""
    ok = ~np.isnan(v) & np.isfinite(w)
    total = w[ok].sum()
    return float((v[ok] * w[ok]).sum() / total) if total > 0 else float("nan")


def _noise_table(ds: xr.Dataset) -> str:
    """Per cell: the gradient noise's shape and size where the probability mass sits
    (1-D stores with the noise diagnostics; finished cells)."""
    if "noise_to_signal" not in ds or "y" in ds.dims:
        return ""
    methods = [str(m) for m in ds["method"].values]
    source = next((m for m in ("sgd", "fp", *methods) if m in methods), None)
    if source is None:
        return ""
    dims = list(ds.sgd.sweep_dims)
    done = np.asarray(ds[DONE].values, bool) if DONE in ds else np.ones((), bool)
    shown = [idx for idx, _ in zip((i for i in np.ndindex(done.shape) if done[i]), range(MAX_CELL_ROWS),
                                   strict=False)]
    # Only the cells shown are read (a store of 10⁵ cells would decode every profile).
    first = {d: sorted({int(i[k]) for i in shown}) for k, d in enumerate(dims)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        picked = ds.isel(first)
        sub = picked[["noise_skewness", "noise_kurtosis", "noise_to_signal", "grad_mean"]].compute()
        p = picked["density"].sel({"method": source}).isel(t=-1).compute()
    rows = []
    for idx in shown:
        isel = {d: first[d].index(int(i)) for d, i in zip(dims, idx, strict=True)}
        w = np.asarray(p.isel(isel).values, float)
        sk = np.asarray(sub["noise_skewness"].isel(isel).values, float)
        ku = np.asarray(sub["noise_kurtosis"].isel(isel).values, float)
        nsr = np.asarray(sub["noise_to_signal"].isel(isel).values, float)
        g2 = np.asarray(sub["grad_mean"].isel(isel).values, float) ** 2
        # Ensemble noise-to-signal E_p[tr Σ_b] / E_p[|G|²] (tr Σ_b = NSR·|G|²; points with G = 0
        # drop out): a ratio of means, smooth in the weights, unlike a median of NSR(θ).
        ok = np.isfinite(nsr) & np.isfinite(w)
        signal = float((w[ok] * g2[ok]).sum())
        ens_nsr = float((w[ok] * nsr[ok] * g2[ok]).sum()) / signal if signal > 0 else float("nan")
        rows.append([*(_num(ds[d].values[int(i)], 4) for d, i in zip(dims, idx, strict=True)),
                     _num(_weighted_mean(np.abs(sk), w)),
                     _num(np.nanmax(np.abs(sk)) if np.isfinite(sk).any() else np.nan),
                     _num(_weighted_mean(ku, w)), _num(np.nanmax(ku) if np.isfinite(ku).any() else np.nan),
                     _num(ens_nsr)])
    if not rows:
        return ""
    return ("<h3>Gradient noise</h3><p>Exact shape of the minibatch mean gradient for each cell's "
            f"batch size and sampling: |skewness| and excess kurtosis averaged over the last-snapshot "
            f"<code>{_e(source)}</code> density p (and their maximum over the grid), and the "
            "ensemble's noise-to-signal ratio E_p[tr Σ_b]/E_p[|G|²]. Gaussian noise has 0 and 0; "
            "a small noise-to-signal ratio means the drift dominates, where Li, Malladi &amp; Arora's "
            "necessary condition for the SDE approximation fails.</p>"
            + _table([*dims, "mean |skew|", "max |skew|", "mean ex. kurtosis", "max ex. kurtosis",
                      "E[tr Σ_b]/E[|G|²]"], rows, left=len(dims)))


def _provenance(ds: xr.Dataset) -> str:
    attrs = ds.attrs
    rows = [[_e(k), _e(attrs[k])] for k in ("created", "last_run_finished", "git_commit", "command_line",
                                             "config_hash") if k in attrs]
    out = _table(None, rows, left=2)
    try:
        versions = json.loads(attrs.get("versions", "{}") or "{}")
    except json.JSONDecodeError:
        versions = {}
    if versions:
        out += "<h3>Package versions</h3>" + _table(["package", "version"],
                                                    [[_e(k), _e(v)] for k, v in versions.items()], left=2)
    try:
        runs = json.loads(attrs.get("runs", "[]") or "[]")
    except json.JSONDecodeError:
        runs = []
    if runs:
        keys = list(runs[0])
        rows = [[_e(r.get(k, "")) for k in keys] for r in runs]
        out += "<h3>Runs</h3>" + _table(keys, rows, left=len(keys))
    if "config" in attrs:
        out += ("<h3>Resolved configuration</h3><p>Swept keys show their axis and values, not the "
                "single default the config file holds.</p><pre>" + _e(swept_config(ds)) + "</pre>")
    return out


def swept_config(ds: xr.Dataset) -> str:
    """The store's resolved config (YAML) with every swept key's value replaced by its axis:
    ``lr: 0.02`` (the default, used by no cell) becomes ``lr: swept over axis lr = [0.005,
    …]``. The ``grid`` block is kept as written."""
    import yaml

    text = ds.attrs.get("config", "")
    try:
        cfg = yaml.safe_load(text)
        paths = json.loads(ds.attrs.get("sweep_paths", "{}") or "{}")
    except (yaml.YAMLError, json.JSONDecodeError):
        return text
    if not isinstance(cfg, dict) or not paths:
        return text
    for dim, path in paths.items():
        node, *keys = [cfg, *path.split(".")]
        for key in keys[:-1]:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict) and keys[-1] in node and dim in ds.coords:
            values = ", ".join(_num(v, 4) for v in np.asarray(ds[dim].values).tolist())
            node[keys[-1]] = f"swept over axis {dim} = [{values}]"
    return yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True)


def chosen_text(ds: xr.Dataset, where: dict[str, Any]) -> str:
    """The sentence that says which cell the one-cell figures show, and why."""
    if not where:
        return ""
    label = ", ".join(f"{_e(d)} = {_num(v, 4)}" for d, v in where.items())
    acc = ds.sgd
    if "y" in ds.dims:  # current_2d picks its own cell and names it in its title
        return ("<p>The 2-D figure shows the finished cell with the largest stationary circulation "
                "(named in its title).</p>")
    if "sgd" in acc.methods and "fp" in acc.methods and "y" not in ds.dims:
        tv = float(acc.sde_validity().sel({d: v for d, v in where.items()}))
        if np.isfinite(tv):
            return (f"<p>The one-cell figures show the cell {label}: the finished cell where SGD departs "
                    f"most from the Itô Fokker–Planck density, TV(SGD, FP) = {_num(tv)} at the last "
                    "snapshot (the largest in the sweep).</p>")
    return f"<p>The one-cell figures show the first finished cell, {label}.</p>"


def render_html(loc: location.Location, ds: xr.Dataset,
                figures: Sequence[tuple[str, str | None, str]], chosen: str = "") -> str:
    """The report page (no scripts, no external resources)."""
    n_done, total = ds.sgd.progress()
    title = f"sgdsweep report — {loc.name}"
    where = loc.local_path.resolve() if loc.local_path is not None else loc.url
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        f'<p class="muted">Store <code>{_e(where)}</code> · {n_done} of {total} cells done'
        f" · landscape {_e(ds.attrs.get('landscape', '?'))}</p>",
    ]
    if n_done < total:
        parts.append('<p class="warn">This sweep is not finished: figures and tables show the '
                     "finished cells only.</p>")
    if "direction" in ds.dims:
        tables = [_model_table(ds)]
    else:
        tables = [_last_time_tables(ds), _escape_table(ds), _noise_table(ds)]
    parts += ["<h2>Summary</h2>", _summary(ds), "<h2>At the last snapshot</h2>", *tables,
              "<h2>Figures</h2>", chosen]
    for name, b64, note in figures:
        caption = _e(CAPTIONS.get(name, name))
        if b64 is None:
            parts.append(f'<figure><p class="warn">{_e(name)}: not drawn ({_e(note)})</p></figure>')
        else:
            parts.append(f'<figure id="{_e(name)}"><img alt="{_e(name)}" src="data:image/png;base64,{b64}">'
                         f"<figcaption><b>{_e(name.replace('_', ' '))}.</b> {caption} "
                         f'(<a href="{_e(name)}.png">{_e(name)}.png</a>)</figcaption></figure>')
    parts += ["<h2>Provenance</h2>", _provenance(ds), "</body></html>"]
    return "\n".join(parts)
