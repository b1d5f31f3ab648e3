"""Column-stochastic sparse assembly: spread interval masses over the cells of a 1-D grid.

Every column i of a transfer operator is built from a list of *image pieces*: a mass m
spread uniformly over an interval [lo, hi] (the image of a sub-cell of cell i under one
map), optionally blurred by a centred Gaussian of standard deviation σ. The fraction of
a piece below a point e is exact:

* σ = 0: clip((e − lo)/(hi − lo), 0, 1) (a point piece lo = hi belongs to the cell on
  its right, as in the Monte Carlo histograms);
* σ > 0: (σ/(hi − lo)) [Ψ((e − lo)/σ) − Ψ((e − hi)/σ)], Ψ(z) = zΦ(z) + φ(z) the
  antiderivative of the normal CDF Φ (Φ((e − mid)/σ) when hi − lo < 1e-4 σ, where the
  difference cancels; the neglected width term is O((hi − lo)²/σ²) < 1e-8).

Mass in cell j is the difference of that fraction at its two faces. **Boundary
treatment:** mass that lands below the grid is put into the first cell, above it into
the last cell (the outer faces count as −∞ and +∞): nothing leaves, like the reflecting
walls of the Fokker–Planck solver; :func:`assemble` reports how much was clamped.
Gaussian tails beyond 8.5σ of a piece are dropped (< 2e-17 of its mass) and each column
is finally divided by its own total, so columns sum to 1 to round-off.

Alongside the matrix, the kernel returns per column the *projection kick*: the projected
column equals the exact image followed by a random displacement K (from a point of a
piece to the point of the piecewise-uniform cell mass it is moved to), and

    kick_i = Σ_pieces m · [Σ_j frac_j ((x_j − mid)² + dx²/12) − (w²/12 + σ²)] / Σ m

is its mean square about each piece's own mean: the numerical diffusion of one step
(≤ dx²/3 per piece: r(1 − r)dx² for a shift by r·dx, dx²/4 + dx²/12 for a point on a
face). The column's variance differs from the exact one by this plus a cross term
between the piece positions and their O(dx) mean shifts, which changes sign from column
to column and averages out; the pre- and post-projection variances are returned too.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np
import scipy.sparse as sp

_SQRT2 = math.sqrt(2.0)
_INV_SQRT2PI = 1.0 / math.sqrt(2.0 * math.pi)
#: Gaussian pieces are cut at this many standard deviations.
TAIL = 8.5


@nb.njit(cache=True, inline="always")
def _phi_cdf(z):
    return 0.5 * math.erfc(-z / _SQRT2)


@nb.njit(cache=True, inline="always")
def _psi(z):
    return z * _phi_cdf(z) + _INV_SQRT2PI * math.exp(-0.5 * z * z)


@nb.njit(cache=True, inline="always")
def _below(e, lo, hi, sig):
    """Fraction of the (blurred) uniform piece on [lo, hi] below the point e."""
    w = hi - lo
    if sig <= 0.0:
        if w <= 0.0:
            return 1.0 if e > lo else 0.0
        return min(max((e - lo) / w, 0.0), 1.0)
    if w < 1e-4 * sig:
        return _phi_cdf((e - 0.5 * (lo + hi)) / sig)
    f = sig / w * (_psi((e - lo) / sig) - _psi((e - hi) / sig))
    return min(max(f, 0.0), 1.0)


@nb.njit(cache=True, inline="always")
def _cell_of(x, lower, dx, n):
    k = math.floor((x - lower) / dx)
    if k < 0:
        return 0
    if k > n - 1:
        return n - 1
    return int(k)


@nb.njit(cache=True)
def _assemble(lower, dx, n, ptr, lo, hi, sig, mass):
    # Pass 1: the cell span of each column bounds its non-zeros.
    first = np.empty(n, dtype=np.int64)
    last = np.empty(n, dtype=np.int64)
    cap = 0
    for i in range(n):
        a = np.inf
        z = -np.inf
        for k in range(ptr[i], ptr[i + 1]):
            a = min(a, lo[k] - TAIL * sig[k])
            z = max(z, hi[k] + TAIL * sig[k])
        first[i] = _cell_of(a, lower, dx, n)
        last[i] = _cell_of(z, lower, dx, n)
        cap += last[i] - first[i] + 1
    indptr = np.zeros(n + 1, dtype=np.int64)
    indices = np.empty(cap, dtype=np.int32)
    data = np.empty(cap)
    pre_var = np.empty(n)
    post_var = np.empty(n)
    clamped = np.zeros(n)
    kick = np.zeros(n)
    acc = np.zeros(n)
    upper = lower + n * dx
    nnz = 0
    for i in range(n):
        f0 = first[i]
        f1 = last[i]
        m0 = 0.0
        m1 = 0.0
        m2 = 0.0
        for k in range(ptr[i], ptr[i + 1]):
            m = mass[k]
            a = lo[k]
            z = hi[k]
            s = sig[k]
            mid = 0.5 * (a + z)
            m0 += m
            m1 += m * mid
            m2 += m * (mid * mid + (z - a) * (z - a) / 12.0 + s * s)
            j0 = _cell_of(a - TAIL * s, lower, dx, n)
            j1 = _cell_of(z + TAIL * s, lower, dx, n)
            # Outer faces of the span: the grid walls count as ∓∞ (clamping).
            prev = 0.0 if j0 == 0 else _below(lower + j0 * dx, a, z, s)
            sq = 0.0
            for j in range(j0, j1 + 1):
                nxt = 1.0 if j == n - 1 else _below(lower + (j + 1) * dx, a, z, s)
                fr = nxt - prev
                acc[j] += m * fr
                r = lower + (j + 0.5) * dx - mid
                sq += fr * (r * r + dx * dx / 12.0)
                prev = nxt
            kick[i] += m * (sq - (z - a) * (z - a) / 12.0 - s * s)
            clamped[i] += m * (_below(lower, a, z, s) + 1.0 - _below(upper, a, z, s))
        mean = m1 / m0
        pre_var[i] = m2 / m0 - mean * mean
        tot = 0.0
        for j in range(f0, f1 + 1):
            tot += acc[j]
        q1 = 0.0
        q2 = 0.0
        for j in range(f0, f1 + 1):
            v = acc[j] / tot
            acc[j] = 0.0
            if v > 0.0:
                x = lower + (j + 0.5) * dx
                q1 += v * x
                q2 += v * x * x
                indices[nnz] = j
                data[nnz] = v
                nnz += 1
        post_var[i] = q2 - q1 * q1 + dx * dx / 12.0
        clamped[i] /= m0
        kick[i] /= m0
        indptr[i + 1] = nnz
    return indptr, indices[:nnz].copy(), data[:nnz].copy(), pre_var, post_var, kick, clamped


def assemble(lower: float, dx: float, cells: int, ptr: np.ndarray, lo: np.ndarray, hi: np.ndarray,
             sig: np.ndarray, mass: np.ndarray):
    """Assemble the column-stochastic CSC matrix of the pieces (see module docstring).

    Pieces of column i are ``lo/hi/sig/mass[ptr[i]:ptr[i+1]]`` (lo ≤ hi, σ ≥ 0, mass > 0).
    Returns ``(matrix, kick, pre_var, post_var, clamped)``: the (cells, cells) CSC matrix P
    with P[j, i] the probability of moving from cell i to cell j; per column the mean-square
    projection kick (the numerical diffusion of the step, θ²), the exact variance of its
    pieces, the variance of the projected column (piecewise uniform), and the fraction of
    its mass clamped into an edge cell.
    """
    indptr, indices, data, pre, post, kick, clamped = _assemble(
        float(lower), float(dx), int(cells), np.ascontiguousarray(ptr, dtype=np.int64),
        np.ascontiguousarray(lo, dtype=np.float64), np.ascontiguousarray(hi, dtype=np.float64),
        np.ascontiguousarray(sig, dtype=np.float64), np.ascontiguousarray(mass, dtype=np.float64))
    P = sp.csc_matrix((data, indices, indptr), shape=(cells, cells))
    return P, kick, pre, post, clamped
