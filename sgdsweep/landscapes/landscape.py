"""Finite-sum loss landscapes: L(θ) = (1/n) Σ_i l_i(θ), θ ∈ R^d (d = 1 or 2).

Each per-sample loss l_i is a sum of *terms*. Two kinds exist, both written with a
symmetric d×d matrix A and centre c, r = θ − c:

* ``gaussian``:  a · exp(−rᵀ A r)      (A = diag(sharpness) = diag(1/width²))
* ``quadratic``: a · ½ rᵀ A r          (A = curvature / Hessian of the term)

All terms of all samples live in flat arrays sorted by sample, with ``ptr`` giving
each sample's slice (CSR layout), so that one compiled kernel evaluates any
landscape of the family. Units: θ and L are dimensionless.

Landscapes are built from plain mappings (Hydra YAML under ``conf/landscape/``)
by :func:`build_landscape`; see its docstring for the accepted forms.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numba as nb
import numpy as np

from sgdsweep.errors import ConfigError
from sgdsweep.landscapes.shifts import _shift_vectors
from sgdsweep.validate import number_entry

GAUSSIAN = 0
QUADRATIC = 1
TERM_KINDS = {"gaussian": GAUSSIAN, "quadratic": QUADRATIC}


@dataclass(frozen=True, eq=False)
class Landscape:
    """A finite-sum landscape in compiled-kernel form (see module docstring)."""

    dim: int
    n: int
    kind: np.ndarray  # (m,) int64
    amp: np.ndarray  # (m,)
    centre: np.ndarray  # (m, d)
    mat: np.ndarray  # (m, d, d)
    ptr: np.ndarray  # (n + 1,) int64, terms of sample i are ptr[i]:ptr[i+1]
    name: str = "custom"
    basins: tuple[tuple[str, float, float], ...] | None = None  # (name, lower, upper)
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def arrays(self) -> tuple[np.ndarray, ...]:
        """The arrays every compiled kernel takes, in kernel argument order."""
        return (self.kind, self.amp, self.centre, self.mat, self.ptr)

    def evaluate(self, points: np.ndarray) -> dict[str, np.ndarray]:
        """Loss, mean gradient G, gradient covariance Σ and Hessian of L at points.

        ``points`` has shape (m, d) (or (m,) when d = 1). Σ is the *population*
        covariance of the n per-sample gradients (divide by n, not n − 1).
        Returns arrays ``loss`` (m,), ``grad`` (m, d), ``cov`` (m, d, d),
        ``hess`` (m, d, d) and ``sample_grads`` (m, n, d).
        """
        pts = np.ascontiguousarray(np.asarray(points, dtype=np.float64).reshape(-1, self.dim))
        m = pts.shape[0]
        loss = np.empty(m)
        grad = np.empty((m, self.dim))
        cov = np.empty((m, self.dim, self.dim))
        hess = np.empty((m, self.dim, self.dim))
        sg = np.empty((m, self.n, self.dim))
        _evaluate_points(pts, *self.arrays, loss, grad, cov, hess, sg)
        return {"loss": loss, "grad": grad, "cov": cov, "hess": hess, "sample_grads": sg}


# --------------------------------------------------------------------------- kernels
# Plain loops over arrays; d is tiny (1 or 2) so no BLAS, no temporaries.


@nb.njit(cache=True, inline="always")
def _quad_form(mat: np.ndarray, j: int, r: np.ndarray) -> float:
    d = r.shape[0]
    q = 0.0
    for a in range(d):
        for b in range(d):
            q += r[a] * mat[j, a, b] * r[b]
    return q


@nb.njit(cache=True)
def sample_value(theta, i, kind, amp, centre, mat, ptr, r):
    """l_i(θ). ``r`` is a scratch vector of length d."""
    d = theta.shape[0]
    v = 0.0
    for j in range(ptr[i], ptr[i + 1]):
        for a in range(d):
            r[a] = theta[a] - centre[j, a]
        q = _quad_form(mat, j, r)
        if kind[j] == GAUSSIAN:
            v += amp[j] * np.exp(-q)
        else:
            v += 0.5 * amp[j] * q
    return v


# Inlined into callers: it runs once per sample per step, where a real call with
# ~10 exploded array arguments costs more than the arithmetic.
@nb.njit(cache=True, inline="always")
def add_sample_grad(theta, i, kind, amp, centre, mat, ptr, r, out, weight):
    """out += weight · ∇l_i(θ). ``r`` is a scratch vector of length d."""
    d = theta.shape[0]
    for j in range(ptr[i], ptr[i + 1]):
        for a in range(d):
            r[a] = theta[a] - centre[j, a]
        if kind[j] == GAUSSIAN:
            s = -2.0 * amp[j] * np.exp(-_quad_form(mat, j, r)) * weight
        else:
            s = amp[j] * weight
        for a in range(d):
            acc = 0.0
            for b in range(d):
                acc += mat[j, a, b] * r[b]
            out[a] += s * acc


@nb.njit(cache=True)
def add_sample_hess(theta, i, kind, amp, centre, mat, ptr, r, out, weight):
    """out += weight · ∇²l_i(θ)."""
    d = theta.shape[0]
    for j in range(ptr[i], ptr[i + 1]):
        for a in range(d):
            r[a] = theta[a] - centre[j, a]
        if kind[j] == GAUSSIAN:
            e = amp[j] * np.exp(-_quad_form(mat, j, r)) * weight
            for a in range(d):
                ar = 0.0
                for c in range(d):
                    ar += mat[j, a, c] * r[c]
                for b in range(d):
                    br = 0.0
                    for c in range(d):
                        br += mat[j, b, c] * r[c]
                    out[a, b] += e * (4.0 * ar * br - 2.0 * mat[j, a, b])
        else:
            for a in range(d):
                for b in range(d):
                    out[a, b] += amp[j] * weight * mat[j, a, b]


@nb.njit(cache=True, inline="always")
def mean_grad(th, kind, amp, centre, mat, ptr, r, g, gi):
    """G(θ) into g, summed sample by sample in index order (the order of Landscape.evaluate)."""
    d = th.shape[0]
    n = ptr.shape[0] - 1
    for a in range(d):
        g[a] = 0.0
    for i in range(n):
        for a in range(d):
            gi[a] = 0.0
        add_sample_grad(th, i, kind, amp, centre, mat, ptr, r, gi, 1.0)
        for a in range(d):
            g[a] += gi[a]
    for a in range(d):
        g[a] /= n


@nb.njit(cache=True)
def mean_grad_cov(theta, kind, amp, centre, mat, ptr, r, g, gi, cov):
    """G(θ) into ``g`` and population covariance Σ(θ) into ``cov``; ``gi`` is scratch (d,)."""
    d = theta.shape[0]
    n = ptr.shape[0] - 1
    for a in range(d):
        g[a] = 0.0
        for b in range(d):
            cov[a, b] = 0.0
    for i in range(n):
        for a in range(d):
            gi[a] = 0.0
        add_sample_grad(theta, i, kind, amp, centre, mat, ptr, r, gi, 1.0)
        for a in range(d):
            g[a] += gi[a]
            for b in range(d):
                cov[a, b] += gi[a] * gi[b]
    for a in range(d):
        g[a] /= n
    for a in range(d):
        for b in range(d):
            cov[a, b] = cov[a, b] / n - g[a] * g[b]
        # E[g²] − G² can round to a tiny negative number where every sample agrees.
        if cov[a, a] < 0.0:
            cov[a, a] = 0.0


@nb.njit(cache=True)
def _evaluate_points(pts, kind, amp, centre, mat, ptr, loss, grad, cov, hess, sg):
    m, d = pts.shape
    n = ptr.shape[0] - 1
    r = np.empty(d)
    for p in range(m):
        th = pts[p]
        v = 0.0
        for i in range(n):
            v += sample_value(th, i, kind, amp, centre, mat, ptr, r)
            for a in range(d):
                sg[p, i, a] = 0.0
            add_sample_grad(th, i, kind, amp, centre, mat, ptr, r, sg[p, i], 1.0)
        loss[p] = v / n
        for a in range(d):
            s = 0.0
            for i in range(n):
                s += sg[p, i, a]
            grad[p, a] = s / n
        for a in range(d):
            for b in range(d):
                s = 0.0
                for i in range(n):
                    s += (sg[p, i, a] - grad[p, a]) * (sg[p, i, b] - grad[p, b])
                cov[p, a, b] = s / n
                hess[p, a, b] = 0.0
        for i in range(n):
            add_sample_hess(th, i, kind, amp, centre, mat, ptr, r, hess[p], 1.0 / n)


# --------------------------------------------------------------------------- building


def _as_matrix(value: Any, dim: int, what: str) -> np.ndarray:
    """Scalar → s·I, length-d vector → diag, d×d nested list → matrix (symmetrised check)."""
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim == 0:
        return float(arr) * np.eye(dim)
    if arr.shape == (dim,):
        return np.diag(arr)
    if arr.shape == (dim, dim):
        if not np.allclose(arr, arr.T):
            raise ConfigError(f"{what}: matrix must be symmetric, got {arr.tolist()}")
        return arr
    raise ConfigError(f"{what}: expected a number, {dim} numbers or a {dim}x{dim} matrix")


def _term_arrays(term: Mapping[str, Any], dim: int, what: str) -> tuple[int, float, Any, Any]:
    if not isinstance(term, Mapping):
        raise ConfigError(f"{what}: a term must be a mapping with a 'kind', got {term!r}")
    kind_name = term.get("kind")
    if kind_name not in TERM_KINDS:
        raise ConfigError(
            f"{what}.kind: unknown term kind {kind_name!r} (known: {', '.join(TERM_KINDS)})"
        )
    known = {"kind", "amplitude", "centre", "width", "sharpness", "curvature"}
    extra = set(term) - known
    if extra:
        raise ConfigError(f"{what}: unknown key(s) {sorted(extra)} (known: {sorted(known)})")
    amp = np.asarray(number_entry(term, "amplitude", what, 1.0), dtype=np.float64)
    if amp.ndim != 0:
        raise ConfigError(f"{what}.amplitude: expected one number, got {term['amplitude']!r}")
    amp = float(amp)
    centre = np.asarray(number_entry(term, "centre", what, 0.0), dtype=np.float64)
    centre = np.broadcast_to(centre, (dim,)).copy() if centre.ndim == 0 else centre
    if centre.shape != (dim,):
        raise ConfigError(f"{what}.centre: expected {dim} number(s), got {term['centre']!r}")
    if TERM_KINDS[kind_name] == GAUSSIAN:
        if ("width" in term) == ("sharpness" in term):
            raise ConfigError(f"{what}: a gaussian term needs exactly one of width, sharpness")
        if "width" in term:
            w = np.asarray(number_entry(term, "width", what), dtype=np.float64)
            if np.any(w <= 0):
                raise ConfigError(f"{what}.width: must be > 0, got {term['width']!r}")
            mat = _as_matrix(1.0 / w**2, dim, f"{what}.width")
        else:
            k = np.asarray(number_entry(term, "sharpness", what), dtype=np.float64)
            if np.any(k <= 0):
                raise ConfigError(f"{what}.sharpness: must be > 0, got {term['sharpness']!r}")
            mat = _as_matrix(k, dim, f"{what}.sharpness")
    else:
        if "width" in term or "sharpness" in term:
            raise ConfigError(f"{what}: a quadratic term takes curvature, not width/sharpness")
        mat = _as_matrix(number_entry(term, "curvature", what), dim, f"{what}.curvature")
    return TERM_KINDS[kind_name], amp, centre, mat


def build_landscape(cfg: Mapping[str, Any]) -> Landscape:
    """Build a :class:`Landscape` from a plain mapping (a resolved Hydra node).

    Accepted forms (``dim`` defaults to 1):

    * ``datapoints: [[term, ...], ...]`` — one list of terms per sample;
    * ``reference: [term, ...]`` with ``shifts: {n, std[, direction, distribution]}`` (or a
      list of offsets) — sample i is the reference loss translated by its offset s_i
      (along the unit ``direction`` in 2-D), l_i(θ) = l(θ − s_i), so gradient noise grows
      with curvature. The offsets have mean 0 and population std ``std``; their shape is
      ``distribution`` (:func:`~sgdsweep.landscapes.shifts.distribution_shifts`, all
      deterministic): ``even`` (evenly spaced, the default), ``normal`` (normal quantiles),
      ``student_t`` with ``nu`` degrees of freedom (heavy-tailed quantiles) or ``outliers``
      with ``k`` far points at ±``scale`` beside n − k evenly spaced ones on [−1, 1];
    * ``_target_: module.function`` — a Python callable returning a Landscape, called
      with the remaining keys as keyword arguments.

    Optional ``basins: [{name, lower, upper}, ...]`` names the basins explicitly.
    Other scalar keys (e.g. ``width_left``) are parameters that terms reference
    by interpolation and are kept in ``Landscape.params``.
    """
    if not isinstance(cfg, Mapping):
        raise ConfigError(f"landscape: expected a mapping, got {type(cfg).__name__}")
    if "_target_" in cfg:
        return _from_target(cfg)
    dim = cfg.get("dim", 1)
    if dim not in (1, 2):
        raise ConfigError(f"landscape.dim: must be 1 or 2, got {dim!r}")
    name = str(cfg.get("name", "custom"))
    if ("datapoints" in cfg) == ("reference" in cfg):
        raise ConfigError("landscape: give exactly one of 'datapoints' or 'reference' + 'shifts'")
    if "datapoints" in cfg:
        samples = cfg["datapoints"]
        if not isinstance(samples, Sequence) or len(samples) == 0:
            raise ConfigError("landscape.datapoints: expected a non-empty list of term lists")
        per_sample = []
        for i, terms in enumerate(samples):
            if not isinstance(terms, Sequence) or isinstance(terms, str) or len(terms) == 0:
                raise ConfigError(f"landscape.datapoints[{i}]: expected a non-empty list of terms")
            per_sample.append(
                [_term_arrays(t, dim, f"landscape.datapoints[{i}][{j}]") for j, t in enumerate(terms)]
            )
    else:
        ref = cfg["reference"]
        if not isinstance(ref, Sequence) or isinstance(ref, str) or len(ref) == 0:
            raise ConfigError("landscape.reference: expected a non-empty list of terms")
        if "shifts" not in cfg:
            raise ConfigError("landscape.shifts: missing (needed with 'reference')")
        base = [_term_arrays(t, dim, f"landscape.reference[{j}]") for j, t in enumerate(ref)]
        shifts = _shift_vectors(cfg["shifts"], dim, "landscape.shifts")
        per_sample = [[(k, a, c + s, m) for (k, a, c, m) in base] for s in shifts]

    kinds, amps, centres, mats, ptr = [], [], [], [], [0]
    for terms in per_sample:
        for k, a, c, m in terms:
            kinds.append(k)
            amps.append(a)
            centres.append(c)
            mats.append(m)
        ptr.append(len(kinds))
    basins = _basins(cfg.get("basins"), dim)
    params = {
        k: v
        for k, v in cfg.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and k != "dim"
    }
    return Landscape(
        dim=dim,
        n=len(per_sample),
        kind=np.asarray(kinds, dtype=np.int64),
        amp=np.asarray(amps, dtype=np.float64),
        centre=np.ascontiguousarray(centres, dtype=np.float64).reshape(-1, dim),
        mat=np.ascontiguousarray(mats, dtype=np.float64).reshape(-1, dim, dim),
        ptr=np.asarray(ptr, dtype=np.int64),
        name=name,
        basins=basins,
        params=params,
    )


def _basins(spec: Any, dim: int) -> tuple[tuple[str, float, float], ...] | None:
    if spec is None:
        return None
    if dim != 1:
        raise ConfigError("landscape.basins: named basins are supported in 1-D only")
    out = []
    for j, b in enumerate(spec):
        what = f"landscape.basins[{j}]"
        if not isinstance(b, Mapping) or not {"name", "lower", "upper"} <= set(b):
            raise ConfigError(f"{what}: expected a mapping with name, lower, upper")
        lo, hi = float(b["lower"]), float(b["upper"])
        if not lo < hi:
            raise ConfigError(f"{what}: lower must be < upper, got {lo} >= {hi}")
        out.append((str(b["name"]), lo, hi))
    return tuple(out)


def _from_target(cfg: Mapping[str, Any]) -> Landscape:
    path = cfg["_target_"]
    module_name, _, attr = str(path).rpartition(".")
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError):
        raise ConfigError(f"landscape._target_: cannot import {path!r}") from None
    kwargs = {k: v for k, v in cfg.items() if k not in ("_target_", "name")}
    try:  # called once at validation: its failure is one line naming it, not a traceback
        result = fn(**kwargs)
    except ConfigError:
        raise
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [""])[0]
        raise ConfigError(f"landscape._target_: {path}: {type(exc).__name__}: {first}") from None
    if not isinstance(result, Landscape):
        raise ConfigError(f"landscape._target_: {path!r} returned {type(result).__name__}, "
                          "expected sgdsweep.Landscape")
    return result
