"""Mean first-passage times from the Fokker–Planck operator (the backward equation).

The SG finite-volume generator M of :class:`~sgdsweep.fokker_planck.FokkerPlanck1D`
is the rate matrix of a jump process on the cells: cell j jumps right at rate
A_{j+1}/h and left at rate C_j/h. Its mean time to reach the absorbing cells past
a threshold solves the discrete backward equation

    (A_{j+1}/h)(T_{j+1} − T_j) + (C_j/h)(T_{j−1} − T_j) = −1,   T = 0 past the threshold,

a tridiagonal O(N) solve, second-order accurate to the exact MFPT of the Itô SDE
(D T″ − G T′ = −1) with a reflecting far wall. Unlike the double-integral formula
(:func:`sgdsweep.references.mean_first_passage_time`) it stays well-posed where
D → 0 inside the domain (upwinding), as in the seed model's pit.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from sgdsweep.fokker_planck import FokkerPlanck1D


@nb.njit(cache=True)
def _backward_solve(A, C, h, lo, hi, T):
    """Solve the backward equation on cells lo..hi−1 (absorbing outside) into T."""
    n = hi - lo
    cp = np.empty(n)
    dp = np.empty(n)
    for k in range(n):
        j = lo + k
        sub = C[j] / h if k > 0 else 0.0  # the left neighbour is absorbing (or the wall)
        sup = A[j + 1] / h
        diag = C[j] / h + A[j + 1] / h
        m = diag + (sub * cp[k - 1] if k > 0 else 0.0)
        if m <= 0.0:
            # No path to the absorbing set from here: the passage time is infinite.
            for i in range(T.shape[0]):
                T[i] = np.inf
            return
        cp[k] = -sup / m  # for the last cell, sup leads into the absorbing set (T = 0)
        dp[k] = (1.0 + (sub * dp[k - 1] if k > 0 else 0.0)) / m
    T[hi - 1] = dp[n - 1]
    for k in range(n - 2, -1, -1):
        T[lo + k] = dp[k] - cp[k] * T[lo + k + 1]


def mean_passage_times(fp: FokkerPlanck1D, threshold: float, direction: int) -> np.ndarray:
    """Mean first-passage time from each cell to the threshold (SDE time units), (N,).

    ``direction`` +1: passage means reaching a cell whose centre is ≥ ``threshold``;
    −1: ≤ ``threshold``. Cells already past it have T = 0; unreachable ones T = inf.
    """
    x = fp.grid.centres
    past = x >= threshold if direction > 0 else x <= threshold
    T = np.zeros(fp.grid.cells)
    if past.all():
        return T
    transient = np.flatnonzero(~past)
    lo, hi = int(transient[0]), int(transient[-1]) + 1
    if direction > 0:
        _backward_solve(fp.A, fp.C, fp.grid.dx, lo, hi, T)
    else:
        # Mirror the chain so the absorbing cells lie to the right.
        A_m, C_m = fp.C[::-1].copy(), fp.A[::-1].copy()
        Tm = np.zeros_like(T)
        n = fp.grid.cells
        _backward_solve(A_m, C_m, fp.grid.dx, n - hi, n - lo, Tm)
        T = Tm[::-1].copy()
    return T
