"""1-D Fokker–Planck solver: finite volumes with Scharfetter–Gummel fluxes.

The Itô Fokker–Planck equation of the SGD SDE dθ = −G dt + sqrt(2D) dW is

    ∂p/∂t = −∂J/∂θ,   J = −G p − ∂(D p)/∂θ,        D = η Σ_b / 2,

with time in SDE units t = η·step. The convention enters through α
(``cellconfig.CONVENTIONS``: Itô 1, Stratonovich ½, isothermal 0): the flux is
written J = −(G + α D′) p − D ∂p/∂θ, an effective drift G_eff = G + α D′ acting
on p with diffusion D. α = 1 is exactly the Itô equation; the stationary density
is p ∝ D^(−α) exp(−∫ G/D dθ).

The pieces are kept apart so that a 2-D solver can reuse the idea face by face:

* :func:`face_coefficients` — per-face flux coefficients (A, C), J_f = A_f p_j − C_f p_{j+1};
* :class:`FokkerPlanck1D` — the operator on a :class:`~sgdsweep.landscapes.grid.Grid1D`, with
  :meth:`~FokkerPlanck1D.stationary` (direct zero-flux solve) and
  :meth:`~FokkerPlanck1D.evolve` (implicit Euler, Thomas algorithm).

Every interior face uses the Scharfetter–Gummel flux

    J_f = (D_f/h) [B(Pe) p_j − B(−Pe) p_{j+1}],  Pe = G_eff,f h / D_f,  B(z) = z/(eᶻ − 1),

exact for constant coefficients on the face, which makes the zero-flux ratio
p_{j+1}/p_j = e^(−Pe) (second order to the analytic stationary density). Where
D_f → 0 the flux tends to pure upwinding of −G_eff, so the drift-only mode
(D ≡ 0, gradient descent of a density) is the same code. A, C ≥ 0 and boundary faces
carry no flux, so the generator is an M-matrix with zero column sums: implicit
steps keep p ≥ 0 and conserve mass to round-off.
"""

from __future__ import annotations

import math
from functools import cached_property

import numba as nb
import numpy as np
import scipy.sparse as sp

from sgdsweep.errors import ConfigError
from sgdsweep.fokker_planck.march import march
from sgdsweep.fokker_planck.operator import Monotonicity, Stationary
from sgdsweep.landscapes.grid import Grid1D
from sgdsweep.landscapes.noise import diffusion
from sgdsweep.transfer.markov import Relaxation, generator_relaxation
from sgdsweep.validate import real

#: |Pe| beyond which B(|Pe|) = |Pe| e^(−|Pe|) underflows: the face is pure upwinding.
PE_UPWIND = 1.0e3
#: Cap on |Pe| in the stationary log-ratio so that D = 0 faces stay finite (e^(−1e6) = 0).
PE_CLIP = 1.0e6
#: A stationary density spread over fewer cells than this (participation ratio) is collapsed.
COLLAPSE_CELLS = 3.0


@nb.njit(cache=True)
def bernoulli(z: float) -> float:
    """B(z) = z / (eᶻ − 1), overflow-safe, with B(0) = 1 and B(−z) = B(z) + z."""
    if abs(z) < 1e-4:
        return 1.0 - 0.5 * z + z * z / 12.0
    if z > 0.0:
        # z e^(−z) / (1 − e^(−z)) never overflows.
        return z * math.exp(-z) / (-math.expm1(-z))
    return z / math.expm1(z)


@nb.njit(cache=True)
def _face_coefficients(drift_faces, diff_faces, diff_centres, h, alpha, A, C):
    n = diff_centres.shape[0]
    A[0] = 0.0
    C[0] = 0.0
    A[n] = 0.0
    C[n] = 0.0
    for f in range(1, n):
        g = drift_faces[f] + alpha * (diff_centres[f] - diff_centres[f - 1]) / h
        d = diff_faces[f]
        if d <= 0.0 or abs(g) * h > PE_UPWIND * d:
            # Exact D → 0 limit of the Scharfetter–Gummel flux.
            A[f] = max(-g, 0.0)
            C[f] = max(g, 0.0)
        else:
            pe = g * h / d
            A[f] = d / h * bernoulli(pe)
            C[f] = d / h * bernoulli(-pe)


def face_coefficients(drift_faces: np.ndarray, diff_faces: np.ndarray, diff_centres: np.ndarray,
                      h: float, alpha: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Flux coefficients (A, C), each (N+1,), with J_f = A_f p_{f−1} − C_f p_f on face f.

    Face f separates cells f−1 and f; faces 0 and N are the zero-flux walls (A = C = 0).
    Units: A, C are velocities (θ per unit SDE time).
    """
    n = diff_centres.shape[0]
    A = np.empty(n + 1)
    C = np.empty(n + 1)
    _face_coefficients(drift_faces, diff_faces, diff_centres, float(h), float(alpha), A, C)
    return A, C


@nb.njit(cache=True)
def _implicit_euler(A, C, h, dt, nsteps, p):
    """``nsteps`` implicit Euler steps (I − dt M) p⁺ = p in place; Thomas algorithm, O(N) each."""
    n = p.shape[0]
    r = dt / h
    lower = np.empty(n)
    cp = np.empty(n)
    inv_m = np.empty(n)
    # Factorise once: the matrix is a nonsingular M-matrix, so every pivot is positive
    # and each sweep only adds non-negative numbers (p stays ≥ 0).
    for j in range(n):
        diag = 1.0 + r * (A[j + 1] + C[j])
        lower[j] = -r * A[j]
        upper = -r * C[j + 1]
        m = diag if j == 0 else diag - lower[j] * cp[j - 1]
        inv_m[j] = 1.0 / m
        cp[j] = upper * inv_m[j]
    for _ in range(nsteps):
        p[0] = p[0] * inv_m[0]
        for j in range(1, n):
            p[j] = (p[j] - lower[j] * p[j - 1]) * inv_m[j]
        for j in range(n - 2, -1, -1):
            p[j] = p[j] - cp[j] * p[j + 1]


class FokkerPlanck1D:
    """The Fokker–Planck operator of one 1-D cell on a grid (see module docstring).

    Parameters are sampled on the grid: ``drift_faces`` G and ``diff_faces`` D at the
    N+1 faces, ``diff_centres`` D at the N centres (for the convention term α D′).
    Units: θ dimensionless, time in SDE units t = η·step, D in θ²/time. It is a
    :class:`~sgdsweep.fokker_planck.operator.FokkerPlanckOperator` (``grids`` = (grid,)).
    """

    def __init__(self, grid: Grid1D, drift_faces: np.ndarray, diff_faces: np.ndarray,
                 diff_centres: np.ndarray, alpha: float = 1.0) -> None:
        n = grid.cells
        self.grid = grid
        self.grids = (grid,)
        self.shape = (n,)
        self.drift_faces = self._checked(drift_faces, n + 1, "drift_faces")
        self.diff_faces = self._checked(diff_faces, n + 1, "diff_faces", nonneg=True)
        self.diff_centres = self._checked(diff_centres, n, "diff_centres", nonneg=True)
        if not (math.isfinite(alpha) and 0.0 <= alpha <= 1.0):
            raise ConfigError(f"alpha: convention power must lie in [0, 1], got {alpha!r}")
        self.alpha = float(alpha)
        self.A, self.C = face_coefficients(self.drift_faces, self.diff_faces, self.diff_centres,
                                           grid.dx, self.alpha)
        lower, _, upper = self.tridiagonal()
        off = np.concatenate([lower[1:], upper[:-1]])
        neg = off < 0.0
        # Scharfetter–Gummel weights are ≥ 0 at any D ≥ 0: an M-matrix (checked, not assumed).
        self.monotonicity = Monotonicity(faces=n - 1, faces_violating=0, negative_offdiag=int(neg.sum()),
                                         min_offdiag=float(off[neg].min()) if neg.any() else 0.0)

    @staticmethod
    def _checked(values: np.ndarray, size: int, name: str, nonneg: bool = False) -> np.ndarray:
        arr = np.ascontiguousarray(values, dtype=np.float64)
        if arr.shape != (size,):
            raise ConfigError(f"{name}: expected shape ({size},), got {arr.shape}")
        if not np.all(np.isfinite(arr)):
            raise ConfigError(f"{name}: must be finite")
        if nonneg:
            if np.any(arr < 0.0):
                raise ConfigError(f"{name}: diffusion must be >= 0, min is {arr.min()!r}")
        return arr

    @classmethod
    def from_landscape(cls, landscape, grid: Grid1D, lr: float, noise_factor: float,
                       alpha: float = 1.0, drift_only: bool = False,
                       sme2: bool = False) -> FokkerPlanck1D:
        """The FP operator of SGD on ``landscape``: G = ∇L, D = η Σ_b / 2.

        ``noise_factor`` is Σ_b / Σ (:func:`sgdsweep.landscapes.noise.batch_noise_factor`);
        ``drift_only`` sets D ≡ 0 (gradient descent of a density, the ``fp_drift`` method);
        ``sme2`` uses the drift of the second-order stochastic modified equation (Li, Tai &
        E 2017), ∇(L + (η/4)|∇L|²) = G + (η/2)·L″·G, with the same D.
        """
        if landscape.dim != 1:
            raise ConfigError(f"landscape.dim: the 1-D Fokker–Planck solver needs dim 1, got {landscape.dim}")
        lr = real(lr, "lr", positive=True)
        noise_factor = real(noise_factor, "noise_factor", nonnegative=True)
        faces = landscape.evaluate(grid.edges)
        drift = faces["grad"][:, 0]
        if sme2:
            drift = drift + 0.5 * lr * faces["hess"][:, 0, 0] * drift
        if drift_only:
            d_faces = np.zeros(grid.cells + 1)
            d_centres = np.zeros(grid.cells)
        else:
            centres = landscape.evaluate(grid.centres)
            d_faces = diffusion(faces["cov"][:, 0, 0], lr, noise_factor)
            d_centres = diffusion(centres["cov"][:, 0, 0], lr, noise_factor)
        return cls(grid, drift, d_faces, d_centres, alpha)

    # ------------------------------------------------------------------ operator

    @property
    def cell_volume(self) -> float:
        """dx: a density times it is the mass per cell."""
        return self.grid.dx

    def tridiagonal(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Tridiagonal dp/dt = M p as (lower, diag, upper), each (N,) (lower[0], upper[-1] = 0).

        M[j, j−1] = lower[j], M[j, j] = diag[j], M[j, j+1] = upper[j]; columns sum to 0.
        """
        h = self.grid.dx
        A, C = self.A, self.C
        lower = A[:-1] / h
        diag = -(A[1:] + C[:-1]) / h
        upper = C[1:] / h
        return lower, diag, upper

    @cached_property
    def generator(self) -> sp.csc_matrix:
        """M as a sparse (N × N) matrix (the :meth:`tridiagonal` bands)."""
        lower, diag, upper = self.tridiagonal()
        return sp.diags([lower[1:], diag, upper[:-1]], [-1, 0, 1], format="csc")

    def relaxation(self) -> Relaxation:
        """The slowest decay of dp/dt = M p (:func:`~sgdsweep.transfer.markov.generator_relaxation`)."""
        return generator_relaxation(self.generator)

    def stationary(self) -> Stationary:
        """Direct solve of zero flux on every face: log p_{j+1} = log p_j − Pe_f.

        Computed in log space with |Pe| capped at ``PE_CLIP``, so D = 0 faces give
        exact zeros instead of overflow. Faces with D = 0 and G_eff = 0 couple
        nothing; there the solve joins the two sides flat (the null space is not unique).
        """
        h = self.grid.dx
        g = self.drift_faces[1:-1] + self.alpha * np.diff(self.diff_centres) / h
        d = self.diff_faces[1:-1]
        with np.errstate(divide="ignore", invalid="ignore"):
            pe = np.where(d > 0.0, g * h / d, np.sign(g) * np.inf)
        pe = np.nan_to_num(np.clip(pe, -PE_CLIP, PE_CLIP), nan=0.0)
        logp = np.concatenate(([0.0], -np.cumsum(pe)))
        p = np.exp(logp - logp.max())
        p /= p.sum() * h
        collapsed = self._collapsed(p)
        message = ("stationary density collapsed below the grid resolution (D → 0 there, or the "
                   "grid is too coarse)") if collapsed else ""
        return Stationary(p, collapsed, float(min(p.min(), 0.0)), self._residual(p), message)

    def _residual(self, p: np.ndarray) -> float:
        """‖M p‖₁ / (‖M‖₁ ‖p‖₁)."""
        M = self.generator
        norm_m = float(np.max(np.abs(M).sum(axis=0)))
        return float(np.abs(M @ p).sum() / (norm_m * np.abs(p).sum())) if norm_m > 0 else 0.0

    def _collapsed(self, p: np.ndarray) -> bool:
        """The density sits on fewer than ``COLLAPSE_CELLS`` cells (participation ratio)."""
        w = p * self.grid.dx
        return 1.0 / float(np.sum(w * w)) < COLLAPSE_CELLS

    def evolve(self, p0: np.ndarray, times: np.ndarray, dt: float) -> np.ndarray:
        """Implicit-Euler densities at ``times`` (S,), shape (S, N), starting from ``p0`` at t = 0.

        ``p0`` is a cell-average density (Σ p0·dx = 1 for a probability law); mass is
        conserved, so every snapshot keeps p0's mass. Stepping: :func:`~.march.march`
        (Thomas algorithm, one factorisation per call).
        """

        def advance(p: np.ndarray, h: float, nsteps: int) -> np.ndarray:
            _implicit_euler(self.A, self.C, self.grid.dx, h, nsteps, p)
            return p

        return march(p0, self.shape, times, dt, advance)

    def current(self, p: np.ndarray) -> np.ndarray:
        """Face flux (…, N+1) of the Scharfetter–Gummel scheme: J_f = A_f p_{f−1} − C_f p_f.

        The operator's own coefficients, so dp/dt = −ΔJ/dx; p has cells on its last axis.
        Wall faces carry exactly zero; J > 0 flows towards larger θ.
        """
        p = np.asarray(p, dtype=np.float64)
        n = self.grid.cells
        if p.shape[-1] != n:
            raise ConfigError(f"p: expected {n} cells on the last axis, got shape {p.shape}")
        J = np.zeros((*p.shape[:-1], n + 1))
        J[..., 1:-1] = self.A[1:-1] * p[..., :-1] - self.C[1:-1] * p[..., 1:]
        return J

    def centre_current(self, p: np.ndarray) -> np.ndarray:
        """J at the cell centres (…, N): the mean of each cell's two face fluxes."""
        J = self.current(p)
        return 0.5 * (J[..., :-1] + J[..., 1:])
