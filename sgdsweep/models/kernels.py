"""Compiled per-sample losses and gradients of the model family (plain loops over arrays).

A model's data and shape travel to the kernels as one argument bundle
``(kind, loss, hidden, X, y, l2)`` (see :meth:`sgdsweep.models.model.Model.kernel_args`):

* ``kind``: :data:`LINEAR` (f = xᵀθ), :data:`MLP` (one hidden tanh layer of width ``hidden``);
  logistic regression is ``LINEAR`` with the cross-entropy loss;
* ``loss``: :data:`SQUARED` (l = ½(f − y)²) or :data:`CROSS_ENTROPY` (binary, y ∈ {0, 1}:
  l = log(1 + e^f) − y f, f the logit);
* ``X`` (n, p) float64 C-contiguous features, ``y`` (n,) float64 targets;
* ``l2``: every per-sample loss carries (l2/2)·|θ|², so L = mean_i l_i has it once.

MLP parameters, flattened in this order: W (hidden × p, row-major), c (hidden), a (hidden),
a0 — f(x) = Σ_j a_j tanh(w_j·x + c_j) + a0, d = hidden·(p + 2) + 1.

``work`` is per-chain scratch of length :func:`work_size` (two hidden-sized buffers).
"""

from __future__ import annotations

import math

import numba as nb

LINEAR, MLP = 0, 1
SQUARED, CROSS_ENTROPY = 0, 1


def work_size(hidden: int) -> int:
    """Length of the per-chain scratch array the kernels need."""
    return max(2 * hidden, 1)


def n_params(kind: int, p: int, hidden: int) -> int:
    """d: the number of parameters of a model on p features."""
    return p if kind == LINEAR else hidden * (p + 2) + 1


@nb.njit(cache=True, inline="always")
def _softplus(z):
    # log(1 + e^z) without overflow
    return z + math.log1p(math.exp(-z)) if z > 0 else math.log1p(math.exp(z))


@nb.njit(cache=True, inline="always")
def _sigmoid(z):
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


@nb.njit(cache=True, inline="always")
def _dloss(loss, f, y):
    """∂l/∂f."""
    return f - y if loss == SQUARED else _sigmoid(f) - y


@nb.njit(cache=True, inline="always")
def _loss(loss, f, y):
    return 0.5 * (f - y) * (f - y) if loss == SQUARED else _softplus(f) - y * f


@nb.njit(cache=True)
def forward(kind, hidden, X, theta, i, work):
    """f_θ(x_i); for the MLP, work[:hidden] holds the hidden activations tanh(w_j·x + c_j)."""
    p = X.shape[1]
    if kind == LINEAR:
        f = 0.0
        for k in range(p):
            f += X[i, k] * theta[k]
        return f
    hp = hidden * p
    f = theta[hp + 2 * hidden]
    for j in range(hidden):
        z = theta[hp + j]
        for k in range(p):
            z += theta[j * p + k] * X[i, k]
        h = math.tanh(z)
        work[j] = h
        f += theta[hp + hidden + j] * h
    return f


@nb.njit(cache=True)
def sample_loss(kind, loss, hidden, X, y, l2, theta, i, work):
    """l_i(θ) (with its (l2/2)|θ|²)."""
    f = forward(kind, hidden, X, theta, i, work)
    out = _loss(loss, f, y[i])
    if l2 != 0.0:
        s = 0.0
        for k in range(theta.shape[0]):
            s += theta[k] * theta[k]
        out += 0.5 * l2 * s
    return out


@nb.njit(cache=True)
def add_sample_grad(kind, loss, hidden, X, y, l2, theta, i, weight, out, work):
    """out += weight · ∇l_i(θ) (with its l2·θ)."""
    p = X.shape[1]
    f = forward(kind, hidden, X, theta, i, work)
    r = weight * _dloss(loss, f, y[i])
    if kind == LINEAR:
        for k in range(p):
            out[k] += r * X[i, k]
    else:
        hp = hidden * p
        for j in range(hidden):
            h = work[j]
            a = theta[hp + hidden + j]
            out[hp + hidden + j] += r * h
            dz = r * a * (1.0 - h * h)
            out[hp + j] += dz
            for k in range(p):
                out[j * p + k] += dz * X[i, k]
        out[hp + 2 * hidden] += r
    if l2 != 0.0:
        for k in range(theta.shape[0]):
            out[k] += weight * l2 * theta[k]


@nb.njit(cache=True)
def batch_grad(kind, loss, hidden, X, y, l2, theta, idx, b, out, work):
    """out = (1/b) Σ_{k<b} ∇l_{idx[k]}(θ)."""
    for k in range(out.shape[0]):
        out[k] = 0.0
    w = 1.0 / b
    for k in range(b):
        add_sample_grad(kind, loss, hidden, X, y, l2, theta, idx[k], w, out, work)


@nb.njit(cache=True)
def full_grad(kind, loss, hidden, X, y, l2, theta, out, work):
    """out = G(θ) = (1/n) Σ_i ∇l_i(θ)."""
    n = X.shape[0]
    for k in range(out.shape[0]):
        out[k] = 0.0
    w = 1.0 / n
    for i in range(n):
        add_sample_grad(kind, loss, hidden, X, y, l2, theta, i, w, out, work)


@nb.njit(cache=True)
def full_loss(kind, loss, hidden, X, y, l2, theta, work):
    """L(θ) = (1/n) Σ_i l_i(θ)."""
    n = X.shape[0]
    s = 0.0
    for i in range(n):
        s += sample_loss(kind, loss, hidden, X, y, l2, theta, i, work)
    return s / n



@nb.njit(cache=True)
def sample_grads(kind, loss, hidden, X, y, l2, theta, out, work):
    """out[i] = ∇l_i(θ) for every sample: out (n, d)."""
    for i in range(X.shape[0]):
        row = out[i]
        for k in range(row.shape[0]):
            row[k] = 0.0
        add_sample_grad(kind, loss, hidden, X, y, l2, theta, i, 1.0, row, work)
