"""Mean first-passage times from the Fokker–Planck operator (the backward equation).

The SG finite-volume generator M of :class:`~sgdsweep.fokker_planck.fp1d.FokkerPlanck1D`
is the rate matrix of a jump process on the cells: cell j jumps right at rate
A_{j+1}/h and left at rate C_j/h. Its mean time to reach the absorbing cells past
a threshold solves the discrete backward equation

    (A_{j+1}/h)(T_{j+1} − T_j) + (C_j/h)(T_{j−1} − T_j) = −1,   T = 0 past the threshold,

an O(N) recurrence (see :func:`_backward_solve`), second-order accurate to the exact MFPT of the Itô SDE
(D T″ − G T′ = −1) with a reflecting far wall. Unlike the double-integral formula
(:func:`sgdsweep.fokker_planck.references.mean_first_passage_time`) it stays well-posed where
D → 0 inside the domain (upwinding), as in the seed model's pit.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from sgdsweep.errors import ConfigError
from sgdsweep.fokker_planck.fp1d import FokkerPlanck1D
from sgdsweep.landscapes.grid import Grid1D


@nb.njit(cache=True)
def _backward_solve(A, C, h, lo, hi, T):
    """Solve the backward equation on cells lo..hi−1 (absorbing from hi on) into T.

    In the differences q_k = T_k − T_{k+1} it is a first-order recurrence of positive
    terms, q_k = (h + C_k q_{k−1}) / A_{k+1} (nothing to the left of lo), and
    T_k = Σ_{j≥k} q_j: no cancellation, so passage times of 1e40 keep the grid's accuracy
    (a tridiagonal elimination loses them to round-off once C/A passes 1/eps, and then
    returns anything from 1e13 to inf). A_{k+1} = 0: q_k = inf, cells up to k never
    pass, nor do the cells beyond that can step back into them (C > 0, inf carried by the
    recurrence); a one-way face (C_k = 0) starts afresh, so cells beyond a trap keep
    their finite times. A time past the float range is inf.
    """
    prev = 0.0
    for k in range(lo, hi):
        num = h + (C[k] * prev if C[k] > 0.0 and k > lo else 0.0)  # no inf·0 at a one-way face
        prev = num / A[k + 1] if A[k + 1] > 0.0 else np.inf
        T[k] = prev
    for k in range(hi - 2, lo - 1, -1):
        T[k] += T[k + 1]


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
    first, last = grid.end_centres  # not grid.centres: a huge grid is refused later, unallocated
    if not first <= threshold <= last:
        raise ConfigError(f"escape.threshold: {threshold:g} lies outside the density grid "
                          f"[{grid.lower:g}, {grid.upper:g}]; it must lie within [{first:.6g}, {last:.6g}], "
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
