"""Binned distribution of the minibatch step when the minibatches are too many to enumerate.

At a point θ the step of one minibatch is −η ḡ_B = Σ_{draws} u_i with u_i = −η g_i(θ)/b:
the sum of b per-sample updates. Each u_i is put on the lattice h·ℤ by splitting it
linearly between its two neighbouring lattice points (weights 1 − f and f), then

* ``with_replacement``: the b draws are iid, so the step's law is the b-fold
  convolution of the binned one-draw law;
* ``without_replacement``: a uniform b-subset, built exactly by sequential selection
  (sample i is taken with probability (b − c)/(n − i) when c are taken so far), a
  dynamic programme over (taken, lattice sum).

**Error.** The linear split keeps every draw's mean and adds at most h²/4 to its
variance, so the step's mean is exact and its variance is overestimated by at most
b·h²/4 (with replacement; fewer than b·h²/4 without). With h = dx/(2√b) that is at most
dx²/16 per step, a quarter of the worst projection diffusion of the operator itself.
Atoms below 1e-16 of a point's largest atom are dropped (the column is renormalised).
"""

from __future__ import annotations

import numba as nb
import numpy as np

#: Atoms lighter than this fraction of the heaviest one at the same point are dropped.
ATOM_CUT = 1e-16


@nb.njit(cache=True)
def _one_draw(u, h, kmin, out):
    n = u.shape[0]
    for j in range(out.shape[0]):
        out[j] = 0.0
    for i in range(n):
        x = u[i] / h
        k = int(np.floor(x))
        f = x - k
        out[k - kmin] += (1.0 - f) / n
        out[k + 1 - kmin] += f / n


@nb.njit(cache=True)
def _step_law(u, b, h, kmin, kmax, without, out):
    """Law of the binned step at one point on lattice offsets b·kmin … b·kmax, into ``out``."""
    n = u.shape[0]
    L1 = kmax - kmin + 1
    Lb = b * (L1 - 1) + 1
    if not without:
        d1 = np.empty(L1)
        _one_draw(u, h, kmin, d1)
        cur = np.zeros(Lb)
        cur[:L1] = d1
        length = L1
        for _ in range(1, b):
            nxt = np.zeros(Lb)
            for a in range(length):
                ca = cur[a]
                if ca == 0.0:
                    continue
                for c in range(L1):
                    nxt[a + c] += ca * d1[c]
            cur = nxt
            length += L1 - 1
        out[:] = cur
        return
    # f[c, s]: probability that c of the samples seen so far are taken, with binned sum s.
    f = np.zeros((b + 1, Lb))
    f[0, 0] = 1.0
    for i in range(n):
        x = u[i] / h
        k = int(np.floor(x)) - kmin
        fr = x - np.floor(x)
        top = min(i + 1, b)
        for c in range(top, -1, -1):
            # Skip sample i with probability 1 − (b − c)/(n − i), or take it from c − 1 taken.
            p_skip = 1.0 - (b - c) / (n - i)
            for s in range(Lb):
                f[c, s] *= p_skip
            if c == 0:
                continue
            p_take = (b - (c - 1)) / (n - i)
            for s in range(Lb):
                v = f[c - 1, s]
                if v == 0.0:
                    continue
                add = v * p_take
                f[c, s + k] += add * (1.0 - fr)
                if fr > 0.0:
                    f[c, s + k + 1] += add * fr
    out[:] = f[b]


@nb.njit(cache=True)
def _all_laws(U, b, h, kmin, kmax, off, without, probs):
    for m in range(U.shape[0]):
        _step_law(U[m], b, h, kmin[m], kmax[m], without, probs[off[m]:off[m + 1]])


def binned_step_laws(U: np.ndarray, batch_size: int, h: float, without: bool):
    """Binned laws of the minibatch step at M points.

    ``U`` (M, n): per-sample updates u_i = −η g_i/b at each point. Returns ``(start, off,
    probs)``: the law at point m has atoms at lattice offsets ``start[m] + k`` (k = 0, 1, …;
    displacement (start[m] + k)·h) with probabilities ``probs[off[m]:off[m+1]]``.
    """
    U = np.ascontiguousarray(U, dtype=np.float64)
    b = int(batch_size)
    kmin = np.floor(U.min(axis=1) / h).astype(np.int64)
    kmax = np.floor(U.max(axis=1) / h).astype(np.int64) + 1
    L1 = kmax - kmin + 1
    Lb = b * (L1 - 1) + 1
    off = np.concatenate(([0], np.cumsum(Lb))).astype(np.int64)
    probs = np.empty(int(off[-1]))
    _all_laws(U, b, float(h), kmin, kmax, off, bool(without), probs)
    return b * kmin, off, probs
