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

from sgdsweep.errors import ConfigError
from sgdsweep.fokker_planck import FokkerPlanck1D
from sgdsweep.grid import Grid1D


@nb.njit(cache=True)
def _backward_solve(A, C, h, lo, hi, T):
    """Solve the backward equation on cells lo..hi−1 (absorbing from hi on) into T.

    A vanishing pivot at cell k means cells s..k (s: the start of the current stretch)
    have no rate out towards the absorbing set (e.g. D = 0 and the drift points away):
    their passage time is infinite, and so is that of every further cell that can step
    back into them (C > 0). Elimination restarts at the first cell that cannot (C = 0,
    a one-way face), so the cells beyond a trap keep their finite times.
    """
    n = hi - lo
    cp = np.empty(n)
    dp = np.empty(n)
    s = 0  # first cell (offset from lo) of the stretch being eliminated
    k = 0
    while k < n:
        j = lo + k
        sub = C[j] / h if k > s else 0.0  # the left neighbour is a trap, the wall, or beyond s
        sup = A[j + 1] / h
        diag = C[j] / h + A[j + 1] / h
        m = diag + (sub * cp[k - 1] if k > s else 0.0)
        if m <= 0.0:
            k += 1
            while k < n and C[lo + k] > 0.0:
                k += 1
            for i in range(lo + s, lo + k):
                T[i] = np.inf
            s = k
            continue
        cp[k] = -sup / m  # for the last cell, sup leads into the absorbing set (T = 0)
        dp[k] = (1.0 + (sub * dp[k - 1] if k > s else 0.0)) / m
        k += 1
    if s == n:
        return
    T[hi - 1] = dp[n - 1]
    for k in range(n - 2, s - 1, -1):
        T[lo + k] = dp[k] - cp[k] * T[lo + k + 1]


def _passage_to_cell(fp: FokkerPlanck1D, k: int, direction: int) -> np.ndarray:
    """MFPT from every cell to cell k (absorbing k and beyond, in ``direction``)."""
    n = fp.grid.cells
    T = np.zeros(n)
    if direction > 0:
        if k > 0:
            _backward_solve(fp.A, fp.C, fp.grid.dx, 0, k, T)
        return T
    # Mirror the chain so the absorbing cells lie to the right.
    if k < n - 1:
        _backward_solve(fp.C[::-1].copy(), fp.A[::-1].copy(), fp.grid.dx, 0, n - 1 - k, T)
    return T[::-1].copy()


def check_threshold(threshold: float, grid: Grid1D) -> None:
    """Raise ConfigError unless ``threshold`` lies within the cell centres of the FP ``grid``
    (where :func:`mean_passage_times` can place it), before anything is computed."""
    x = grid.centres
    if not x[0] <= threshold <= x[-1]:
        raise ConfigError(f"escape.threshold: {threshold:g} lies outside the density grid "
                          f"[{grid.lower:g}, {grid.upper:g}]; it must lie within [{x[0]:.6g}, {x[-1]:.6g}], "
                          "the first and last cell centres of the Fokker–Planck grid")


def mean_passage_times(fp: FokkerPlanck1D, threshold: float, direction: int) -> np.ndarray:
    """Mean first-passage time from each cell to ``threshold`` (SDE time units), shape (N,).

    ``direction`` +1: passage upwards (θ reaches the threshold from below); −1: downwards.
    The chain is absorbed on reaching a cell centre; the passage time to a threshold
    between two centres is interpolated linearly between the times to those two centres,
    which keeps second-order accuracy. Cells already past it have T = 0; cells with
    no path to it have T = inf.
    """
    x = fp.grid.centres
    n = fp.grid.cells
    # k_far: first centre at or past the threshold; k_near: the last one before it.
    if direction > 0:
        k_far = int(np.searchsorted(x, threshold, side="left"))
        if k_far >= n:
            raise ValueError(f"threshold {threshold} lies beyond the grid's last cell centre")
        k_near = k_far - 1
    else:
        k_far = int(np.searchsorted(x, threshold, side="right")) - 1
        if k_far < 0:
            raise ValueError(f"threshold {threshold} lies below the grid's first cell centre")
        k_near = k_far + 1
    T_far = _passage_to_cell(fp, k_far, direction)
    if k_near < 0 or k_near >= n or x[k_far] == threshold:
        return T_far
    w = (threshold - x[k_near]) / (x[k_far] - x[k_near])
    T_near = _passage_to_cell(fp, k_near, direction)
    past = (x >= threshold) if direction > 0 else (x <= threshold)
    with np.errstate(invalid="ignore"):
        T = (1.0 - w) * T_near + w * T_far
    T[past] = 0.0
    return T
