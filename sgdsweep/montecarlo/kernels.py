"""The general compiled step kernels (any dimension, any method) and the pieces the SIMD
kernels of :mod:`.lanes` share with them.

A kernel id names a step rule; a method (:mod:`sgdsweep.methods.registry`) declares which
one it runs and on which random stream. See :mod:`sgdsweep.montecarlo.run` for the methods'
definitions and the lost-chain convention.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numba as nb
import numpy as np

from sgdsweep.landscapes.landscape import add_sample_grad, add_sample_hess, mean_grad, mean_grad_cov
from sgdsweep.landscapes.noise import SAMPLINGS
from sgdsweep.montecarlo.fastexp import exp_nonpos
from sgdsweep.montecarlo.rng import mix64, next_below, next_normal_pair, side_normal_pair, side_uniform

#: Kernel ids: the step rules the compiled kernels implement (``Method.kernel``).
SGD, SDE, LANGEVIN, GD, SVAG, SGD_NOISE, SME2 = 0, 1, 2, 3, 4, 5, 6
#: Kernels stepped like SGD (minibatches; they need per-chain permutations for sampling
#: without replacement) and the one that reads a temperature.
MINIBATCH_KERNELS = (SGD, SVAG, SGD_NOISE)
#: Each kernel's own parameters (the fields of its method's config section) and their defaults.
KERNEL_PARAMS = {SVAG: {"l": 1}, SGD_NOISE: {"sigma": 0.0}}
_WITH, _WITHOUT, _RESHUFFLE = 0, 1, 2
SAMPLING_IDS = {s: k for k, s in enumerate(SAMPLINGS)}
assert SAMPLING_IDS == {"with_replacement": _WITH, "without_replacement": _WITHOUT, "reshuffle": _RESHUFFLE}


class Dyn(NamedTuple):
    """The dynamics a kernel runs (Numba types it as a named record)."""

    kernel: int  # a kernel id
    sampling: int  # a SAMPLING_IDS value
    batch: int
    lr: float
    noise_factor: float  # Σ_b/Σ
    substeps: int  # Euler–Maruyama steps per SGD step
    temperature: float  # langevin's T (0.0 otherwise)
    svag_l: int  # svag: l and its two minibatch weights
    a1: float
    a2: float
    sigma: float  # sgd_noise: σ


def svag_coefficients(l: int) -> tuple[float, float]:
    """SVAG's minibatch weights (a₁, a₂) = ((1 + √(2l−1))/2, (1 − √(2l−1))/2).

    a₁ + a₂ = 1 (the mean gradient is unbiased) and a₁² + a₂² = l, so a₁ḡ_{B1} + a₂ḡ_{B2}
    of two independent minibatches has l times the noise covariance of one; with steps
    η/l the noise per unit time is that of SGD while the drift is resolved l times finer.
    l = 1 gives exactly (1.0, 0.0).
    """
    root = math.sqrt(2 * l - 1)
    return 0.5 * (1.0 + root), 0.5 * (1.0 - root)



# Chains advance in blocks of _BLOCK stepped in lockstep: one SGD step is a short
# dependent chain of operations, and interleaving independent chains lets the CPU
# overlap them. The block size is fixed, so the arithmetic does not depend on threads.
_BLOCK = 8


# Kernel arguments travel in bundles (tuples, which Numba types as records):
#   ens   = (pos, state, perm, cursor, lost_step, escape_step)  per-chain state (padded chains)
#   dyn   = :class:`Dyn`  the step rule and its parameters
#   box   = (lower, upper)  the grid box: arrays (d,) in the general kernel, floats in the 1-D ones
#   esc   = (has_esc, thr, direction)  first-passage threshold
#   terms = (kind, amp, centre, mat, ptr)  ``Landscape.arrays`` (general kernel)
#   slots = (n, T, cp, ap, gg, gq)  ``_padded_terms_1d`` (SIMD kernels)
#   work  = (scratch, covs)  per-chain scratch of the general kernel


@nb.njit(cache=True, inline="always")
def _check(c, th, step, box, esc, lost_step, escape_step):
    """Record a first passage, then freeze the chain if it left the box. True if lost."""
    lower, upper = box
    has_esc, thr, direction = esc
    if has_esc and escape_step[c] < 0 and direction * (th[0] - thr) > 0.0:
        escape_step[c] = step
    for a in range(th.shape[0]):
        # NaN fails both comparisons, so divergence is caught here too.
        if not (lower[a] <= th[a] <= upper[a]):
            lost_step[c] = step
            return True
    return False


# Minibatch sampling and the Euler–Maruyama update, shared by the general and the SIMD kernels.
@nb.njit(cache=True, inline="always")
def _reshuffle(row, st, n):
    """A fresh uniform permutation of ``row`` (Fisher–Yates from the top); the new stream state."""
    for j in range(n - 1, 0, -1):
        st, k = next_below(st, j + 1)
        i = row[k]
        row[k] = row[j]
        row[j] = i
    return st


@nb.njit(cache=True, inline="always")
def _draw_distinct(row, st, n, j):
    """Index j of a batch without replacement: one partial Fisher–Yates step, so the first
    b entries of ``row`` become a uniform b-subset whatever order the permutation is in."""
    st, k = next_below(st, n - j)
    k += j
    i = row[k]
    row[k] = row[j]
    row[j] = i
    return st, i


@nb.njit(cache=True, inline="always")
def _em(x, G, amp, z, dt):
    """One Euler–Maruyama step x − G dt + amp·z (amp·z: the noise increment, z standard normal)."""
    return x + (-G * dt + amp * z)


@nb.njit(cache=True)
def _batch_grad(c, th, ens, dyn, terms, r, g, st):
    """g ← Σ_{i∈B} ∇l_i(θ) over one minibatch B of chain c (not divided by b); the new state."""
    perm, cursor = ens[2], ens[3]
    sampling, batch = dyn.sampling, dyn.batch
    kind, amp, centre, mat, ptr = terms
    d = th.shape[0]
    n = ptr.shape[0] - 1
    for a in range(d):
        g[a] = 0.0
    if sampling == _WITH:
        for _ in range(batch):
            st, i = next_below(st, n)
            add_sample_grad(th, i, kind, amp, centre, mat, ptr, r, g, 1.0)
    elif sampling == _WITHOUT:
        for j in range(batch):
            st, i = _draw_distinct(perm[c], st, n, j)
            add_sample_grad(th, i, kind, amp, centre, mat, ptr, r, g, 1.0)
    else:
        if cursor[c] + batch > n:
            st = _reshuffle(perm[c], st, n)
            cursor[c] = 0
        for j in range(cursor[c], cursor[c] + batch):
            add_sample_grad(th, perm[c, j], kind, amp, centre, mat, ptr, r, g, 1.0)
        cursor[c] += batch
    return st


# Not inline: inlining this into the block loop, with _check inlined into it and the bundles
# passed through, lost _check's escape record (Numba 0.6x), silently.
@nb.njit(cache=True)
def _sgd_step(c, s, th, ens, dyn, box, esc, terms, r, g, g2):
    """One SGD step of ``sgd``, ``svag`` (l substeps of η/l, two minibatches each) or
    ``sgd_noise`` (the minibatch gradient plus σ·z)."""
    state, lost_step, escape_step = ens[1], ens[4], ens[5]
    method, batch, lr = dyn.kernel, dyn.batch, dyn.lr
    svag_l, a1, a2, sigma = dyn.svag_l, dyn.a1, dyn.a2, dyn.sigma
    d = th.shape[0]
    st = state[c]
    subs = svag_l if method == SVAG else 1
    two = method == SVAG and svag_l > 1
    # subs·batch is an exact integer: for sgd (and svag l = 1) this is lr / batch.
    step_scale = lr / (subs * batch)
    lr_sigma = lr * sigma
    for _ in range(subs):
        st = _batch_grad(c, th, ens, dyn, terms, r, g, st)
        if two:
            st = _batch_grad(c, th, ens, dyn, terms, r, g2, st)
            for a in range(d):
                th[a] -= step_scale * (a1 * g[a] + a2 * g2[a])
        elif method == SGD_NOISE:
            z0, z1 = side_normal_pair(st, _NOISE_SALT ^ mix64(np.uint64(s)))
            th[0] -= step_scale * g[0] + lr_sigma * z0
            if d == 2:
                th[1] -= step_scale * g[1] + lr_sigma * z1
        else:
            for a in range(d):
                th[a] -= step_scale * g[a]
        if _check(c, th, s + 1, box, esc, lost_step, escape_step):
            break
    state[c] = st


@nb.njit(cache=True)
def _noise_step(c, s, th, ens, dyn, box, esc, terms, r, g, gi, cov, hess):
    """One SGD step's worth (η of SDE time) of ``substeps`` Euler–Maruyama steps.

    ``sme2`` adds (η/2)·H·G to the SDE's drift G (H = ∇²L, into the scratch ``hess``)."""
    state, lost_step, escape_step = ens[1], ens[4], ens[5]
    method, lr, noise_factor = dyn.kernel, dyn.lr, dyn.noise_factor
    substeps, temperature = dyn.substeps, dyn.temperature
    has_esc, thr, direction = esc
    kind, amp, centre, mat, ptr = terms
    d = th.shape[0]
    st = state[c]
    dt = lr / substeps
    sde_scale = math.sqrt(lr * noise_factor * dt)
    lan_scale = math.sqrt(2.0 * temperature * dt)
    z1 = 0.0
    n = ptr.shape[0] - 1
    for m in range(substeps):
        x_old = th[0]
        if method == SDE or method == SME2:
            mean_grad_cov(th, kind, amp, centre, mat, ptr, r, g, gi, cov)
            if method == SME2:
                for a in range(d):
                    for b in range(d):
                        hess[a, b] = 0.0
                for i in range(n):
                    add_sample_hess(th, i, kind, amp, centre, mat, ptr, r, hess, 1.0)
                # G + (η/2)·H·G with H = (1/n) Σ ∇²l_i.
                h = 0.5 * lr / n
                if d == 1:
                    g[0] = g[0] + h * (hess[0, 0] * g[0])
                else:
                    g0 = g[0] + h * (hess[0, 0] * g[0] + hess[0, 1] * g[1])
                    g1 = g[1] + h * (hess[1, 0] * g[0] + hess[1, 1] * g[1])
                    g[0] = g0
                    g[1] = g1
            if d == 1:
                # Pair the normals within one SGD step, so the stream does not
                # depend on where snapshots cut the run.
                if m % 2 == 0:
                    st, z0, z1 = next_normal_pair(st)
                else:
                    z0 = z1
                th[0] = _em(th[0], g[0], sde_scale * math.sqrt(cov[0, 0]), z0, dt)
            else:
                st, z0, z1b = next_normal_pair(st)
                l11 = math.sqrt(max(cov[0, 0], 0.0))
                l21 = cov[1, 0] / l11 if l11 > 0.0 else 0.0
                # Rounding can make the Schur complement a tiny negative number.
                l22 = math.sqrt(max(cov[1, 1] - l21 * l21, 0.0))
                th[0] = _em(th[0], g[0], sde_scale * l11, z0, dt)
                th[1] = _em(th[1], g[1], sde_scale, l21 * z0 + l22 * z1b, dt)
        else:
            mean_grad(th, kind, amp, centre, mat, ptr, r, g, gi)
            if d == 1:
                if m % 2 == 0:
                    st, z0, z1 = next_normal_pair(st)
                else:
                    z0 = z1
                th[0] = _em(th[0], g[0], lan_scale, z0, dt)
            else:
                st, z0, z1b = next_normal_pair(st)
                th[0] = _em(th[0], g[0], lan_scale, z0, dt)
                th[1] = _em(th[1], g[1], lan_scale, z1b, dt)
        if has_esc and escape_step[c] < 0:
            var_dt = lan_scale * lan_scale if method == LANGEVIN else sde_scale * sde_scale * cov[0, 0]
            if _bridge_crossed(direction * (thr - x_old), direction * (thr - th[0]), var_dt, st, m):
                escape_step[c] = s + 1
        if _check(c, th, s + 1, box, esc, lost_step, escape_step):
            break
    state[c] = st


# One kernel per family of step rules (chains are independent: prange over blocks), so that a
# cell compiles only the families its methods use: the three in one kernel took 12 s to
# compile on a cold cache, gd's alone well under a second. (Serial block loops dealt to
# threads, as the 1-D lane kernels are, compile faster still but ran 1.1–2× slower here.)
@nb.njit(cache=True, parallel=True)
def _advance_minibatch(ens, s0, s1, dyn, box, esc, terms, work):
    """``sgd`` / ``svag`` / ``sgd_noise``: every chain from SGD step s0 to s1."""
    pos, lost_step = ens[0], ens[4]
    scratch = work[0]
    chains = pos.shape[0]
    for blk in nb.prange((chains + _BLOCK - 1) // _BLOCK):
        c0 = blk * _BLOCK
        c1 = min(c0 + _BLOCK, chains)
        for s in range(s0, s1):
            for c in range(c0, c1):
                if lost_step[c] >= 0:
                    continue
                _sgd_step(c, s, pos[c], ens, dyn, box, esc, terms, scratch[c, 0], scratch[c, 1],
                          scratch[c, 2])


@nb.njit(cache=True, parallel=True)
def _advance_gd(ens, s0, s1, dyn, box, esc, terms, work):
    """``gd`` (θ ← θ − η∇L, the full mean gradient): every chain from step s0 to s1."""
    pos, lost_step, escape_step = ens[0], ens[4], ens[5]
    lr = dyn.lr
    kind, amp, centre, mat, ptr = terms
    scratch = work[0]
    chains = pos.shape[0]
    d = pos.shape[1]
    for blk in nb.prange((chains + _BLOCK - 1) // _BLOCK):
        c0 = blk * _BLOCK
        c1 = min(c0 + _BLOCK, chains)
        for s in range(s0, s1):
            for c in range(c0, c1):
                if lost_step[c] >= 0:
                    continue
                th = pos[c]
                g = scratch[c, 1]
                mean_grad(th, kind, amp, centre, mat, ptr, scratch[c, 0], g, scratch[c, 2])
                for a in range(d):
                    th[a] = th[a] - lr * g[a]
                _check(c, th, s + 1, box, esc, lost_step, escape_step)


@nb.njit(cache=True, parallel=True)
def _advance_noise(ens, s0, s1, dyn, box, esc, terms, work):
    """``sde`` / ``sme2`` / ``langevin`` (a drift plus Gaussian noise): every chain from SGD
    step s0 to s1."""
    pos, lost_step = ens[0], ens[4]
    scratch, covs = work
    chains = pos.shape[0]
    for blk in nb.prange((chains + _BLOCK - 1) // _BLOCK):
        c0 = blk * _BLOCK
        c1 = min(c0 + _BLOCK, chains)
        for s in range(s0, s1):
            for c in range(c0, c1):
                if lost_step[c] >= 0:
                    continue
                _noise_step(c, s, pos[c], ens, dyn, box, esc, terms, scratch[c, 0], scratch[c, 1],
                            scratch[c, 2], covs[c, 0], covs[c, 1])


def general_kernel(kernel_id: int) -> Any:
    """The general kernel (``(ens, s0, s1, dyn, box, esc, terms, work)``) that runs step rule
    ``kernel_id``."""
    if kernel_id in MINIBATCH_KERNELS:
        return _advance_minibatch
    return _advance_gd if kernel_id == GD else _advance_noise

# Salt of sgd_noise's normals, hashed with the SGD step number (under random reshuffling the
# stream does not move within an epoch).
_NOISE_SALT = np.uint64(0x3C6EF372FE94F82B)
# Salt of the side uniforms of the Brownian-bridge test (one per substep parity).
_BRIDGE_SALT = np.uint64(0xB41D6E5A17C3F00D)


@nb.njit(cache=True, inline="always")
def _bridge_crossed(gap0, gap1, var_dt, st, m):
    """Did the continuous path cross the threshold between two Euler–Maruyama points?

    ``gap0``, ``gap1`` are the distances to the threshold before and after the substep
    (both > 0 when the endpoints did not cross) and ``var_dt`` the increment variance.
    Given its endpoints a Brownian path crossed with probability
    exp(−2 gap0 gap1 / var_dt); without this test first passages are detected O(√dt)
    late, because paths that cross and return within a substep are missed.
    """
    arg = -2.0 * gap0 * gap1 / var_dt if var_dt > 0.0 else -1.0e300
    p = exp_nonpos(max(arg, -745.0)) if (gap0 > 0.0 and gap1 > 0.0) else 0.0
    return side_uniform(st, _BRIDGE_SALT ^ np.uint64(m & 1)) < p



@nb.njit(cache=True)
def _accumulate(pos, lost_step, lower, dx, cells, basin_edges, counts, mean, var, basin_counts):
    """Histogram, moments and basin counts of the in-grid chains, serially in chain order."""
    chains, d = pos.shape
    alive = 0
    for a in range(d):
        mean[a] = 0.0
        var[a] = 0.0
    for c in range(chains):
        if lost_step[c] >= 0:
            continue
        alive += 1
        ix = 0
        iy = 0
        for a in range(d):
            mean[a] += pos[c, a]
            k = math.floor((pos[c, a] - lower[a]) / dx[a])
            # θ == upper belongs to the last cell; rounding may also push k one past either end.
            k = min(max(k, 0), cells[a] - 1)
            if a == 0:
                ix = k
            else:
                iy = k
        counts[ix, iy] += 1
        nb_ = basin_edges.shape[0]
        j = 0
        while j < nb_ and pos[c, 0] >= basin_edges[j]:
            j += 1
        basin_counts[j] += 1
    if alive == 0:
        for a in range(d):
            mean[a] = np.nan
            var[a] = np.nan
        return
    for a in range(d):
        mean[a] /= alive
    for c in range(chains):
        if lost_step[c] >= 0:
            continue
        for a in range(d):
            dv = pos[c, a] - mean[a]
            var[a] += dv * dv
    for a in range(d):
        var[a] /= alive

