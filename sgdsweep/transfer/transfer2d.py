"""SGD's one-step transfer operator on a 2-D density grid.

Cell (ix, iy) of the product grid ``gx × gy`` is the flat index k = ix·ny + iy (the
order of ``np.meshgrid(x, y, indexing="ij")``, as in the store). Each cell is sampled at
q × q sub-cell midpoints carrying equal mass; under minibatch B (probability w_B) a
midpoint θ moves to f_B(θ) = θ − η ḡ_B(θ), and its mass is split *bilinearly* over the
four cells whose centres surround the image (cloud-in-cell: the overlap of a
cell-sized box centred on the image with the grid cells). Columns sum to 1 to
round-off; an image past the grid is clamped into the edge cells (nothing leaves).

Numerical diffusion: the bilinear split of an image at fractional offset t from a
centre adds t(1 − t)·dx² ≤ dx²/4 per axis and step (measured per column as the
mean-square kick ``added_var``, summed over both axes), on top of the within-cell
spread of the q² midpoints (which the exact step has too). ``diffusion_ratio`` compares
it with the minibatch spread η² tr Σ_b per step, as in 1-D: the max of
added_var / spread_var over the resolved cells (η² tr Σ_b at least
:data:`~sgdsweep.transfer.transfer1d.SPREAD_FLOOR`² of its largest value). Minibatch enumeration and
its limits are those of the 1-D operator (:mod:`~sgdsweep.transfer.minibatches`);
there is no convolution fallback in 2-D (more minibatches than ``max_minibatches`` is a
ConfigError).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba as nb
import numpy as np
import scipy.sparse as sp

from sgdsweep.errors import ConfigError
from sgdsweep.landscapes.grid import Grid1D
from sgdsweep.landscapes.initial import Initial
from sgdsweep.landscapes.landscape import Landscape
from sgdsweep.landscapes.noise import batch_noise_factor
from sgdsweep.transfer import markov
from sgdsweep.transfer.minibatches import check_sampling, enumerate_minibatches, minibatch_count
from sgdsweep.transfer.transfer1d import MAX_MINIBATCHES, SPREAD_FLOOR
from sgdsweep.validate import integer, real


@nb.njit(cache=True, inline="always")
def _split(y, lower, d, n):
    """Bilinear weights along one axis: (cell 0, cell 1, weight of cell 1), clamped."""
    f = (y - lower) / d - 0.5
    i0 = math.floor(f)
    t = f - i0
    i1 = i0 + 1
    if i0 < 0:
        i0 = 0
    if i1 < 0:
        i1 = 0
    if i0 > n - 1:
        i0 = n - 1
    if i1 > n - 1:
        i1 = n - 1
    return int(i0), int(i1), t


@nb.njit(cache=True)
def _assemble_2d(lx, dx, nx, ly, dy, ny, q, pts, sg, members, weights, step):
    N = nx * ny
    K, b = members.shape
    acc = np.zeros(N)
    mark = np.zeros(N, dtype=np.bool_)
    touched = np.empty(N, dtype=np.int64)
    cap = N * 16
    indices = np.empty(cap, dtype=np.int32)
    data = np.empty(cap)
    indptr = np.zeros(N + 1, dtype=np.int64)
    kick = np.zeros(N)
    nnz = 0
    qq = q * q
    for c in range(N):
        nt = 0
        for s in range(qq):
            p = c * qq + s
            for k in range(K):
                gx = 0.0
                gy = 0.0
                for r in range(b):
                    gx += sg[p, members[k, r], 0]
                    gy += sg[p, members[k, r], 1]
                yx = pts[p, 0] - step * gx
                yy = pts[p, 1] - step * gy
                m = weights[k] / qq
                ix0, ix1, tx = _split(yx, lx, dx, nx)
                iy0, iy1, ty = _split(yy, ly, dy, ny)
                kick[c] += m * (tx * (1.0 - tx) * dx * dx + ty * (1.0 - ty) * dy * dy)
                for a in range(2):
                    ix = ix0 if a == 0 else ix1
                    wx = (1.0 - tx) if a == 0 else tx
                    for e in range(2):
                        iy = iy0 if e == 0 else iy1
                        wy = (1.0 - ty) if e == 0 else ty
                        j = ix * ny + iy
                        if not mark[j]:
                            mark[j] = True
                            touched[nt] = j
                            nt += 1
                        acc[j] += m * wx * wy
        rows = np.sort(touched[:nt])
        tot = 0.0
        for u in range(nt):
            tot += acc[rows[u]]
        if nnz + nt > cap:
            cap = max(2 * cap, nnz + nt)
            ni = np.empty(cap, dtype=np.int32)
            nd = np.empty(cap)
            ni[:nnz] = indices[:nnz]
            nd[:nnz] = data[:nnz]
            indices = ni
            data = nd
        for u in range(nt):
            j = rows[u]
            v = acc[j] / tot
            acc[j] = 0.0
            mark[j] = False
            if v > 0.0:
                indices[nnz] = j
                data[nnz] = v
                nnz += 1
        indptr[c + 1] = nnz
    return indptr, indices[:nnz].copy(), data[:nnz].copy(), kick


@dataclass(frozen=True, eq=False)
class TransferOperator2D:
    """SGD's transfer operator on ``grids`` = (gx, gy); ``matrix`` (N, N) CSC, N = nx·ny,
    P[j, k] = probability of moving from flat cell k to flat cell j (k = ix·ny + iy).
    ``added_var`` (N,): mean-square bilinear-split kick per step (θ², both axes);
    ``spread_var`` (N,): the minibatch spread η² tr Σ_b per step at the cell centres (θ²);
    ``diffusion_ratio``: max added_var / spread_var over the resolved cells (NaN if none)."""

    matrix: sp.csc_matrix
    grids: tuple[Grid1D, Grid1D]
    lr: float
    minibatches: int
    added_var: np.ndarray
    spread_var: np.ndarray
    diffusion_ratio: float

    #: The operator lives on the density grid itself.
    refine = 1

    @property
    def shape(self) -> tuple[int, int]:
        return (self.grids[0].cells, self.grids[1].cells)

    @property
    def cell_volume(self) -> float:
        return self.grids[0].dx * self.grids[1].dx

    def coarsen(self, density: np.ndarray) -> np.ndarray:
        """Densities on the density grid: the operator's own grid (refine 1), returned as is."""
        return np.asarray(density)

    def initial_masses(self, init: Initial) -> np.ndarray:
        """Exact cell masses (N,) of an :class:`~sgdsweep.landscapes.initial.Initial` law
        (independent axes)."""
        per_axis = [Initial(init.kind, (init.mean[a],), (init.std[a],), (init.lower[a],),
                            (init.upper[a],)).cell_masses(g) for a, g in enumerate(self.grids)]
        return np.outer(*per_axis).ravel()

    def evolve(self, m0: np.ndarray, steps) -> np.ndarray:
        """Densities (per unit area) after ``steps`` SGD steps, shape (S, nx, ny)."""
        out = markov.evolve_masses(self.matrix, m0, steps) / self.cell_volume
        return out.reshape(-1, *self.shape)

    def stationary(self, m0: np.ndarray | None = None) -> np.ndarray:
        """Stationary density (per unit area), shape (nx, ny); see :func:`markov.stationary_masses`."""
        m = markov.stationary_masses(self.matrix, m0)
        return (m / self.cell_volume).reshape(self.shape)

    def relaxation(self) -> markov.Relaxation:
        return markov.relaxation(self.matrix, self.lr)


def sgd_transfer_2d(landscape: Landscape, grids, lr: float, batch_size: int = 1,
                    sampling: str = "with_replacement", *, quadrature: int = 2,
                    max_minibatches: int = MAX_MINIBATCHES) -> TransferOperator2D:
    """SGD's transfer operator on the 2-D grid ``grids`` = (gx, gy) (see module docstring)."""
    if not isinstance(landscape, Landscape):
        raise ConfigError(f"landscape: expected a sgdsweep Landscape, got {type(landscape).__name__}")
    if landscape.dim != 2:
        raise ConfigError(f"landscape.dim: the 2-D transfer operator needs dim 2, got {landscape.dim}")
    grids = tuple(grids)
    if len(grids) != 2 or not all(isinstance(g, Grid1D) for g in grids):
        raise ConfigError("grid: expected two Grid1D (x and y)")
    lr = real(lr, "lr", positive=True)
    q = integer(quadrature, "quadrature", 1)
    check_sampling(sampling)
    n = landscape.n
    b = integer(batch_size, "batch_size", 1)
    K = minibatch_count(n, b, sampling)
    if K > integer(max_minibatches, "max_minibatches", 1):
        raise ConfigError(f"max_minibatches: {K} distinct minibatches (n = {n}, b = {b}, {sampling}) exceed "
                          f"the limit {max_minibatches}; the 2-D operator has no convolution approximation")
    gx, gy = grids
    counts, weights = enumerate_minibatches(n, b, sampling)
    members = np.repeat(np.tile(np.arange(n), (K, 1)), counts.ravel()).reshape(K, b)
    # Sub-cell midpoints, ordered by flat cell (ix·ny + iy) then sub-point.
    ox = (np.arange(q) + 0.5) / q * gx.dx
    oy = (np.arange(q) + 0.5) / q * gy.dx
    X = gx.edges[:-1][:, None, None, None] + ox[None, None, :, None]
    Y = gy.edges[:-1][None, :, None, None] + oy[None, None, None, :]
    pts = np.stack(np.broadcast_arrays(X, Y), axis=-1).reshape(-1, 2)
    sg = landscape.evaluate(pts)["sample_grads"]  # (M, n, 2)
    if not np.all(np.isfinite(sg)):
        raise ConfigError("landscape: non-finite gradients on the grid")
    indptr, indices, data, kick = _assemble_2d(
        gx.lower, gx.dx, gx.cells, gy.lower, gy.dx, gy.cells, q, np.ascontiguousarray(pts),
        np.ascontiguousarray(sg), np.ascontiguousarray(members, dtype=np.int64), weights, lr / b)
    N = gx.cells * gy.cells
    P = sp.csc_matrix((data, indices, indptr), shape=(N, N))
    centres = np.stack(np.meshgrid(gx.centres, gy.centres, indexing="ij"), axis=-1).reshape(-1, 2)
    cov = landscape.evaluate(centres)["cov"]
    spread = lr**2 * batch_noise_factor(n, b, sampling) * (cov[:, 0, 0] + cov[:, 1, 1])
    smax = float(spread.max())
    resolved = spread >= SPREAD_FLOOR**2 * smax if smax > 0 else np.zeros(N, bool)
    ratio = float(np.max(kick[resolved] / spread[resolved])) if resolved.any() else math.nan
    return TransferOperator2D(P, (gx, gy), lr, K, kick, spread, ratio)
