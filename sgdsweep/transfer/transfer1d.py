"""SGD's one-step transfer (Perron–Frobenius) operator on a 1-D density grid, and the
Gaussian step kernel (``gauss_step``).

**The operator.** One SGD step maps θ to f_B(θ) = θ − η ḡ_B(θ) for the minibatch B drawn
with probability w_B (:mod:`~sgdsweep.transfer.minibatches`). On cells,

    P[j, i] = Σ_B w_B · (fraction of cell i whose image under f_B lands in cell j),

so cell masses evolve as m ← P m (P column-stochastic; time t = η·step). Cell i is cut
into ``quadrature`` equal sub-cells; the image of a sub-cell [a, a′] under f_B is taken
to be [f_B(a), f_B(a′)] (f_B linear across the sub-cell, exact for quadratic losses) with
its mass spread uniformly, and split over the target cells by overlap
(:mod:`~sgdsweep.transfer.assemble`; images past the grid are clamped into the edge
cell). ``gauss_step`` replaces the minibatch mixture by one Gaussian of mean θ − ηG(θ)
and variance η²Σ_b(θ) (Σ_b = Σ·:func:`~sgdsweep.landscapes.noise.batch_noise_factor`), integrated
exactly over the target cells: the density of Euler–Maruyama of the Itô SDE at dt = η.

**Numerical diffusion.** Reading the cell masses back as uniform densities adds
variance to every step: a mean-square kick of at most dx²/3 (r(1 − r)·dx² for a
translation by r·dx; dx²/4 + dx²/12 for a point image on a cell face), measured per
column as ``added_var`` (:mod:`~sgdsweep.transfer.assemble`). It must be small against
the minibatch variance η²Σ_b. By default the operator is therefore built on a grid
``refine`` times finer than the output grid, with the smallest refine (1, 2, 4, …
≤ ``max_refine``) for which the a-priori bound dx²/3 is below ``diffusion_ratio``
(default 1 %) of η²Σ_b on the *resolved* cells: those where η√Σ_b is at least
``spread_floor`` (10 %) of its largest value on the grid. Where Σ_b is smaller still
(e.g. where every sample agrees) SGD is locally deterministic and the operator is a
first-order transport with the ≤ dx²/3 per-step diffusion of upwinding, as the
``fp_drift`` method is. When ``max_refine`` cannot meet the target a ``RuntimeWarning``
says so; a grid whose cells are wider than the largest minibatch spread even after
refinement is a ``ConfigError``.

**Many minibatches.** Beyond ``max_minibatches`` distinct minibatches the step law at
each sub-cell midpoint is the binned b-fold convolution of the per-sample updates
(:mod:`~sgdsweep.transfer.convolution`; mean exact, variance high by ≤ b·h²/4 = dx²/16
per step), each atom carrying the sub-cell translated and stretched by the mean map's
slope |1 − ηL″|: the spread of slopes between minibatches is neglected there.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from sgdsweep.errors import ConfigError
from sgdsweep.landscapes.grid import Grid1D
from sgdsweep.landscapes.landscape import Landscape
from sgdsweep.landscapes.noise import batch_noise_factor
from sgdsweep.transfer import markov
from sgdsweep.transfer.assemble import assemble, assemble_minibatches
from sgdsweep.transfer.convolution import ATOM_CUT, binned_step_laws
from sgdsweep.transfer.gradients import grad_mean_var, sample_grads
from sgdsweep.transfer.minibatches import check_sampling, enumerate_minibatches, minibatch_count
from sgdsweep.validate import integer, real

#: Default cap on enumerated minibatches (beyond it: binned convolution, or an error).
MAX_MINIBATCHES = 4096
#: Default target: a-priori numerical variance per step / minibatch variance on resolved cells.
DIFFUSION_RATIO = 0.01
#: Cells whose minibatch spread is below this fraction of the largest are not "resolved".
SPREAD_FLOOR = 0.1
#: Default cap on the automatic refinement.
MAX_REFINE = 64
#: Sub-cells per cell.
QUADRATURE = 4
_SQRT3 = math.sqrt(3.0)


@dataclass(frozen=True)
class Escape:
    """Mean first-passage time of the chain from an initial law: in SGD steps and in t = η·steps."""

    steps: float
    time: float


@dataclass(frozen=True, eq=False)
class TransferOperator1D:
    """A one-step density operator of SGD (``kind`` 'sgd') or of its Gaussian step ('gauss_step').

    ``matrix`` (N, N) CSC: P[j, i] = probability that one step moves mass from cell i to
    cell j of ``grid`` (N = base.cells · refine), columns summing to 1. Per fine cell:
    ``added_var`` the numerical diffusion of one step, the mean-square projection kick
    (θ², :mod:`~sgdsweep.transfer.assemble`),
    ``spread_var`` the minibatch variance η²Σ_b (θ²) at the cell centre, ``clamped`` the
    fraction of the column's mass clamped into an edge cell. ``diffusion_ratio`` is the
    measured max of added_var / spread_var over the resolved cells (see the module
    docstring); ``lattice_var`` bounds the extra variance per step of the binned
    convolution (0 when minibatches are enumerated). ``approximation`` is 'exact'
    (enumerated minibatches), 'convolution' or 'gaussian'.
    """

    matrix: sp.csc_matrix
    grid: Grid1D
    base: Grid1D
    refine: int
    lr: float
    kind: str
    minibatches: int
    approximation: str
    added_var: np.ndarray
    spread_var: np.ndarray
    clamped: np.ndarray
    diffusion_ratio: float
    lattice_var: float

    # ------------------------------------------------------------- grids and laws

    @property
    def grids(self) -> tuple[Grid1D]:
        """(grid,): the fine grid the operator lives on."""
        return (self.grid,)

    @property
    def shape(self) -> tuple[int]:
        return (self.grid.cells,)

    @property
    def cell_volume(self) -> float:
        return self.grid.dx

    def initial_masses(self, init) -> np.ndarray:
        """Exact cell masses (N,) of an :class:`~sgdsweep.landscapes.initial.Initial` law on the fine grid."""
        return init.cell_masses(self.grid)

    def coarsen(self, density: np.ndarray) -> np.ndarray:
        """Average fine-grid densities (…, N) onto the base grid (…, base.cells)."""
        d = np.asarray(density)
        return d.reshape(*d.shape[:-1], self.base.cells, self.refine).mean(axis=-1)

    # ------------------------------------------------------------- dynamics

    def evolve(self, m0: np.ndarray, steps) -> np.ndarray:
        """Densities (per unit θ) on the fine grid after ``steps`` (S,) SGD steps, shape (S, N).

        ``m0`` are the initial cell masses (e.g. :meth:`initial_masses`); snapshot time t = η·step.
        """
        return markov.evolve_masses(self.matrix, m0, steps) / self.cell_volume

    def stationary(self, m0: np.ndarray | None = None) -> np.ndarray:
        """The stationary density (per unit θ, Σ p·dx = 1) on the fine grid, by direct sparse solves.

        ``m0`` (initial cell masses) is needed only when the chain has several closed
        classes, where the limit depends on it (:func:`~sgdsweep.transfer.markov.stationary_masses`).
        """
        return markov.stationary_masses(self.matrix, m0) / self.cell_volume

    def relaxation(self) -> markov.Relaxation:
        """Second eigenvalue and relaxation time τ = −η / ln|λ₂| (t units) and in steps."""
        return markov.relaxation(self.matrix, self.lr)

    def escape(self, m0: np.ndarray, threshold: float, direction: int) -> Escape:
        """Mean first passage from the initial masses ``m0`` past ``threshold``.

        ``direction`` +1: passage means θ > threshold; −1: θ < threshold, checked at the
        end of each step as in the Monte Carlo ensembles (mass already past it counts 0).
        The threshold is resolved to cell faces: the passage times for the faces on
        either side are interpolated linearly in its position.
        """
        thr = real(threshold, "escape.threshold")
        if direction not in (1, -1):
            raise ConfigError(f"escape.direction: must be +1 or -1, got {direction!r}")
        m0 = np.asarray(m0, dtype=np.float64)
        g = self.grid
        if not g.lower < thr < g.upper:
            raise ConfigError(f"escape.threshold: {thr} lies outside the grid [{g.lower}, {g.upper}]")
        k, w = face_position(g, thr)
        T = self._past_face(k, direction)
        if w > 0.0:
            T = interpolate_passage(T, self._past_face(k + 1, direction), w)
        steps = markov.mean_over_start(T, m0)
        return Escape(steps, steps * self.lr)

    def _past_face(self, face: int, direction: int) -> np.ndarray:
        """Mean steps per start cell until θ is past face ``face`` of the fine grid (upwards
        for ``direction`` +1: the cells above it absorb; −1: the cells below it)."""
        j = np.arange(self.grid.cells)
        return markov.passage_steps(self.matrix, j >= face if direction > 0 else j < face)


#: A threshold within this fraction of a cell of a face is on the face (rounding errors of
#: the faces, e.g. 0.1 + 0.2 − 0.3, must not put it a hair inside the neighbouring cell).
FACE_SNAP = 1e-9


def face_position(grid: Grid1D, threshold: float) -> tuple[int, float]:
    """(k, w): ``threshold`` = edges[k] + w·dx with 0 ≤ w < 1 for a threshold inside
    ``grid``; w is 0 exactly when the threshold lies on a face (to within :data:`FACE_SNAP`
    of a cell; then k is that face, which may be the upper edge)."""
    edges = grid.edges
    k = min(max(int(np.searchsorted(edges, threshold, side="right")) - 1, 0), grid.cells - 1)
    w = (threshold - edges[k]) / grid.dx
    if w <= FACE_SNAP:
        return k, 0.0
    if w >= 1.0 - FACE_SNAP:
        return k + 1, 0.0
    return k, float(w)


def interpolate_passage(t_a: np.ndarray, t_b: np.ndarray, w: float) -> np.ndarray:
    """(1 − w)·t_a + w·t_b for passage times (≥ 0, inf where never) with 0 < w < 1: inf
    wherever either is inf (both weights are positive), never NaN."""
    finite = np.isfinite(t_a) & np.isfinite(t_b)
    out = np.full(t_a.shape, np.inf)
    out[finite] = (1.0 - w) * t_a[finite] + w * t_b[finite]
    return out


# --------------------------------------------------------------------------- building


def _check_common(landscape: Landscape, grid: Grid1D, lr: float, quadrature: int):
    if not isinstance(landscape, Landscape):
        raise ConfigError(f"landscape: expected a sgdsweep Landscape, got {type(landscape).__name__}")
    if landscape.dim != 1:
        raise ConfigError(f"landscape.dim: the transfer operator is 1-D, got dim {landscape.dim}")
    if not isinstance(grid, Grid1D):
        raise ConfigError(f"grid: expected a Grid1D, got {type(grid).__name__}")
    lr = real(lr, "lr", positive=True)
    quadrature = integer(quadrature, "quadrature", 1)
    return lr, quadrature


def _spread_std(landscape: Landscape, grid: Grid1D, lr: float, factor: float, probe: int = 4):
    """η·sqrt(Σ_b) on a probe grid ``probe`` times finer than ``grid``."""
    x = grid.refined(probe).centres
    cov = grad_mean_var(landscape, x)[1]
    return lr * np.sqrt(np.maximum(factor * cov, 0.0))


def choose_refine(landscape: Landscape, grid: Grid1D, lr: float, factor: float, refine: int | None,
                  *, diffusion_ratio: float = DIFFUSION_RATIO, spread_floor: float = SPREAD_FLOOR,
                  max_refine: int = MAX_REFINE) -> int:
    """The refinement of ``grid`` the operator is built on (see the module docstring).

    ``refine`` None: the smallest power of two ≤ ``max_refine`` with dx²/3 ≤
    diffusion_ratio · η²Σ_b on every resolved cell (η√Σ_b ≥ spread_floor · its max),
    with a RuntimeWarning when none is.
    ConfigError when the refined cells are wider than the largest minibatch spread.
    """
    spread = _spread_std(landscape, grid, lr, factor)
    smax = float(spread.max())
    if refine is None:
        max_refine = integer(max_refine, "max_refine", 1)
        resolved = spread[spread >= spread_floor * smax]
        target = math.sqrt(diffusion_ratio) * (float(resolved.min()) if smax > 0 else 0.0)
        # dx/√3 (the worst rms kick) must be below ``target``
        refine = 1
        while refine < max_refine and grid.dx / refine / _SQRT3 > target:
            refine *= 2
        refine = min(refine, max_refine)
        fine_dx = grid.dx / refine
        if smax > 0 and fine_dx / _SQRT3 > target and fine_dx < smax:
            warnings.warn(
                f"grid.cells: numerical diffusion (dx/√3 = {fine_dx / _SQRT3:.3g} at refine {refine}) is not "
                f"below {math.sqrt(diffusion_ratio):.3g} of the minibatch spread on the resolved cells "
                f"(smallest {target / math.sqrt(diffusion_ratio):.3g}); use more cells or a larger "
                "max_refine",
                RuntimeWarning, stacklevel=3)
    else:
        refine = integer(refine, "refine", 1)
    fine_dx = grid.dx / refine
    if smax > 0 and fine_dx >= smax:
        need = math.ceil((grid.upper - grid.lower) / smax * 2.0)
        raise ConfigError(
            f"grid.cells: {grid.cells} cells × refine {refine} (dx = {fine_dx:.3g}) are too coarse for "
            f"the step: the largest minibatch spread η·sqrt(Σ_b) is {smax:.3g} < dx; use at least "
            f"{need} cells")
    return refine


def _sub_points(grid: Grid1D, q: int) -> tuple[np.ndarray, np.ndarray]:
    """Sub-cell faces (N·q + 1,) and midpoints (N·q,)."""
    sub = grid.refined(q)
    return sub.edges, sub.centres


def _finish(P, added, clamped, grid, base, refine, lr, kind, K, approx, spread_var, lattice_var):
    smax = float(np.sqrt(spread_var.max()))
    resolved = np.sqrt(spread_var) >= SPREAD_FLOOR * smax if smax > 0 else np.zeros(grid.cells, bool)
    resolved &= clamped < 1e-12
    ratio = float(np.max(added[resolved] / spread_var[resolved])) if resolved.any() else math.nan
    return TransferOperator1D(P, grid, base, refine, lr, kind, K, approx, added, spread_var, clamped,
                            ratio, lattice_var)


def sgd_transfer(
    landscape: Landscape,
    grid: Grid1D,
    lr: float,
    batch_size: int = 1,
    sampling: str = "with_replacement",
    *,
    refine: int | None = None,
    quadrature: int = QUADRATURE,
    max_minibatches: int = MAX_MINIBATCHES,
    approximate: bool = True,
    diffusion_ratio: float = DIFFUSION_RATIO,
    max_refine: int = MAX_REFINE,
) -> TransferOperator1D:
    """SGD's one-step transfer operator on ``grid`` refined ``refine`` times (None: automatic).

    Minibatches are enumerated exactly while there are at most ``max_minibatches``
    distinct ones; beyond that the binned convolution is used if ``approximate``, else
    ConfigError. ``reshuffle`` is a ConfigError (not Markov in θ). See the module docstring.
    """
    lr, q = _check_common(landscape, grid, lr, quadrature)
    check_sampling(sampling)
    n = landscape.n
    b = integer(batch_size, "batch_size", 1)
    K = minibatch_count(n, b, sampling)
    max_minibatches = integer(max_minibatches, "max_minibatches", 1)
    if K > max_minibatches and not approximate:
        raise ConfigError(
            f"max_minibatches: {K} distinct minibatches (n = {n}, b = {b}, {sampling}) exceed the limit "
            f"{max_minibatches} and the binned-convolution approximation is off")
    factor = batch_noise_factor(n, b, sampling)
    refine = choose_refine(landscape, grid, lr, factor, refine, diffusion_ratio=diffusion_ratio,
                           max_refine=max_refine)
    fine = grid.refined(refine)
    N = fine.cells
    faces, mids = _sub_points(fine, q)
    spread_var = lr * lr * factor * grad_mean_var(landscape, fine.centres)[1]
    if K <= max_minibatches:
        counts, weights = enumerate_minibatches(n, b, sampling)
        members = np.repeat(np.tile(np.arange(n), (K, 1)), counts.ravel()).reshape(K, b)
        sg = sample_grads(landscape, faces)  # (M, n)
        if not np.all(np.isfinite(sg)):
            raise ConfigError("landscape: non-finite gradients on the grid")
        P, kick, _pre, _post, clamped = assemble_minibatches(fine.lower, fine.dx, N, q, faces, sg,
                                                              members, weights, lr / b)
        return _finish(P, kick, clamped, fine, grid, refine, lr, "sgd", K, "exact", spread_var, 0.0)

    ev = landscape.evaluate(mids)
    U = -(lr / b) * ev["sample_grads"][:, :, 0]  # (N·q, n) per-sample updates
    if not np.all(np.isfinite(U)):
        raise ConfigError("landscape: non-finite gradients on the grid")
    h = fine.dx / (2.0 * math.sqrt(b))
    start, off, probs = binned_step_laws(U, b, h, sampling == "without_replacement")
    lens = np.diff(off)
    point = np.repeat(np.arange(mids.size), lens)
    local = np.arange(probs.size) - off[point]
    peak = np.maximum.reduceat(probs, off[:-1])
    keep = probs >= ATOM_CUT * peak[point]
    point, local, p = point[keep], local[keep], probs[keep]
    width = (fine.dx / q) * np.abs(1.0 - lr * ev["hess"][:, 0, 0])
    centre = mids[point] + (start[point] + local) * h
    lo = centre - 0.5 * width[point]
    hi = centre + 0.5 * width[point]
    col = point // q
    ptr = np.concatenate(([0], np.cumsum(np.bincount(col, minlength=N)))).astype(np.int64)
    P, kick, _pre, _post, clamped = assemble(fine.lower, fine.dx, N, ptr, lo, hi, np.zeros_like(lo), p / q)
    return _finish(P, kick, clamped, fine, grid, refine, lr, "sgd", K, "convolution", spread_var,
                   b * h * h / 4.0)


def gauss_step(
    landscape: Landscape,
    grid: Grid1D,
    lr: float,
    noise_factor: float,
    *,
    refine: int | None = None,
    quadrature: int = QUADRATURE,
    diffusion_ratio: float = DIFFUSION_RATIO,
    max_refine: int = MAX_REFINE,
) -> TransferOperator1D:
    """The Gaussian step kernel: θ → N(θ − ηG(θ), η²·noise_factor·Σ(θ)), on ``grid`` refined.

    ``noise_factor`` is Σ_b/Σ (:func:`~sgdsweep.landscapes.noise.batch_noise_factor`). Each sub-cell
    is carried by the mean map as in :func:`sgd_transfer` and blurred by the Gaussian of
    its midpoint, integrated exactly over the target cells.
    """
    lr, q = _check_common(landscape, grid, lr, quadrature)
    factor = real(noise_factor, "noise_factor", nonnegative=True)
    refine = choose_refine(landscape, grid, lr, factor, refine, diffusion_ratio=diffusion_ratio,
                           max_refine=max_refine)
    fine = grid.refined(refine)
    N = fine.cells
    faces, mids = _sub_points(fine, q)
    Y = faces - lr * grad_mean_var(landscape, faces)[0]
    sig = lr * np.sqrt(factor * grad_mean_var(landscape, mids)[1])
    if not (np.all(np.isfinite(Y)) and np.all(np.isfinite(sig))):
        raise ConfigError("landscape: non-finite gradients on the grid")
    lo = np.minimum(Y[:-1], Y[1:])
    hi = np.maximum(Y[:-1], Y[1:])
    ptr = np.arange(N + 1, dtype=np.int64) * q
    mass = np.full(N * q, 1.0 / q)
    P, kick, _pre, _post, clamped = assemble(fine.lower, fine.dx, N, ptr, lo, hi, sig, mass)
    spread_var = lr * lr * factor * grad_mean_var(landscape, fine.centres)[1]
    return _finish(P, kick, clamped, fine, grid, refine, lr, "gauss_step", 0, "gaussian", spread_var,
                   0.0)
