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
def _emit(i, lo, hi, sig, mass, k0, k1, f0, f1, lower, dx, n, acc, indices, data, nnz,
          pre_var, post_var, kick, clamped):
    """Deposit pieces k0..k1−1 as column i (cells f0..f1), append it to the CSC arrays."""
    upper = lower + n * dx
    m0 = 0.0
    m1 = 0.0
    m2 = 0.0
    for k in range(k0, k1):
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
    return nnz


@nb.njit(cache=True)
def _span(lo, hi, sig, k0, k1, lower, dx, n):
    a = np.inf
    z = -np.inf
    for k in range(k0, k1):
        a = min(a, lo[k] - TAIL * sig[k])
        z = max(z, hi[k] + TAIL * sig[k])
    return _cell_of(a, lower, dx, n), _cell_of(z, lower, dx, n)


@nb.njit(cache=True)
def _assemble(lower, dx, n, ptr, lo, hi, sig, mass):
    # Pass 1: the cell span of each column bounds its non-zeros.
    first = np.empty(n, dtype=np.int64)
    last = np.empty(n, dtype=np.int64)
    cap = 0
    for i in range(n):
        first[i], last[i] = _span(lo, hi, sig, ptr[i], ptr[i + 1], lower, dx, n)
        cap += last[i] - first[i] + 1
    indptr = np.zeros(n + 1, dtype=np.int64)
    indices = np.empty(cap, dtype=np.int32)
    data = np.empty(cap)
    pre_var = np.empty(n)
    post_var = np.empty(n)
    clamped = np.zeros(n)
    kick = np.zeros(n)
    acc = np.zeros(n)
    nnz = 0
    for i in range(n):
        nnz = _emit(i, lo, hi, sig, mass, ptr[i], ptr[i + 1], first[i], last[i], lower, dx, n, acc,
                    indices, data, nnz, pre_var, post_var, kick, clamped)
        indptr[i + 1] = nnz
    return indptr, indices[:nnz].copy(), data[:nnz].copy(), pre_var, post_var, kick, clamped


@nb.njit(cache=True)
def _minibatch_pieces(i, q, faces, sg, members, weights, step, lo, hi, sig, mass):
    """Pieces of column i: sub-cell s of cell i under minibatch k is [f_k(a), f_k(a′)] sorted."""
    K, b = members.shape
    for s in range(q):
        p0 = i * q + s
        for k in range(K):
            g0 = 0.0
            g1 = 0.0
            for r in range(b):
                g0 += sg[p0, members[k, r]]
                g1 += sg[p0 + 1, members[k, r]]
            y0 = faces[p0] - step * g0
            y1 = faces[p0 + 1] - step * g1
            t = s * K + k
            lo[t] = min(y0, y1)
            hi[t] = max(y0, y1)
            sig[t] = 0.0
            mass[t] = weights[k] / q


@nb.njit(cache=True)
def _assemble_minibatches(lower, dx, n, q, faces, sg, members, weights, step):
    K = members.shape[0]
    lo = np.empty(q * K)
    hi = np.empty(q * K)
    sig = np.empty(q * K)
    mass = np.empty(q * K)
    first = np.empty(n, dtype=np.int64)
    last = np.empty(n, dtype=np.int64)
    cap = 0
    for i in range(n):
        _minibatch_pieces(i, q, faces, sg, members, weights, step, lo, hi, sig, mass)
        first[i], last[i] = _span(lo, hi, sig, 0, q * K, lower, dx, n)
        cap += last[i] - first[i] + 1
    indptr = np.zeros(n + 1, dtype=np.int64)
    indices = np.empty(cap, dtype=np.int32)
    data = np.empty(cap)
    pre_var = np.empty(n)
    post_var = np.empty(n)
    clamped = np.zeros(n)
    kick = np.zeros(n)
    acc = np.zeros(n)
    nnz = 0
    for i in range(n):
        _minibatch_pieces(i, q, faces, sg, members, weights, step, lo, hi, sig, mass)
        nnz = _emit(i, lo, hi, sig, mass, 0, q * K, first[i], last[i], lower, dx, n, acc,
                    indices, data, nnz, pre_var, post_var, kick, clamped)
        indptr[i + 1] = nnz
    return indptr, indices[:nnz].copy(), data[:nnz].copy(), pre_var, post_var, kick, clamped


def assemble_minibatches(lower: float, dx: float, cells: int, quadrature: int, faces: np.ndarray,
                         sample_grads: np.ndarray, members: np.ndarray, weights: np.ndarray, step: float):
    """:func:`assemble` for the enumerated-minibatch operator, pieces made on the fly.

    ``faces`` (cells·q + 1,) sub-cell faces; ``sample_grads`` (cells·q + 1, n) per-sample
    gradients there; ``members`` (K, b) the sample indices of each minibatch (repeated
    for multisets); ``weights`` (K,); ``step`` = η/b. Sub-cell s of cell i under minibatch
    k becomes the piece [f_k(a), f_k(a′)] with f_k(θ) = θ − step·Σ_{r} g_{members[k, r]}(θ).
    Same returns as :func:`assemble`; memory O(cells·q·n + K·b), not O(cells·q·K).
    """
    indptr, indices, data, pre, post, kick, clamped = _assemble_minibatches(
        float(lower), float(dx), int(cells), int(quadrature), np.ascontiguousarray(faces, dtype=np.float64),
        np.ascontiguousarray(sample_grads, dtype=np.float64), np.ascontiguousarray(members, dtype=np.int64),
        np.ascontiguousarray(weights, dtype=np.float64), float(step))
    P = sp.csc_matrix((data, indices, indptr), shape=(cells, cells))
    return P, kick, pre, post, clamped


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
