"""Compiled Monte Carlo ensembles: minibatch SGD and its variants, its Itô SDE, Langevin, GD.

Time is counted in SGD steps k; the SDE time is t = η·k (η = ``lr``).

* ``sgd``: θ ← θ − η·(1/b) Σ_{i∈B} ∇l_i(θ) on the finite dataset. Minibatch sampling:
  ``with_replacement`` (b iid uniform indices), ``without_replacement`` (b distinct
  indices per step, a partial Fisher–Yates shuffle of a per-chain permutation) or
  ``reshuffle`` (a fresh per-chain permutation each epoch, cut into consecutive
  batches of b; when b does not divide n the last n mod b indices of each
  permutation are dropped, like ``drop_last``, so an epoch is ⌊n/b⌋ steps).
* ``sde``: Euler–Maruyama of the Itô SDE dθ = −G dt + sqrt(η Σ_b(θ)) dW with
  ``substeps`` EM steps per SGD step (dt = η/substeps), Σ_b = noise_factor·Σ;
  in 2-D the noise is the Cholesky factor of Σ_b times a standard normal pair.
* ``svag`` (Li, Malladi & Arora 2021): ``svag_l`` = l steps of η/l per SGD step, each
  with a₁ḡ_{B1} + a₂ḡ_{B2} of two independent minibatches drawn as for ``sgd``,
  a₁,₂ = (1 ± √(2l−1))/2 (:func:`svag_coefficients`). It draws from SGD's stream, so
  l = 1 (one minibatch, a₁ = 1) is ``sgd`` bit for bit.
* ``sgd_noise``: ``sgd`` plus ``grad_noise`` σ times a standard normal (per axis) added
  to the minibatch gradient: θ ← θ − (η/b Σ_{i∈B} ∇l_i + η σ z). z is hashed from SGD's
  stream state and the step number without advancing the stream: the minibatches are
  SGD's, and σ = 0 is ``sgd`` bit for bit.
* ``sme2``: as ``sde`` with the drift of the second-order modified equation
  G + (η/2)·H·G, H = ∇²L (Li, Tai & E 2017), on the SDE's random stream.
* ``langevin``: dθ = −G dt + sqrt(2T) dW, same dt and substeps; stationary law ∝ exp(−L/T).
* ``gd``: θ ← θ − η G (full batch, deterministic).

Chains run in parallel (numba prange); each owns a counter-based random stream
(:mod:`sgdsweep.montecarlo.rng`) keyed by (seed, method, chain), so results are
bit-identical for any thread count and do not depend on the snapshot schedule.
Between snapshots the compiled kernel advances every chain; at each snapshot
histograms, moments, basin counts and the lost count are accumulated serially
in chain order. Trajectories are never stored. In 1-D every method but ``gd`` runs on
kernels that step _LANES chains per SIMD block; they draw the same random numbers
and form the same products and sums as the general kernel, except that Gaussian terms
use a branch-free polynomial exp (relative error ≤ 4e-16) instead of libm's and
``sme2``'s Hessian is summed in another order, so trajectories can differ from the
general kernel in the last bits. ``gd`` always uses the general kernel and reproduces
θ − η·``Landscape.evaluate``(θ)["grad"] exactly.

A chain that becomes non-finite or leaves the grid box [lower, upper] (any axis)
is frozen and counted as lost from the (sub)step it left; it is excluded from
histograms, moments and basin counts, which are still meant to be normalised by
the total number of chains (densities then integrate to 1 − lost fraction).
Chains whose initial position lies outside the grid are lost at step 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numba as nb
import numpy as np
from numba.core import types
from numba.extending import intrinsic

from sgdsweep.errors import ConfigError
from sgdsweep.landscapes.grid import Grid1D
from sgdsweep.landscapes.landscape import (
    Landscape,
    add_sample_grad,
    add_sample_hess,
    mean_grad,
    mean_grad_cov,
)
from sgdsweep.landscapes.noise import SAMPLINGS, batch_noise_factor
from sgdsweep.montecarlo.rng import (
    _GAMMA,
    _S32,
    chain_states,
    mix64,
    next_below,
    next_normal_pair,
    side_normal_pair,
    side_uniform,
    stream_key,
)
from sgdsweep.validate import integer, real, snapshot_steps

METHOD_IDS = {"sgd": 0, "sde": 1, "langevin": 2, "gd": 3, "svag": 4, "sgd_noise": 5, "sme2": 6}
_SGD, _SDE, _LANGEVIN, _GD, _SVAG, _SGD_NOISE, _SME2 = 0, 1, 2, 3, 4, 5, 6
#: Random stream of each method. ``svag`` shares SGD's (its l = 1 is SGD bit for bit, and for
#: l > 1 the two start from common random numbers), so does ``sgd_noise``, whose normals are
#: hashed from the stream state without advancing it (same minibatches as ``sgd``; σ = 0 is
#: SGD bit for bit), and ``sme2`` the SDE's (same Brownian increments, so sme2 − sde
#: differences are the drift correction, not noise).
STREAM_IDS = {"sgd": 0, "sde": 1, "langevin": 2, "gd": 3, "svag": 0, "sgd_noise": 0, "sme2": 1}
#: Methods stepped like SGD (minibatches) and like the SDE (Euler–Maruyama).
MINIBATCH_METHODS = ("sgd", "svag", "sgd_noise")
EM_METHODS = ("sde", "langevin", "sme2")
_WITH, _WITHOUT, _RESHUFFLE = 0, 1, 2
SAMPLING_IDS = {s: k for k, s in enumerate(SAMPLINGS)}
assert SAMPLING_IDS == {"with_replacement": _WITH, "without_replacement": _WITHOUT, "reshuffle": _RESHUFFLE}


@dataclass
class EnsembleResult:
    """Streamed statistics of one ensemble at the S snapshots.

    ``counts`` are histogram counts on the grid cells; divide by (chains · cell
    volume) for a density that integrates to 1 − lost/chains. ``mean`` and ``var``
    (population variance) are over the chains still inside the grid (NaN if none).
    ``basin_counts`` counts in-grid chains per basin of axis 0 (basin j is
    [edge_{j−1}, edge_j)). ``lost`` is the number of chains lost by each snapshot.
    ``escape_step`` is each chain's first SGD step with θ₀ past the threshold (for
    ``sde`` / ``langevin`` including Brownian-bridge crossings between substeps, so the
    continuous-time passage is not detected O(√dt) late)
    (0 if it starts there, −1 if never, all −1 without a threshold).
    ``lost_step`` is the SGD step at which each chain was lost (−1 if never).
    """

    counts: np.ndarray
    mean: np.ndarray
    var: np.ndarray
    basin_counts: np.ndarray
    lost: np.ndarray
    escape_step: np.ndarray
    chains: int
    lost_step: np.ndarray | None = None


# --------------------------------------------------------------------------- kernels


# Chains advance in blocks of _BLOCK stepped in lockstep: one SGD step is a short
# dependent chain of operations, and interleaving independent chains lets the CPU
# overlap them. The block size is fixed, so the arithmetic does not depend on threads.
_BLOCK = 8


# Kernel arguments travel in bundles (tuples, which Numba types as records):
#   ens   = (pos, state, perm, cursor, lost_step, escape_step)  per-chain state (padded chains)
#   dyn   = (method, sampling, batch, lr, noise_factor, substeps, temperature,
#            svag_l, a1, a2, sigma)   svag: l and its two minibatch weights; sgd_noise: σ
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
    sampling, batch = dyn[1], dyn[2]
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


# Not inline: inlining this into _advance, with _check inlined into it and the bundles
# passed through, lost _check's escape record (Numba 0.6x), silently.
@nb.njit(cache=True)
def _sgd_step(c, s, th, ens, dyn, box, esc, terms, r, g, g2):
    """One SGD step of ``sgd``, ``svag`` (l substeps of η/l, two minibatches each) or
    ``sgd_noise`` (the minibatch gradient plus σ·z)."""
    state, lost_step, escape_step = ens[1], ens[4], ens[5]
    method, batch, lr = dyn[0], dyn[2], dyn[3]
    svag_l, a1, a2, sigma = dyn[7], dyn[8], dyn[9], dyn[10]
    d = th.shape[0]
    st = state[c]
    subs = svag_l if method == _SVAG else 1
    two = method == _SVAG and svag_l > 1
    # subs·batch is an exact integer: for sgd (and svag l = 1) this is lr / batch.
    step_scale = lr / (subs * batch)
    lr_sigma = lr * sigma
    for _ in range(subs):
        st = _batch_grad(c, th, ens, dyn, terms, r, g, st)
        if two:
            st = _batch_grad(c, th, ens, dyn, terms, r, g2, st)
            for a in range(d):
                th[a] -= step_scale * (a1 * g[a] + a2 * g2[a])
        elif method == _SGD_NOISE:
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
    method, lr, noise_factor, substeps, temperature = dyn[0], dyn[3], dyn[4], dyn[5], dyn[6]
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
        if method == _SDE or method == _SME2:
            mean_grad_cov(th, kind, amp, centre, mat, ptr, r, g, gi, cov)
            if method == _SME2:
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
            var_dt = lan_scale * lan_scale if method == _LANGEVIN else sde_scale * sde_scale * cov[0, 0]
            if _bridge_crossed(direction * (thr - x_old), direction * (thr - th[0]), var_dt, st, m):
                escape_step[c] = s + 1
        if _check(c, th, s + 1, box, esc, lost_step, escape_step):
            break
    state[c] = st


@nb.njit(cache=True, parallel=True)
def _advance(ens, s0, s1, dyn, box, esc, terms, work):
    """Advance every chain from SGD step s0 to s1 (chains are independent: prange over blocks)."""
    pos, lost_step, escape_step = ens[0], ens[4], ens[5]
    method, lr = dyn[0], dyn[3]
    kind, amp, centre, mat, ptr = terms
    scratch, covs = work
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
                r = scratch[c, 0]
                g = scratch[c, 1]
                if method == _SGD or method == _SVAG or method == _SGD_NOISE:
                    _sgd_step(c, s, th, ens, dyn, box, esc, terms, r, g, scratch[c, 2])
                elif method == _GD:
                    mean_grad(th, kind, amp, centre, mat, ptr, r, g, scratch[c, 2])
                    for a in range(d):
                        th[a] = th[a] - lr * g[a]
                    _check(c, th, s + 1, box, esc, lost_step, escape_step)
                else:
                    _noise_step(c, s, th, ens, dyn, box, esc, terms, r, g, scratch[c, 2], covs[c, 0],
                                covs[c, 1])


# --------------------------------------------------------------------------- 1-D, vectorised
# In 1-D, chains advance in blocks of _LANES (128: measured 5–7 % faster than 64, and
# below 64 loses; the block size does not change any chain's arithmetic) stepped in lockstep
# with every loop over the block free of calls and branches, so that the compiler runs it
# on SIMD lanes (one chain per lane, gathers for the sampled datapoints' parameters).
# This needs a branch-free exp: :func:`_exp_nonpos`. Each lane's arithmetic is the same
# whether it runs vectorised or not, so results stay independent of the thread count.
# Samples are padded to T terms (zero terms contribute exactly 0).

_LANES = 128
_LOG2E = 1.4426950408889634
_LN2_HI = 6.93147180369123816490e-01
_LN2_LO = 1.90821492927058770002e-10
_EXP_C = tuple(1.0 / math.factorial(k) for k in range(13))
(_E0, _E1, _E2, _E3, _E4, _E5, _E6, _E7, _E8, _E9, _E10, _E11, _E12) = _EXP_C


@intrinsic
def _int_bits_as_float(typingctx, x):
    sig = types.float64(types.int64)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(types.float64))

    return sig, codegen


@nb.njit(cache=True, inline="always")
def _exp_nonpos(x):
    """exp(x) for x ≤ 0 (x > 0 is read as 0), branch-free; relative error ≤ 4e-16.

    Range reduction x = k ln2 + r, |r| ≤ ln2/2, degree-12 Taylor polynomial, 2^k from
    the exponent bits. Below −708 (exp < 3e-308) it returns 0.
    """
    xc = min(max(x, -708.0), 0.0)
    k = math.floor(xc * _LOG2E + 0.5)
    r = xc - k * _LN2_HI - k * _LN2_LO
    p = _E12
    p = p * r + _E11
    p = p * r + _E10
    p = p * r + _E9
    p = p * r + _E8
    p = p * r + _E7
    p = p * r + _E6
    p = p * r + _E5
    p = p * r + _E4
    p = p * r + _E3
    p = p * r + _E2
    p = p * r + _E1
    p = p * r + _E0
    e = p * _int_bits_as_float((np.int64(k) + 1023) << 52)
    return e if x >= -708.0 else 0.0


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
    p = _exp_nonpos(max(arg, -745.0)) if (gap0 > 0.0 and gap1 > 0.0) else 0.0
    return side_uniform(st, _BRIDGE_SALT ^ np.uint64(m & 1)) < p


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
                        g[c] += (gk * _exp_nonpos(-(ar * r)) + qk) * ar
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
                    g[c] += (pg[c] * _exp_nonpos(-(ar * r)) + pq[c]) * ar
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
                    g[c] += pg[c] * _exp_nonpos(-(ar * r)) * ar
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


@nb.njit(cache=True, parallel=True)
def _advance_sgd_1d(ens, s0, s1, dyn, box, esc, slots):
    """1-D ``sgd`` / ``svag`` / ``sgd_noise`` from step s0 to s1 (see ``_sgd_step``);
    the number of chains is a multiple of _LANES."""
    pos, state, perm, cursor, lost_step, escape_step = ens
    method, sampling, batch, lr = dyn[0], dyn[1], dyn[2], dyn[3]
    svag_l, a1, a2, sigma = dyn[7], dyn[8], dyn[9], dyn[10]
    lower, upper = box
    has_esc, thr, direction = esc
    n, T, _cp, ap, gg, gq = slots
    L = _LANES
    subs = svag_l if method == _SVAG else 1
    two = method == _SVAG and svag_l > 1
    noisy = method == _SGD_NOISE
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
    for blk in nb.prange(pos.shape[0] // L):
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
                _lanes_batch_grad(g, x, st, idx, pc, pa, pg, pq, perm, cursor, c0, sampling, batch,
                                  nu, slots, layout)
                if two:
                    _lanes_batch_grad(g2, x, st, idx, pc, pa, pg, pq, perm, cursor, c0, sampling,
                                      batch, nu, slots, layout)
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


@nb.njit(cache=True, parallel=True)
def _advance_noisy_1d(ens, s0, s1, dyn, box, esc, slots):
    """1-D ``sde`` / ``sme2`` / ``langevin`` from step s0 to s1, _LANES chains per SIMD block.

    Same arithmetic and normal draws as the general kernel (G and Σ as in
    ``mean_grad_cov``: sums in sample order, Σ = E[g²] − G² clipped at 0; for ``sme2``
    H = ∇²L summed the same way and the drift G + (η/2)·H·G).
    """
    pos, state, lost_step, escape_step = ens[0], ens[1], ens[4], ens[5]
    method, lr, noise_factor, substeps, temperature = dyn[0], dyn[3], dyn[4], dyn[5], dyn[6]
    lower, upper = box
    has_esc, thr, direction = esc
    n, T, cp, ap, gg, gq = slots
    L = _LANES
    dt = lr / substeps
    sde_scale = math.sqrt(lr * noise_factor * dt)
    lan_scale = math.sqrt(2.0 * temperature * dt)
    sme2 = method == _SME2
    sde = method == _SDE or sme2
    half_lr_n = 0.5 * lr / n
    for blk in nb.prange(pos.shape[0] // L):
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
                                e = _exp_nonpos(-(ar * r)) if ggj != 0.0 else 0.0
                                gi[c] += (ggj * e + gqj) * ar
                                hs[c] += (ggj * e * (1.0 - 2.0 * (ar * r)) + gqj) * aj
                        elif ggj != 0.0:
                            for c in range(L):
                                r = x[c] - cj
                                ar = aj * r
                                gi[c] += (ggj * _exp_nonpos(-(ar * r)) + gqj) * ar
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


# --------------------------------------------------------------------------- wrapper


def svag_coefficients(l: int) -> tuple[float, float]:
    """SVAG's minibatch weights (a₁, a₂) = ((1 + √(2l−1))/2, (1 − √(2l−1))/2).

    a₁ + a₂ = 1 (the mean gradient is unbiased) and a₁² + a₂² = l, so a₁ḡ_{B1} + a₂ḡ_{B2}
    of two independent minibatches has l times the noise covariance of one; with steps
    η/l the noise per unit time is that of SGD while the drift is resolved l times finer.
    l = 1 gives exactly (1.0, 0.0).
    """
    root = math.sqrt(2 * l - 1)
    return 0.5 * (1.0 + root), 0.5 * (1.0 - root)


def run_ensemble(
    landscape: Landscape,
    method: str,
    x0: np.ndarray,
    lr: float,
    steps: np.ndarray,
    grids: Sequence[Grid1D],
    *,
    batch_size: int = 1,
    sampling: str = "with_replacement",
    noise_factor: float | None = None,
    substeps: int = 1,
    temperature: float | None = None,
    seed: int = 0,
    basin_edges: Sequence[float] = (),
    escape_threshold: float | None = None,
    escape_direction: int = +1,
    svag_l: int = 1,
    grad_noise: float = 0.0,
) -> EnsembleResult:
    """Run one ensemble of ``len(x0)`` chains and stream its statistics at ``steps``.

    ``x0`` (chains, d) are the initial positions; ``steps`` (S,) non-decreasing SGD
    step counts of the snapshots (SDE time t = lr·step; steps[0] may be 0). ``grids``
    holds one :class:`Grid1D` per axis. ``noise_factor`` is Σ_b/Σ for ``sde``
    (default :func:`batch_noise_factor` of n, batch_size, sampling); ``temperature``
    T is required for ``langevin``. ``basin_edges`` are sorted interior basin
    boundaries on axis 0. A first passage is θ₀ > threshold for ``escape_direction``
    +1, θ₀ < threshold for −1. See the module docstring for the methods and the
    lost-chain convention. ``svag_l`` is SVAG's l (``svag`` only), ``grad_noise`` σ of
    ``sgd_noise`` (the standard deviation of the Gaussian added to the minibatch gradient).
    """
    if not isinstance(landscape, Landscape):
        raise ConfigError(f"landscape: expected a sgdsweep Landscape, got {type(landscape).__name__}")
    if method not in METHOD_IDS:
        raise ConfigError(f"method: unknown Monte Carlo method {method!r} (known: {', '.join(METHOD_IDS)})")
    d, n = landscape.dim, landscape.n
    try:
        pos = np.array(x0, dtype=np.float64)
    except (TypeError, ValueError):
        raise ConfigError("x0: expected an array of initial positions (chains, d)") from None
    if pos.ndim == 1 and d == 1:
        pos = pos[:, None]
    if pos.ndim != 2 or pos.shape[1] != d or pos.shape[0] < 1:
        raise ConfigError(f"x0: expected shape (chains, {d}), got {np.shape(x0)}")
    if not np.all(np.isfinite(pos)):
        raise ConfigError("x0: initial positions must be finite")
    pos = np.ascontiguousarray(pos)
    lr = real(lr, "lr")
    if lr <= 0:
        raise ConfigError(f"lr: must be > 0, got {lr}")
    st = snapshot_steps(steps)
    grids = tuple(grids)
    if len(grids) != d or not all(isinstance(g, Grid1D) for g in grids):
        raise ConfigError(f"grids: expected {d} Grid1D (one per axis), got {grids!r}")
    if sampling not in SAMPLINGS:
        raise ConfigError(f"sampling: unknown {sampling!r} (known: {', '.join(SAMPLINGS)})")
    batch_size = integer(batch_size, "batch_size", 1)
    if batch_size > n:
        raise ConfigError(f"batch_size: {batch_size} is larger than the dataset (n = {n})")
    if noise_factor is None:
        noise_factor = batch_noise_factor(n, batch_size, sampling)
    noise_factor = real(noise_factor, "noise_factor")
    if noise_factor < 0:
        raise ConfigError(f"noise_factor: must be >= 0, got {noise_factor}")
    substeps = integer(substeps, "substeps", 1)
    if method == "langevin":
        if temperature is None:
            raise ConfigError("temperature: required for the langevin method")
        temperature = real(temperature, "temperature")
        if temperature < 0:
            raise ConfigError(f"temperature: must be >= 0, got {temperature}")
    else:
        temperature = 0.0
    seed = integer(seed, "seed", 0)
    svag_l = integer(svag_l, "svag.l", 1)
    grad_noise = real(grad_noise, "sgd_noise.sigma")
    if grad_noise < 0:
        raise ConfigError(f"sgd_noise.sigma: must be >= 0, got {grad_noise}")
    edges = np.asarray(basin_edges, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(edges)) or np.any(np.diff(edges) <= 0):
        raise ConfigError(f"basin_edges: must be finite and strictly increasing, got {list(edges)}")
    if escape_threshold is not None:
        escape_threshold = real(escape_threshold, "escape_threshold")
    if escape_direction not in (1, -1):
        raise ConfigError(f"escape_direction: must be +1 or -1, got {escape_direction!r}")
    return simulate(landscape, method, pos, lr, st, grids, batch_size=batch_size, sampling=sampling,
                    noise_factor=noise_factor, substeps=substeps, temperature=temperature, seed=seed,
                    basin_edges=edges, escape_threshold=escape_threshold,
                    escape_direction=escape_direction, svag_l=svag_l, grad_noise=grad_noise)


def simulate(landscape: Landscape, method: str, pos: np.ndarray, lr: float, steps: np.ndarray,
             grids: Sequence[Grid1D], *, batch_size: int, sampling: str, noise_factor: float,
             substeps: int, temperature: float, seed: int, basin_edges: np.ndarray,
             escape_threshold: float | None, escape_direction: int, svag_l: int = 1,
             grad_noise: float = 0.0) -> EnsembleResult:
    """:func:`run_ensemble` without its checks, for callers whose input is already validated
    (``run_cell``'s parsed cell): ``pos`` (chains, d) float64 and C-contiguous, ``steps``
    int64 non-decreasing, ``temperature`` a float (0.0 unless ``langevin``), ``basin_edges``
    a float64 array, ``escape_direction`` ±1, ``svag_l`` ≥ 1, ``grad_noise`` ≥ 0. It is not
    modified."""
    d, n = landscape.dim, landscape.n
    chains = pos.shape[0]
    st, edges = steps, basin_edges
    has_esc = escape_threshold is not None
    thr = float(escape_threshold) if has_esc else 0.0
    lower = np.array([g.lower for g in grids], dtype=np.float64)
    upper = np.array([g.upper for g in grids], dtype=np.float64)
    dx = np.array([g.dx for g in grids], dtype=np.float64)
    cells = np.array([g.cells for g in grids], dtype=np.int64)

    # Chains are padded to a multiple of _LANES with frozen dummies (lost at step 0, never counted).
    padded = -(-chains // _LANES) * _LANES
    state = chain_states(stream_key(seed, STREAM_IDS[method]), padded)
    needs_perm = method in MINIBATCH_METHODS and sampling != "with_replacement"
    perm = np.tile(np.arange(n, dtype=np.int64), (padded if needs_perm else 0, 1))
    cursor = np.full(padded, n, dtype=np.int64)  # n: the first step starts an epoch
    lost_step = np.full(padded, -1, dtype=np.int64)
    escape_step = np.full(padded, -1, dtype=np.int64)
    outside = np.any((pos < lower) | (pos > upper), axis=1)
    lost_step[:chains][outside] = 0
    lost_step[chains:] = 0
    if has_esc:
        escape_step[:chains][escape_direction * (pos[:, 0] - thr) > 0] = 0
    pos = np.concatenate([pos, np.tile(lower, (padded - chains, 1))])
    terms = _padded_terms_1d(landscape) if method != "gd" else None
    scratch = np.zeros((padded, 3, d)) if terms is None else np.zeros((0, 3, d))
    covs = np.zeros((padded if terms is None else 0, 2, d, d))  # Σ and H per chain

    S = st.size
    ny = cells[1] if d == 2 else 1
    counts = np.zeros((S, cells[0], ny), dtype=np.int64)
    mean = np.empty((S, d))
    var = np.empty((S, d))
    basin_counts = np.zeros((S, edges.size + 1), dtype=np.int64)
    lost = np.empty(S, dtype=np.int64)
    ens = (pos, state, perm, cursor, lost_step, escape_step)
    a1, a2 = svag_coefficients(svag_l)
    dyn = (METHOD_IDS[method], SAMPLING_IDS[sampling], batch_size, lr, noise_factor, substeps,
           temperature, int(svag_l), a1, a2, float(grad_noise))
    esc = (has_esc, thr, float(escape_direction))
    current = 0
    for k in range(S):
        if st[k] > current:
            if terms is not None:
                kernel = _advance_sgd_1d if method in MINIBATCH_METHODS else _advance_noisy_1d
                kernel(ens, current, int(st[k]), dyn, (lower[0], upper[0]), esc, (n, *terms))
            else:
                _advance(ens, current, int(st[k]), dyn, (lower, upper), esc, tuple(landscape.arrays),
                         (scratch, covs))
            current = int(st[k])
        _accumulate(pos[:chains], lost_step[:chains], lower, dx, cells, edges, counts[k], mean[k], var[k],
                    basin_counts[k])
        lost[k] = np.count_nonzero(lost_step[:chains] >= 0)
    if d == 1:
        counts = counts[:, :, 0]
    return EnsembleResult(counts=counts, mean=mean, var=var, basin_counts=basin_counts, lost=lost,
                          escape_step=escape_step[:chains], chains=chains,
                          lost_step=lost_step[:chains])
