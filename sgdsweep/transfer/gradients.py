"""Per-sample gradients of a 1-D landscape at many points (the operators' only input).

:meth:`Landscape.evaluate` also forms losses and Hessians; the operators need only the
n per-sample gradients g_i(θ) (and their mean and population variance), so this kernel
calls the landscape's own :func:`~sgdsweep.landscapes.landscape.add_sample_grad` and nothing else.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from sgdsweep.landscapes.landscape import Landscape, add_sample_grad


@nb.njit(cache=True)
def _sample_grads_1d(x, kind, amp, centre, mat, ptr, out):
    n = ptr.shape[0] - 1
    th = np.empty(1)
    r = np.empty(1)
    g = np.empty(1)
    for p in range(x.shape[0]):
        th[0] = x[p]
        for i in range(n):
            g[0] = 0.0
            add_sample_grad(th, i, kind, amp, centre, mat, ptr, r, g, 1.0)
            out[p, i] = g[0]


def sample_grads(landscape: Landscape, x: np.ndarray) -> np.ndarray:
    """g_i(θ) at the points ``x`` (M,) of a 1-D landscape, shape (M, n)."""
    x = np.ascontiguousarray(x, dtype=np.float64).reshape(-1)
    out = np.empty((x.size, landscape.n))
    _sample_grads_1d(x, *landscape.arrays, out)
    return out


def grad_mean_var(landscape: Landscape, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """G(θ) = mean_i g_i and Σ(θ) = population variance of the g_i, each (M,)."""
    sg = sample_grads(landscape, x)
    G = sg.mean(axis=1)
    return G, np.maximum(((sg - G[:, None]) ** 2).mean(axis=1), 0.0)
