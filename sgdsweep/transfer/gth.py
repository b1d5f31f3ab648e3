"""Stationary law of a banded stochastic matrix by GTH state reduction.

Grassmann–Taksar–Heyman elimination removes states one by one from the last, routing
the flow through the removed state to its neighbours, and computes each "exit rate" as
a *sum* of the remaining off-diagonal probabilities instead of 1 − P[k, k]. No
subtraction ever occurs, so every entry of the invariant vector is computed to a few
ulps *relative* accuracy however small it is and however small the spectral gap
(metastable chains with gaps of 1e-13 and tails of 1e-20 alike), where an LU solve of
the singular system is only accurate to ~eps/gap in the well masses.

Elimination without pivoting keeps the band of a banded matrix, so the cost is
O(N·l·u) for l sub- and u super-diagonals (transfer operators of SGD are banded: a step
moves mass a bounded number of cells).
"""

from __future__ import annotations

import numba as nb
import numpy as np
import scipy.sparse as sp


def bandwidths(P: sp.csc_matrix) -> tuple[int, int]:
    """(l, u): P[j, i] ≠ 0 only for i − u ≤ j ≤ i + l."""
    C = P.tocoo()
    if C.nnz == 0:
        return 0, 0
    d = C.row.astype(np.int64) - C.col.astype(np.int64)
    return int(max(d.max(), 0)), int(max(-d.min(), 0))


@nb.njit(cache=True)
def _gth(B, low, up, n, out):
    """B[i, j − i + up] = P[j, i] (column i, rows i − up … i + low). False if reducible."""
    s = np.empty(n)
    for k in range(n - 1, 0, -1):
        tot = 0.0
        for j in range(max(0, k - up), k):
            tot += B[k, j - k + up]
        if not tot > 0.0:
            return False
        s[k] = tot
        for i in range(max(0, k - low), k):
            pki = B[i, k - i + up]
            if pki == 0.0:
                continue
            f = pki / tot
            for j in range(max(0, k - up), k):
                if j == i:
                    continue
                pjk = B[k, j - k + up]
                if pjk != 0.0:
                    B[i, j - i + up] += f * pjk
    out[0] = 1.0
    for k in range(1, n):
        acc = 0.0
        for i in range(max(0, k - low), k):
            acc += out[i] * B[i, k - i + up]
        out[k] = acc / s[k]
        if out[k] > 1e250:
            # The law spans more than the float range (a deep well beside a tail of
            # e^-800): rescale what is done so far; the smallest entries underflow to 0.
            for i in range(k + 1):
                out[i] *= 1e-250
    tot = 0.0
    for k in range(n):
        tot += out[k]
    for k in range(n):
        out[k] /= tot
    return True


def gth_stationary(P: sp.csc_matrix) -> np.ndarray | None:
    """Invariant law of the irreducible column-stochastic P (None if reducible)."""
    P = sp.csc_matrix(P)
    n = P.shape[0]
    low, up = bandwidths(P)
    C = P.tocoo()
    B = np.zeros((n, low + up + 1))
    B[C.col, C.row - C.col + up] = C.data
    out = np.empty(n)
    return out if _gth(B, low, up, n, out) else None


def gth_cost(P: sp.csc_matrix) -> int:
    """Multiply-adds of :func:`gth_stationary` (N·l·u)."""
    low, up = bandwidths(P)
    return P.shape[0] * max(low, 1) * max(up, 1)
