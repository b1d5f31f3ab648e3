"""Compiled exact Hessian-vector products of the model family (R-operator: forward-over-reverse
written out by hand), with the argument bundle of :mod:`sgdsweep.models.kernels`.

For direction v the R-operator R{·} = d/dε (·)(θ + εv)|₀ is pushed through the forward pass
(Rz_j = v_W_j·x + v_c_j, Rh_j = (1 − h_j²) Rz_j, Rf) and then through the gradient formulas of
:func:`sgdsweep.models.kernels.add_sample_grad`; R{∇l_i} = ∇²l_i · v exactly (no differencing).
``work`` as for the gradient kernels: work[:hidden] the activations, work[hidden:] their R.
"""

from __future__ import annotations

import numba as nb

from sgdsweep.models.kernels import LINEAR, SQUARED, _sigmoid, forward


@nb.njit(cache=True, inline="always")
def _d2loss(loss, f):
    """∂²l/∂f²: 1 (squared) or σ(f)(1 − σ(f)) (cross-entropy)."""
    if loss == SQUARED:
        return 1.0
    s = _sigmoid(f)
    return s * (1.0 - s)


@nb.njit(cache=True)
def add_sample_hvp(kind, loss, hidden, X, y, l2, theta, v, i, weight, out, work):
    """out += weight · ∇²l_i(θ) v (with its l2·v)."""
    p = X.shape[1]
    f = forward(kind, hidden, X, theta, i, work)
    if kind == LINEAR:
        rf = 0.0
        for k in range(p):
            rf += X[i, k] * v[k]
        rr = weight * _d2loss(loss, f) * rf
        for k in range(p):
            out[k] += rr * X[i, k]
    else:
        hp = hidden * p
        r = f - y[i] if loss == SQUARED else _sigmoid(f) - y[i]
        rf = v[hp + 2 * hidden]
        for j in range(hidden):
            rz = v[hp + j]
            for k in range(p):
                rz += v[j * p + k] * X[i, k]
            h = work[j]
            rh = (1.0 - h * h) * rz
            work[hidden + j] = rh
            rf += v[hp + hidden + j] * h + theta[hp + hidden + j] * rh
        rr = _d2loss(loss, f) * rf
        for j in range(hidden):
            h = work[j]
            rh = work[hidden + j]
            a = theta[hp + hidden + j]
            s = 1.0 - h * h
            out[hp + hidden + j] += weight * (rr * h + r * rh)
            rdz = weight * (rr * a * s + r * v[hp + hidden + j] * s - 2.0 * r * a * h * rh)
            out[hp + j] += rdz
            for k in range(p):
                out[j * p + k] += rdz * X[i, k]
        out[hp + 2 * hidden] += weight * rr
    if l2 != 0.0:
        for k in range(theta.shape[0]):
            out[k] += weight * l2 * v[k]


@nb.njit(cache=True)
def full_hvp(kind, loss, hidden, X, y, l2, theta, v, out, work):
    """out = ∇²L(θ) v = (1/n) Σ_i ∇²l_i(θ) v."""
    n = X.shape[0]
    for k in range(out.shape[0]):
        out[k] = 0.0
    w = 1.0 / n
    for i in range(n):
        add_sample_hvp(kind, loss, hidden, X, y, l2, theta, v, i, w, out, work)


@nb.njit(cache=True)
def hessian_square_mean(kind, loss, hidden, X, y, l2, theta, v, out, tmp, work):
    """out = (1/n) Σ_i ∇²l_i(θ)² v, two per-sample HVPs per sample (``tmp``: scratch of length d)."""
    n = X.shape[0]
    for k in range(out.shape[0]):
        out[k] = 0.0
    w = 1.0 / n
    for i in range(n):
        for k in range(tmp.shape[0]):
            tmp[k] = 0.0
        add_sample_hvp(kind, loss, hidden, X, y, l2, theta, v, i, 1.0, tmp, work)
        add_sample_hvp(kind, loss, hidden, X, y, l2, theta, tmp, i, w, out, work)
