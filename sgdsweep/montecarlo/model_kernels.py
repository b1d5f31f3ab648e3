"""Compiled chains of SGD and its continuous-time relatives on models with d parameters.

The kernels behind :class:`sgdsweep.montecarlo.models.ModelEnsemble`; conventions (methods,
streams, lost chains) are stated there. Arguments travel in bundles (tuples):

* ``model`` = (kind, loss, hidden, X, y, l2): the bundle of :mod:`sgdsweep.models.kernels`;
* ``ens``   = (pos (C, d), state (C,) uint64, perm (C, n) or (0, n) int64, cursor (C,), lost_step (C,),
  idx (C, b) int64 and buf (C, b·(p + hidden + 1)) float64: the minibatch and its batched
  forward/backward pass (:func:`minibatch_buffer_size`));
* ``dyn``   = (method, sampling, batch, lr, noise_scale, substeps, temperature, svag_l, a1, a2,
  sigma, bound), ``noise_scale`` = noise_factor / b (Σ_b / Σ);
* ``scratch`` (C, 3, d) and ``work`` (C, work_size): per-chain scratch, so the step loop allocates nothing.

Every chain's arithmetic and random numbers depend only on its own state, so chains run in any
order on any number of threads with the same result.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from sgdsweep.models.kernels import LINEAR, SQUARED, _sigmoid, add_sample_grad, full_grad, full_loss
from sgdsweep.montecarlo.fastexp import _int_bits_as_float
from sgdsweep.montecarlo.rng import _GAMMA, mix64, next_below, next_normal_pair, side_normal_pair

SGD, SDE, LANGEVIN, GD, SVAG, SGD_NOISE = 0, 1, 2, 3, 4, 5
WITH, WITHOUT, RESHUFFLE = 0, 1, 2
# The salt of sgd_noise's normals, mixed with the SGD step number (under reshuffling the stream
# does not move within an epoch); the same number as the low-dimensional ensemble's.
_NOISE_SALT = np.uint64(0x3C6EF372FE94F82B)


def minibatch_buffer_size(kind: int, p: int, hidden: int, batch: int) -> int:
    """Per-chain float scratch of the batched minibatch gradient."""
    return batch if kind == LINEAR else batch * (p + hidden + 1)




_LOG2E = 1.4426950408889634
_LN2_HI = 6.93147180369123816490e-01
_LN2_LO = 1.90821492927058770002e-10
_INV_FACT = tuple(1.0 / math.factorial(k) for k in range(14))
(_F2, _F3, _F4, _F5, _F6, _F7, _F8, _F9, _F10, _F11, _F12, _F13) = _INV_FACT[2:]


@nb.njit(cache=True, inline="always")
def tanh(z):
    """tanh(z) without branches or calls, so loops of it vectorise (libm's tanh does not, and was
    half the MLP's step time). With a = min(|z|, 20), m = expm1(−2a) by range reduction
    −2a = k ln2 + r (|r| ≤ ln2/2), a degree-13 Taylor polynomial of expm1(r) and 2^k from the
    exponent bits; tanh a = −m / (2 + m), exact in the limit a → 0 (no cancellation) and
    rounding to 1 from a = 20. Relative error ≤ 1e-15 (tested against libm)."""
    a = min(abs(z), 20.0)
    x = -2.0 * a
    k = math.floor(x * _LOG2E + 0.5)
    r = x - k * _LN2_HI - k * _LN2_LO
    p = _F13
    p = p * r + _F12
    p = p * r + _F11
    p = p * r + _F10
    p = p * r + _F9
    p = p * r + _F8
    p = p * r + _F7
    p = p * r + _F6
    p = p * r + _F5
    p = p * r + _F4
    p = p * r + _F3
    p = p * r + _F2
    pm = r + r * (r * p)  # expm1(r)
    two_k = _int_bits_as_float((np.int64(k) + 1023) << 52)
    m = two_k * pm + (two_k - 1.0)  # 2^k e^r − 1
    return math.copysign(-m / (2.0 + m), z)


@nb.njit(cache=True, inline="always")
def _outside(th, bound):
    for a in range(th.shape[0]):
        # NaN fails the comparison, so divergence to non-finite values is caught too.
        if not (abs(th[a]) <= bound):
            return True
    return False


@nb.njit(cache=True, inline="always")
def _reshuffle(row, st, n):
    """A fresh uniform permutation of ``row`` (Fisher–Yates from the top); the new stream state."""
    for j in range(n - 1, 0, -1):
        st, k = next_below(st, j + 1)
        i = row[k]
        row[k] = row[j]
        row[j] = i
    return st


@nb.njit(cache=True)
def _linear_batch_sum(th, model, idx, b, g, buf):
    """g ← Σ_{j<b} ∇l_{idx[j]}(θ) of a linear model: the b residuals first (independent dot
    products the CPU overlaps), then one pass of accumulation."""
    _, loss, _, X, y, _ = model
    p = X.shape[1]
    for j in range(b):
        i = idx[j]
        f = 0.0
        for k in range(p):
            f += X[i, k] * th[k]
        buf[j] = f - y[i] if loss == SQUARED else _sigmoid(f) - y[i]
    for k in range(p):
        g[k] = 0.0
    for j in range(b):
        i = idx[j]
        r = buf[j]
        for k in range(p):
            g[k] += r * X[i, k]


@nb.njit(cache=True)
def _mlp_batch_sum(th, model, idx, b, g, buf):
    """g ← Σ_{j<b} ∇l_{idx[j]}(θ) of the one-hidden-layer tanh MLP with the b samples side by
    side: the inner loops run over the batch (contiguous, independent), so they vectorise.

    buf holds X_Bᵀ (p, b), the hidden activations H (hidden, b) and the residuals (b)."""
    _, loss, h, X, y, _ = model
    p = X.shape[1]
    hp = h * p
    xt = buf[: p * b]
    H = buf[p * b : p * b + h * b]
    r = buf[p * b + h * b : p * b + h * b + b]
    for j in range(b):
        i = idx[j]
        for k in range(p):
            xt[k * b + j] = X[i, k]
    for u in range(h):
        for j in range(b):
            H[u * b + j] = th[hp + u]
        for k in range(p):
            w = th[u * p + k]
            for j in range(b):
                H[u * b + j] += w * xt[k * b + j]
        for j in range(b):
            H[u * b + j] = tanh(H[u * b + j])
    a0 = th[hp + 2 * h]
    for j in range(b):
        r[j] = a0
    for u in range(h):
        a = th[hp + h + u]
        for j in range(b):
            r[j] += a * H[u * b + j]
    for j in range(b):
        f = r[j]
        yi = y[idx[j]]
        r[j] = f - yi if loss == SQUARED else _sigmoid(f) - yi
    s0 = 0.0
    for j in range(b):
        s0 += r[j]
    g[hp + 2 * h] = s0
    for u in range(h):
        a = th[hp + h + u]
        sa = 0.0
        sc = 0.0
        for j in range(b):
            hv = H[u * b + j]
            sa += r[j] * hv
            dz = r[j] * a * (1.0 - hv * hv)
            H[u * b + j] = dz  # unit u's activation is not needed again: keep ∂l/∂z there
            sc += dz
        g[hp + h + u] = sa
        g[hp + u] = sc
        for k in range(p):
            sw = 0.0
            for j in range(b):
                sw += H[u * b + j] * xt[k * b + j]
            g[u * p + k] = sw


@nb.njit(cache=True)
def _minibatch_sum(c, th, model, ens, sampling, batch, g, st):
    """g ← Σ_{i∈B} ∇l_i(θ) over one minibatch of chain c (not divided by b); the new stream state.

    The indices are drawn first, then the gradient of the whole batch. Without replacement the
    j-th index is one partial Fisher–Yates step on the chain's permutation, so the first b
    entries form a uniform b-subset whatever order it is in."""
    kind, _, _, X, _, l2 = model
    perm, cursor, idx, buf = ens[2], ens[3], ens[5][c], ens[6][c]
    n = X.shape[0]
    if sampling == WITH:
        for j in range(batch):
            st, idx[j] = next_below(st, n)
    elif sampling == WITHOUT:
        row = perm[c]
        for j in range(batch):
            st, k = next_below(st, n - j)
            k += j
            i = row[k]
            row[k] = row[j]
            row[j] = i
            idx[j] = i
    else:
        if cursor[c] + batch > n:
            st = _reshuffle(perm[c], st, n)
            cursor[c] = 0
        for j in range(batch):
            idx[j] = perm[c, cursor[c] + j]
        cursor[c] += batch
    if kind == LINEAR:
        _linear_batch_sum(th, model, idx, batch, g, buf)
    else:
        _mlp_batch_sum(th, model, idx, batch, g, buf)
    if l2 != 0.0:
        for a in range(th.shape[0]):
            g[a] += batch * l2 * th[a]
    return st


@nb.njit(cache=True)
def _minibatch_step(c, s, th, st, model, ens, dyn, scr):
    """One SGD step of ``sgd``, ``svag`` (l substeps of η/l, two minibatches each) or
    ``sgd_noise``; returns (state, lost)."""
    method, sampling, batch, lr = dyn[0], dyn[1], dyn[2], dyn[3]
    svag_l, a1, a2, sigma, bound = dyn[7], dyn[8], dyn[9], dyn[10], dyn[11]
    d = th.shape[0]
    g = scr[0]
    g2 = scr[1]
    subs = svag_l if method == SVAG else 1
    two = method == SVAG and svag_l > 1
    # subs·batch is an exact integer: for sgd (and svag l = 1) this is lr / batch.
    step_scale = lr / (subs * batch)
    for _ in range(subs):
        st = _minibatch_sum(c, th, model, ens, sampling, batch, g, st)
        if two:
            st = _minibatch_sum(c, th, model, ens, sampling, batch, g2, st)
            for a in range(d):
                th[a] -= step_scale * (a1 * g[a] + a2 * g2[a])
        elif method == SGD_NOISE:
            lr_sigma = lr * sigma
            base = _NOISE_SALT ^ mix64(np.uint64(s))
            for a in range(0, d, 2):
                z0, z1 = side_normal_pair(st, base ^ (np.uint64(a // 2) * _GAMMA))
                th[a] -= step_scale * g[a] + lr_sigma * z0
                if a + 1 < d:
                    th[a + 1] -= step_scale * g[a + 1] + lr_sigma * z1
        else:
            for a in range(d):
                th[a] -= step_scale * g[a]
        if _outside(th, bound):
            return st, True
    return st, False


@nb.njit(cache=True)
def _sde_substep(th, st, model, dt, amp, G, U, gi, work):
    """One Euler–Maruyama step θ − G dt + amp·u, u = (1/√n) Σ_i ξ_i (g_i − G), ξ_i iid N(0, 1):
    u is Gaussian with covariance exactly Σ(θ) = (1/n) Σ_i (g_i − G)(g_i − G)ᵀ."""
    kind, loss, hidden, X, y, l2 = model
    n = X.shape[0]
    d = th.shape[0]
    for a in range(d):
        G[a] = 0.0
        U[a] = 0.0
    xi_sum = 0.0
    z1 = 0.0
    for i in range(n):
        if i % 2 == 0:
            st, z0, z1 = next_normal_pair(st)
            z = z0
        else:
            z = z1
        for a in range(d):
            gi[a] = 0.0
        add_sample_grad(kind, loss, hidden, X, y, l2, th, i, 1.0, gi, work)
        xi_sum += z
        for a in range(d):
            G[a] += gi[a]
            U[a] += z * gi[a]
    inv_n = 1.0 / n
    inv_sqrt_n = 1.0 / math.sqrt(n)
    for a in range(d):
        Ga = G[a] * inv_n
        # Σ ξ_i (g_i − G) = Σ ξ_i g_i − (Σ ξ_i) G
        th[a] = th[a] + (-Ga * dt + amp * ((U[a] - xi_sum * Ga) * inv_sqrt_n))
    return st


@nb.njit(cache=True)
def _continuous_step(th, st, model, dyn, scr, work):
    """One SGD step's worth (η of SDE time) of ``substeps`` Euler–Maruyama steps of the SDE or
    of Langevin dynamics; returns (state, lost)."""
    kind, loss, hidden, X, y, l2 = model
    method, lr, noise_scale, substeps, temperature, bound = dyn[0], dyn[3], dyn[4], dyn[5], dyn[6], dyn[11]
    d = th.shape[0]
    dt = lr / substeps
    sde_amp = math.sqrt(lr * dt * noise_scale)
    lan_amp = math.sqrt(2.0 * temperature * dt)
    G = scr[0]
    for _ in range(substeps):
        if method == SDE:
            st = _sde_substep(th, st, model, dt, sde_amp, G, scr[1], scr[2], work)
        else:
            full_grad(kind, loss, hidden, X, y, l2, th, G, work)
            for a in range(0, d, 2):
                st, z0, z1 = next_normal_pair(st)
                th[a] = th[a] + (-G[a] * dt + lan_amp * z0)
                if a + 1 < d:
                    th[a + 1] = th[a + 1] + (-G[a + 1] * dt + lan_amp * z1)
        if _outside(th, bound):
            return st, True
    return st, False


@nb.njit(cache=True, parallel=True)
def advance(model, ens, s0, s1, dyn, scratch, work):
    """Advance every live chain from SGD step s0 to s1; a chain that leaves |θ_k| ≤ bound (or
    turns non-finite) is frozen with lost_step = the step it left at."""
    kind, loss, hidden, X, y, l2 = model
    pos, state, lost_step = ens[0], ens[1], ens[4]
    method, lr, bound = dyn[0], dyn[3], dyn[11]
    d = pos.shape[1]
    for c in nb.prange(pos.shape[0]):
        if lost_step[c] >= 0:
            continue
        th = pos[c]
        scr = scratch[c]
        wk = work[c]
        st = state[c]
        for s in range(s0, s1):
            if method == GD:
                g = scr[0]
                full_grad(kind, loss, hidden, X, y, l2, th, g, wk)
                for a in range(d):
                    th[a] = th[a] - lr * g[a]
                lost = _outside(th, bound)
            elif method == SDE or method == LANGEVIN:
                st, lost = _continuous_step(th, st, model, dyn, scr, wk)
            else:
                st, lost = _minibatch_step(c, s, th, st, model, ens, dyn, scr)
            if lost:
                lost_step[c] = s + 1
                break
        state[c] = st


@nb.njit(cache=True, parallel=True)
def loss_and_grad_norm(model, pos, alive, grad, work, loss_out, norm_out):
    """Full-batch L(θ_c) and |G(θ_c)| of every live chain (NaN for the others)."""
    kind, loss, hidden, X, y, l2 = model
    d = pos.shape[1]
    for c in nb.prange(pos.shape[0]):
        if not alive[c]:
            loss_out[c] = np.nan
            norm_out[c] = np.nan
            continue
        th = pos[c]
        loss_out[c] = full_loss(kind, loss, hidden, X, y, l2, th, work[c])
        full_grad(kind, loss, hidden, X, y, l2, th, grad[c], work[c])
        s = 0.0
        for a in range(d):
            s += grad[c, a] * grad[c, a]
        norm_out[c] = math.sqrt(s)


@nb.njit(cache=True)
def moments(pos, alive, full_cov, mean, cov):
    """Mean and population covariance (or its diagonal, ``cov`` of shape (1, d)) of the live
    chains, summed in chain order. NaN when no chain is alive."""
    chains, d = pos.shape
    for a in range(d):
        mean[a] = 0.0
    cov[:, :] = 0.0
    count = 0
    for c in range(chains):
        if alive[c]:
            count += 1
            for a in range(d):
                mean[a] += pos[c, a]
    if count == 0:
        mean[:] = np.nan
        cov[:, :] = np.nan
        return
    for a in range(d):
        mean[a] /= count
    dev = np.empty(d)
    for c in range(chains):
        if not alive[c]:
            continue
        for a in range(d):
            dev[a] = pos[c, a] - mean[a]
        if full_cov:
            for a in range(d):
                for b in range(a + 1):
                    cov[a, b] += dev[a] * dev[b]
        else:
            for a in range(d):
                cov[0, a] += dev[a] * dev[a]
    if full_cov:
        for a in range(d):
            for b in range(a + 1):
                cov[a, b] /= count
                cov[b, a] = cov[a, b]
    else:
        for a in range(d):
            cov[0, a] /= count


@nb.njit(cache=True, parallel=True)
def projections(pos, alive, directions, theta_ref, out):
    """out[k, c] = (θ_c − θ_ref)·v_k for live chains (NaN for the others), summed over axes in order."""
    K = directions.shape[0]
    d = pos.shape[1]
    for c in nb.prange(pos.shape[0]):
        for k in range(K):
            if not alive[c]:
                out[k, c] = np.nan
                continue
            s = 0.0
            for a in range(d):
                s += (pos[c, a] - theta_ref[a]) * directions[k, a]
            out[k, c] = s
