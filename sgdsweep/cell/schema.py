"""The store's schema: dimension, variable and bookkeeping names, and their attributes.

One place for the names a sweep store (and a single ``run_cell`` result) uses; the
cell layout (:mod:`sgdsweep.cell.run`), the pipeline's store, the accessor and the plots
import them instead of re-typing literals.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

# ----------------------------------------------------------------------- dimensions
#: The cell's own dimensions (after the sweep axes); sweep axes may not take these names.
CELL_DIMS = ("x", "y", "t", "method", "kind", "basin", "axis", "direction", "rank", "param", "param2",
             "quantile")
#: Cell coordinates whose labels may differ between the cells of a sweep (basins named by swept
#: landscape parameters; the parameters of models whose size is swept): the store holds their
#: union, and a cell without a label reads NaN there.
UNION_COORDS = ("basin", "param", "param2")

# ----------------------------------------------------------------------- bookkeeping
#: Per-cell bookkeeping variables: finished flag, last failure message ("" if none).
DONE = "done"
ERROR = "error"
#: Wall time of the cell (seconds), written by run_cell.
RUNTIME = "runtime"
BOOKKEEPING = (DONE, ERROR, RUNTIME)
#: Failure messages are stored as fixed-width unicode of this many characters.
ERROR_CHARS = 400

# ----------------------------------------------------------------------- references
#: The method every other method's ``tv`` / ``kl`` / ``w1`` is measured against.
DISTANCE_REFERENCE = "fp"
#: Cell attr: JSON {method: kind} of the methods in the cell (ensemble or density).
METHOD_KINDS_ATTR = "method_kinds"
#: Fewer escapes than this and the report and status flag a cell's ``escape_time_mle``.
MIN_ESCAPES = 10
#: Above this ``lost_fraction`` (at the last snapshot) the summary, report and status warn.
LOST_FLAG = 0.01
#: Above this relative error of ``escape_time_exact`` the report and status flag a cell.
ESCAPE_ERROR_FLAG = 0.05

#: CF attributes of every variable and coordinate.
ATTRS: dict[str, dict[str, str]] = {
    "x": {"long_name": "parameter θ (cell centre)", "units": "1"},
    "y": {"long_name": "parameter θ₂ (cell centre)", "units": "1"},
    "t": {"long_name": "SDE time t = lr · step (nominal snapshot time)", "units": "1"},
    "method": {"long_name": "dynamics: sgd, sde (Itô Euler–Maruyama), langevin, gd, fp, fp_drift, "
               "svag, sgd_noise, sme2, fp_sme2, sgd_op (SGD's transfer operator), gauss_step (Gaussian "
               "step kernel), … (the method registry)"},
    "kind": {"long_name": "stationary reference: FP null vector under a convention, Gibbs, or one "
             "a method provides (sme2; sgd, gauss_step: the invariant law of a one-step operator)"},
    "basin": {"long_name": "basin of attraction of L"},
    "axis": {"long_name": "parameter component"},
    "density": {"long_name": "probability density of θ", "units": "1/θ"},
    "stationary": {"long_name": "stationary density", "units": "1/θ"},
    "mean": {"long_name": "ensemble mean of θ", "units": "1"},
    "std": {"long_name": "ensemble standard deviation of θ", "units": "1"},
    "basin_mass": {"long_name": "probability mass in basin", "units": "1"},
    "lost_fraction": {"long_name": "fraction of chains that diverged or left the grid", "units": "1"},
    "tv": {"long_name": "total variation distance to the FP density", "units": "1"},
    "kl": {"long_name": "KL(method ‖ fp) of normalised densities (floor 1e-12)", "units": "nat"},
    "w1": {"long_name": "Wasserstein-1 distance to the FP density", "units": "1"},
    "escape_time_mean": {"long_name": "mean first-passage time over escaped chains", "units": "1"},
    "escaped_fraction": {"long_name": "fraction of chains past the escape threshold by t_end",
                         "units": "1"},
    "escape_time_mle": {"long_name": "mean first-passage time counting the chains still waiting "
                        "(censored): total time at risk / escapes, the exponential maximum-likelihood "
                        "estimate; NaN without escapes", "units": "1"},
    "escape_time_mle_se": {"long_name": "standard error of escape_time_mle (escape_time_mle / "
                           "sqrt(escape_count))", "units": "1"},
    "escape_count": {"long_name": "chains past the escape threshold by t_end (below "
                     f"{MIN_ESCAPES}: too few to estimate the mean passage time)", "units": "1"},
    "escape_time_exact": {"long_name": "mean first-passage time of the Itô SDE from the initial law "
                          "(backward equation on the refined FP grid)", "units": "1"},
    "escape_time_exact_error": {"long_name": "relative change of escape_time_exact from a second "
                                "solve at twice fp.refine (grid error estimate)", "units": "1"},
    "escape_threshold": {"long_name": "escape threshold (θ)", "units": "1"},
    "loss": {"long_name": "training loss L(θ)", "units": "1"},
    "grad_mean": {"long_name": "mean gradient G(θ) = L'(θ)", "units": "1"},
    "grad_var": {"long_name": "per-sample gradient variance Σ(θ) (population)", "units": "1"},
    "diffusion": {"long_name": "Itô diffusion D = lr · Σ_b / 2", "units": "1"},
    "noise_skewness": {"long_name": "skewness of the minibatch mean gradient (exact, the cell's "
                       "batch size and sampling; NaN where it has no spread)", "units": "1"},
    "noise_kurtosis": {"long_name": "excess kurtosis of the minibatch mean gradient (exact, the "
                       "cell's batch size and sampling; NaN where it has no spread)", "units": "1"},
    "noise_to_signal": {"long_name": "noise-to-signal ratio tr Σ_b / |G|² (Li, Malladi & Arora "
                        "2021; +inf where G = 0 with noise)", "units": "1"},
    "temperature": {"long_name": "Langevin / Gibbs temperature T", "units": "1"},
    "fp_degenerate": {"long_name": "stationary FP density collapsed where D → 0"},
    "current": {"long_name": "probability current J = −G p − ∇·(D p) of the density, at cell centres "
                "(the FP scheme's face fluxes averaged; NaN for methods without an operator)",
                "units": "1/(θ^(d−1)·time)"},
    "stationary_current": {"long_name": "probability current of the stationary density under its "
                           "convention's FP operator, at cell centres (NaN for gibbs)",
                           "units": "1/(θ^(d−1)·time)"},
    "stationary_mean_abs_current": {"long_name": "∫|J| dθ of the FP stationary state (cell's "
                                    "convention): 0 in detailed balance", "units": "1/time"},
    "stationary_circulation": {"long_name": "signed extreme of the stream function of the stationary "
                               "current: probability per unit time circulating (> 0 counter-"
                               "clockwise; 2-D only)", "units": "1/time"},
    "stationary_kl_gibbs": {"long_name": "KL(FP stationary ‖ Gibbs ∝ exp(−L/T)) at the cell's T",
                            "units": "nat"},
    "stationary_min_density": {"long_name": "most negative value of the FP stationary density (0 if "
                               "p ≥ 0; < 0 only where the 2-D scheme is not monotone; never clipped)",
                               "units": "1/θ^d"},
    "fp_negative_offdiag": {"long_name": "number of negative off-diagonal entries of the 2-D FP "
                            "generator (cell's convention): 0 means an M-matrix, p ≥ 0 guaranteed; "
                            "strong drift against the Scharfetter–Gummel weights can make some even "
                            "where the face bound holds (0 in 1-D)", "units": "1"},
    "fp_monotone_violation": {"long_name": "fraction of interior faces where the 2-D cross-diffusion "
                              "bound |D_xy| ≤ min(D_xx dy/dx, D_yy dx/dy) fails (0 in 1-D)",
                              "units": "1"},
    RUNTIME: {"long_name": "wall time to compute the cell", "units": "s"},
    DONE: {"long_name": "cell computed and written"},
    ERROR: {"long_name": "failure message of the cell's last attempt"},
}


def failures(ds: Any) -> list[tuple[dict[str, Any], str]]:
    """The failed cells of a store (``error`` set and not ``done``): (coords, message) each.

    ``coords`` maps every sweep axis (the dims of ``done``) to the cell's value there;
    in C order over the sweep axes. Empty for a single ``run_cell`` result.
    """
    if DONE not in ds or ERROR not in ds or not ds[DONE].dims:
        return []
    done = np.asarray(ds[DONE].values, dtype=bool)
    error = np.asarray(ds[ERROR].values)
    dims = ds[DONE].dims
    coords = _coords(ds, dims)
    failed = ~done & (error != "")
    return [({str(d): coords[d][i] for d, i in zip(dims, idx, strict=True)}, str(msg))
            for idx, msg in zip(np.argwhere(failed).tolist(), error[failed].tolist(), strict=True)]


def describe_cell(where: Mapping[str, Any]) -> str:
    """``lr=0.02, batch_size=1`` for a cell's sweep coordinates."""
    return ", ".join(f"{k}={v}" for k, v in where.items())


class Flagged(list):
    """The entries of a flagged-cell list (:func:`escape_error_cells`, :func:`lost_cells`, …)
    — only the first ``most`` when asked for fewer — and ``total``, how many there are in all."""

    total: int = 0


def _flagged(bad: np.ndarray, value: np.ndarray, most: int | None, entry: Any) -> Flagged:
    """``entry(index as a list, value)`` of the first ``most`` (None: all) positions where
    ``bad``, in C order, with their total."""
    at, values = np.argwhere(bad), value[bad]  # both in C order
    if most is not None:
        at, values = at[:max(0, most)], values[:max(0, most)]
    out = Flagged(entry(idx, v) for idx, v in zip(at.tolist(), values.tolist(), strict=True))
    out.total = int(np.count_nonzero(bad))
    return out


def escape_error_cells(ds: Any, most: int | None = None) -> Flagged:
    """Done cells whose ``escape_time_exact_error`` exceeds :data:`ESCAPE_ERROR_FLAG`:
    (sweep coords, relative error) each, in C order — the first ``most`` (default: all);
    ``.total`` counts them all. For a single cell: ``{}`` as coords."""
    if "escape_time_exact_error" not in ds:
        return Flagged()
    err = np.asarray(ds["escape_time_exact_error"].values, dtype=float)
    bad = np.nan_to_num(err, nan=0.0) > ESCAPE_ERROR_FLAG
    if DONE in ds:
        bad &= np.asarray(ds[DONE].values, dtype=bool)
    dims = ds["escape_time_exact_error"].dims
    coords = _coords(ds, dims)  # once: a Dataset lookup per entry cost ~25 µs (10⁵ cells: seconds)
    names = [str(d) for d in dims]

    def entry(idx: list[int], v: float) -> tuple[dict[str, Any], float]:
        return {n: coords[d][i] for n, d, i in zip(names, dims, idx, strict=True)}, v

    return _flagged(bad, err, most, entry)


def _coords(ds: Any, dims: tuple) -> dict[Any, list]:
    """The coordinate values along ``dims`` as Python values (positions where a dimension
    has none)."""
    return {d: (ds[d].values if d in ds.coords else np.arange(ds.sizes[d])).tolist() for d in dims}


def operator_diffusion_cells(ds: Any, most: int | None = None) -> Flagged:
    """Done cells where a one-step operator's measured numerical diffusion missed its target
    (``operator_diffusion_flag``): (sweep coords, method, ``operator_diffusion_ratio``) each
    (the first ``most``; ``.total``: all)."""
    if "operator_diffusion_flag" not in ds:
        return Flagged()
    flag = ds["operator_diffusion_flag"]
    return _method_cells(ds, flag.dims, np.asarray(flag.values, dtype=bool),
                         np.asarray(ds["operator_diffusion_ratio"].values, dtype=float), most)


def lost_cells(ds: Any, most: int | None = None) -> Flagged:
    """Done cells where a method lost more than :data:`LOST_FLAG` of its chains (off the grid
    or diverged) by the last snapshot: (sweep coords, method, ``lost_fraction``) each (the
    first ``most``; ``.total``: all). Its densities, moments and distances then describe only
    the chains left."""
    if "lost_fraction" not in ds:
        return Flagged()
    lost = ds["lost_fraction"].isel(t=-1)
    frac = np.asarray(lost.values, dtype=float)
    return _method_cells(ds, lost.dims, np.nan_to_num(frac, nan=0.0) > LOST_FLAG, frac, most)


def lost_summary(cells: list[tuple[dict[str, Any], str, float]]) -> str:
    """One line on the :func:`lost_cells` of a store: how many, the worst, what to do."""
    where, method, frac = max(cells, key=lambda c: c[2])
    return (f"{len(cells)} method(s) × cell(s) lost more than {LOST_FLAG:.0%} of their chains off the "
            f"grid (worst: {method} lost {frac:.1%} at {describe_cell(where) or 'the cell'}); their "
            "densities, moments and distances describe only the chains left: widen density_grid")


def few_escape_cells(ds: Any, most: int | None = None) -> Flagged:
    """Done cells where fewer than :data:`MIN_ESCAPES` chains of an ensemble escaped, so that
    ``escape_time_mle`` says little: (sweep coords, method, ``escape_count``) each (the first
    ``most``; ``.total``: all)."""
    if "escape_count" not in ds:
        return Flagged()
    count = ds["escape_count"]
    n = np.asarray(count.values, dtype=float)
    return _method_cells(ds, count.dims, np.nan_to_num(n, nan=np.inf) < MIN_ESCAPES, n, most)


def _method_cells(ds: Any, dims: tuple, bad: np.ndarray, value: np.ndarray,
                  most: int | None = None) -> Flagged:
    """(sweep coords, method, value) of the entries of a (*sweep, method) variable where
    ``bad``, in done cells only (the first ``most``)."""
    if DONE in ds:
        done = np.asarray(ds[DONE].values, dtype=bool)
        bad = bad & done.reshape(done.shape + (1,) * (bad.ndim - done.ndim))
    coords = _coords(ds, dims)
    m = dims.index("method")
    keep = [(str(d), d, a) for a, d in enumerate(dims) if d != "method"]

    def entry(idx: list[int], v: float) -> tuple[dict[str, Any], str, float]:
        return {n: coords[d][idx[a]] for n, d, a in keep}, str(coords["method"][idx[m]]), v

    return _flagged(bad, np.asarray(value, dtype=float), most, entry)
