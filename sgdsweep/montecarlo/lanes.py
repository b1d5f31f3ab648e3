"""The 1-D SIMD-lane kernels: every method but ``gd`` steps _LANES chains in lockstep.

They draw the same random numbers and form the same products and sums as the general
kernel (:mod:`.kernels`), except that Gaussian terms use the branch-free
:func:`~sgdsweep.montecarlo.fastexp.exp_nonpos` (relative error ≤ 4e-16) instead of
libm's exp and ``sme2``'s Hessian is summed in another order.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from sgdsweep.landscapes.landscape import Landscape
from sgdsweep.montecarlo.fastexp import exp_nonpos
from sgdsweep.montecarlo.kernels import (
    _NOISE_SALT,
    _RESHUFFLE,
    _WITH,
    _WITHOUT,
    SDE,
    SGD_NOISE,
    SME2,
    SVAG,
    _bridge_crossed,
    _draw_distinct,
    _em,
    _reshuffle,
)
from sgdsweep.montecarlo.rng import _GAMMA, _S32, mix64, next_normal_pair, side_normal_pair

# In 1-D, chains advance in blocks of _LANES (128: measured 5–7 % faster than 64, and
# below 64 loses; the block size does not change any chain's arithmetic) stepped in lockstep
# with every loop over the block free of calls and branches, so that the compiler runs it
# on SIMD lanes (one chain per lane, gathers for the sampled datapoints' parameters).
# This needs a branch-free exp: :func:`exp_nonpos`. Each lane's arithmetic is the same
# whether it runs vectorised or not, so results stay independent of the thread count.
# Samples are padded to T terms (zero terms contribute exactly 0).

_LANES = 128


def _padded_terms_1d(landscape: Landscape):
    """Per-sample term slots for the vectorised kernel, or None if it does not apply.

    Slot (i, k) holds centre c, matrix entry a and the two coefficients of the
    gradient (gg·exp(−a r²) + gq)·a r: gg = −2·amplitude for a Gaussian term,
    gq = amplitude for a quadratic one — the same products as ``add_sample_grad``.
    """
    kind, amp, centre, mat, ptr = landscape.arrays
    if landscape.dim != 1 or np.any((kind == 0) & (mat[:, 0, 0] <= 0)):
        return None  # a Gaussian with non-positive sharpness would need exp of x > 0
    n = landscape.n
    T = int(np.diff(ptr).max())
    cp, ap, gg, gq = (np.zeros(n * T) for _ in range(4))
    for i in range(n):
        for k, j in enumerate(range(ptr[i], ptr[i + 1])):
            cp[i * T + k] = centre[j, 0]
            ap[i * T + k] = mat[j, 0, 0]
            if kind[j] == 0:
                gg[i * T + k] = -2.0 * amp[j]
            else:
                gq[i * T + k] = amp[j]
    return T, cp, ap, gg, gq


# Per-lane bookkeeping shared by the SIMD kernels: branch-free, inlined into the lane loops.
@nb.njit(cache=True, inline="always")
def _settle(x, xn, es, ls, step, has_esc, thr, direction, lower, upper, bridged):
    """Move a live lane to xn; record its first passage and the step it left the grid."""
    live = ls < 0
    crossed = has_esc and live and es < 0 and (direction * (xn - thr) > 0.0 or bridged)
    left = live and not (lower <= xn <= upper)
    return (xn if live else x), (step if crossed else es), (step if left else ls)


@nb.njit(cache=True, inline="always")
def _load_lanes(pos, state, lost_step, escape_step, c0, x, st, ls, es):
    for c in range(x.shape[0]):
        x[c] = pos[c0 + c, 0]
        st[c] = state[c0 + c]
        ls[c] = lost_step[c0 + c]
        es[c] = escape_step[c0 + c]


@nb.njit(cache=True, inline="always")
def _store_lanes(pos, state, lost_step, escape_step, c0, x, st, ls, es):
    for c in range(x.shape[0]):
        pos[c0 + c, 0] = x[c]
        state[c0 + c] = st[c]
        lost_step[c0 + c] = ls[c]
        escape_step[c0 + c] = es[c]


@nb.njit(cache=True, inline="always")
def _lanes_batch_grad(g, x, st, idx, pc, pa, pg, pq, perm, cursor, c0, sampling, batch, nu, slots,
                      layout):
    """g[c] ← Σ_{i∈B_c} ∇l_i(x[c]) for one minibatch per lane (not divided by b).

    The same draws, products and sums as ``_batch_grad``. Per term slot it loads only the
    coefficient arrays some sample uses there (``layout``: which slots hold a Gaussian, a
    quadratic, and whether a, gg, gq are the same for every sample so that only the
    centre is gathered): the per-lane loads, not the arithmetic, bound this loop.
    """
    n, T, cp, ap, gg, gq = slots
    gauss_slot, quad_slot, shared = layout
    L = x.shape[0]
    for c in range(L):
        g[c] = 0.0
    if sampling == _RESHUFFLE:
        for c in range(L):
            if cursor[c0 + c] + batch > n:
                st[c] = _reshuffle(perm[c0 + c], st[c], n)
                cursor[c0 + c] = 0
    for jb in range(batch):
        if sampling == _WITH:
            for c in range(L):
                z = st[c] + _GAMMA
                st[c] = z
                idx[c] = np.int64(((mix64(z) >> _S32) * nu) >> _S32)
        elif sampling == _WITHOUT:
            for c in range(L):
                st[c], idx[c] = _draw_distinct(perm[c0 + c], st[c], n, jb)
        else:
            for c in range(L):
                idx[c] = perm[c0 + c, cursor[c0 + c] + jb]
        for k in range(T):
            if shared:
                # a, gg, gq equal for every sample (template landscapes): gather the centre only.
                ak, gk, qk = ap[k], gg[k], gq[k]
                for c in range(L):
                    pc[c] = cp[idx[c] * T + k]
                if gauss_slot[k]:
                    for c in range(L):
                        r = x[c] - pc[c]
                        ar = ak * r
                        g[c] += (gk * exp_nonpos(-(ar * r)) + qk) * ar
                else:
                    for c in range(L):
                        g[c] += qk * (ak * (x[c] - pc[c]))
            elif gauss_slot[k] and quad_slot[k]:
                for c in range(L):
                    j = idx[c] * T + k
                    pc[c] = cp[j]
                    pa[c] = ap[j]
                    pg[c] = gg[j]
                    pq[c] = gq[j]
                for c in range(L):
                    r = x[c] - pc[c]
                    ar = pa[c] * r
                    g[c] += (pg[c] * exp_nonpos(-(ar * r)) + pq[c]) * ar
            elif gauss_slot[k]:
                # No quadratic here: (g·e + 0)·ar is exactly g·e·ar, skip loading gq.
                for c in range(L):
                    j = idx[c] * T + k
                    pc[c] = cp[j]
                    pa[c] = ap[j]
                    pg[c] = gg[j]
                for c in range(L):
                    r = x[c] - pc[c]
                    ar = pa[c] * r
                    g[c] += pg[c] * exp_nonpos(-(ar * r)) * ar
            else:
                # No sample has a Gaussian in this slot: (0·e + q)·ar is exactly q·ar.
                for c in range(L):
                    j = idx[c] * T + k
                    pc[c] = cp[j]
                    pa[c] = ap[j]
                    pq[c] = gq[j]
                for c in range(L):
                    g[c] += pq[c] * (pa[c] * (x[c] - pc[c]))
    if sampling == _RESHUFFLE:
        for c in range(L):
            cursor[c0 + c] += batch


# The kernels are serial loops over lane blocks [b0, b1) that release the GIL; threads are
# dealt blocks by :func:`sgdsweep.montecarlo.threads.over_blocks`. As ``parallel=True``
# prange kernels they took 20 s (sgd) and 5 s (noisy) to compile on a cold cache, serial
# 6.5 s and 1.8 s: the first run of a sweep waits for them.
@nb.njit(cache=True, nogil=True)
def _advance_sgd_1d(ens, s0, s1, dyn, box, esc, slots, b0, b1):
    """1-D ``sgd`` / ``svag`` / ``sgd_noise``: lane blocks b0..b1 from step s0 to s1 (see
    ``_sgd_step``); the number of chains is a multiple of _LANES."""
    pos, state, perm, cursor, lost_step, escape_step = ens
    method, sampling, batch, lr = dyn.kernel, dyn.sampling, dyn.batch, dyn.lr
    svag_l, a1, a2, sigma = dyn.svag_l, dyn.a1, dyn.a2, dyn.sigma
    lower, upper = box
    has_esc, thr, direction = esc
    n, T, _cp, ap, gg, gq = slots
    L = _LANES
    subs = svag_l if method == SVAG else 1
    two = method == SVAG and svag_l > 1
    noisy = method == SGD_NOISE
    scale = lr / (subs * batch)  # lr / batch for sgd: subs·batch is an exact integer
    lr_sigma = lr * sigma
    nu = np.uint64(n)
    gauss_slot = np.zeros(T, dtype=np.bool_)
    quad_slot = np.zeros(T, dtype=np.bool_)
    shared = True
    for j in range(n * T):
        if gg[j] != 0.0:
            gauss_slot[j % T] = True
        if gq[j] != 0.0:
            quad_slot[j % T] = True
        k = j % T
        if ap[j] != ap[k] or gg[j] != gg[k] or gq[j] != gq[k]:
            shared = False
    layout = (gauss_slot, quad_slot, shared)
    for blk in range(b0, b1):
        c0 = blk * L
        x = np.empty(L)
        g = np.empty(L)
        g2 = np.empty(L)
        z0 = np.empty(L)
        idx = np.empty(L, dtype=np.int64)
        st = np.empty(L, dtype=np.uint64)
        ls = np.empty(L, dtype=np.int64)
        es = np.empty(L, dtype=np.int64)
        pc = np.empty(L)
        pa = np.empty(L)
        pg = np.empty(L)
        pq = np.empty(L)
        _load_lanes(pos, state, lost_step, escape_step, c0, x, st, ls, es)
        for s in range(s0, s1):
            for _ in range(subs):
                # svag's two minibatches through one call site: the inlined gradient loop,
                # the bulk of this kernel's code, is compiled once.
                for half in range(2 if two else 1):
                    _lanes_batch_grad(g if half == 0 else g2, x, st, idx, pc, pa, pg, pq, perm, cursor,
                                      c0, sampling, batch, nu, slots, layout)
                if two:
                    for c in range(L):
                        x[c], es[c], ls[c] = _settle(x[c], x[c] - scale * (a1 * g[c] + a2 * g2[c]),
                                                     es[c], ls[c], s + 1, has_esc, thr, direction,
                                                     lower, upper, False)
                elif noisy:
                    salt = _NOISE_SALT ^ mix64(np.uint64(s))
                    for c in range(L):
                        z0[c], _z1 = side_normal_pair(st[c], salt)
                    for c in range(L):
                        x[c], es[c], ls[c] = _settle(x[c], x[c] - (scale * g[c] + lr_sigma * z0[c]),
                                                     es[c], ls[c], s + 1, has_esc, thr, direction,
                                                     lower, upper, False)
                else:
                    for c in range(L):
                        x[c], es[c], ls[c] = _settle(x[c], x[c] - scale * g[c], es[c], ls[c], s + 1,
                                                     has_esc, thr, direction, lower, upper, False)
        _store_lanes(pos, state, lost_step, escape_step, c0, x, st, ls, es)


@nb.njit(cache=True, nogil=True)
def _advance_noisy_1d(ens, s0, s1, dyn, box, esc, slots, b0, b1):
    """1-D ``sde`` / ``sme2`` / ``langevin``: lane blocks b0..b1 (_LANES chains each) from
    step s0 to s1.

    Same arithmetic and normal draws as the general kernel (G and Σ as in
    ``mean_grad_cov``: sums in sample order, Σ = E[g²] − G² clipped at 0; for ``sme2``
    H = ∇²L summed the same way and the drift G + (η/2)·H·G).
    """
    pos, state, lost_step, escape_step = ens[0], ens[1], ens[4], ens[5]
    method, lr, noise_factor = dyn.kernel, dyn.lr, dyn.noise_factor
    substeps, temperature = dyn.substeps, dyn.temperature
    lower, upper = box
    has_esc, thr, direction = esc
    n, T, cp, ap, gg, gq = slots
    L = _LANES
    dt = lr / substeps
    sde_scale = math.sqrt(lr * noise_factor * dt)
    lan_scale = math.sqrt(2.0 * temperature * dt)
    sme2 = method == SME2
    sde = method == SDE or sme2
    half_lr_n = 0.5 * lr / n
    for blk in range(b0, b1):
        c0 = blk * L
        x = np.empty(L)
        g = np.empty(L)
        gi = np.empty(L)
        q2 = np.empty(L)
        hs = np.empty(L)
        z0 = np.empty(L)
        z1 = np.empty(L)
        st = np.empty(L, dtype=np.uint64)
        ls = np.empty(L, dtype=np.int64)
        es = np.empty(L, dtype=np.int64)
        _load_lanes(pos, state, lost_step, escape_step, c0, x, st, ls, es)
        for s in range(s0, s1):
            for m in range(substeps):
                for c in range(L):
                    g[c] = 0.0
                    q2[c] = 0.0
                    hs[c] = 0.0
                for i in range(n):
                    for c in range(L):
                        gi[c] = 0.0
                    for k in range(T):
                        j = i * T + k
                        cj, aj, ggj, gqj = cp[j], ap[j], gg[j], gq[j]
                        if sme2:
                            # ∇²(a_g e^(−a r²)) = gg·e·(1 − 2 a r²)·a, ∇²(a_q a r²/2) = gq·a
                            # (gg = −2 a_g): the terms of add_sample_hess in 1-D.
                            for c in range(L):
                                r = x[c] - cj
                                ar = aj * r
                                e = exp_nonpos(-(ar * r)) if ggj != 0.0 else 0.0
                                gi[c] += (ggj * e + gqj) * ar
                                hs[c] += (ggj * e * (1.0 - 2.0 * (ar * r)) + gqj) * aj
                        elif ggj != 0.0:
                            for c in range(L):
                                r = x[c] - cj
                                ar = aj * r
                                gi[c] += (ggj * exp_nonpos(-(ar * r)) + gqj) * ar
                        else:
                            # (0·e + q)·ar is exactly q·ar: skip the exp.
                            for c in range(L):
                                gi[c] += gqj * (aj * (x[c] - cj))
                    for c in range(L):
                        g[c] += gi[c]
                        q2[c] += gi[c] * gi[c]
                # Normals are paired within one SGD step, as in the general kernel.
                if m % 2 == 0:
                    for c in range(L):
                        st[c], z0[c], z1[c] = next_normal_pair(st[c])
                for c in range(L):
                    G = g[c] / n
                    z = z0[c] if m % 2 == 0 else z1[c]
                    if sde:
                        var = max(q2[c] / n - G * G, 0.0)
                        drift = G + half_lr_n * (hs[c] * G) if sme2 else G
                        xn = _em(x[c], drift, sde_scale * math.sqrt(var), z, dt)
                        var_dt = sde_scale * sde_scale * var
                    else:
                        xn = _em(x[c], G, lan_scale, z, dt)
                        var_dt = lan_scale * lan_scale
                    bridged = has_esc and _bridge_crossed(direction * (thr - x[c]),
                                                          direction * (thr - xn), var_dt, st[c], m)
                    x[c], es[c], ls[c] = _settle(x[c], xn, es[c], ls[c], s + 1, has_esc, thr,
                                                 direction, lower, upper, bridged)
        _store_lanes(pos, state, lost_step, escape_step, c0, x, st, ls, es)

