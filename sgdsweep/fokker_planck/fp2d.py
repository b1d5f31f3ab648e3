"""2-D Fokker–Planck solver with a full, state-dependent diffusion matrix.

The Itô Fokker–Planck equation of the SGD SDE dθ = −G dt + sqrt(2D) dW, θ ∈ R², is

    ∂p/∂t = −∇·J,   J_i = −G_i p − Σ_j ∂_j(D_ij p),        D = η Σ_b / 2,

time in SDE units t = η·step, on the rectangle of two :class:`~sgdsweep.landscapes.grid.Grid1D`
with zero-flux walls. The convention enters through α as in 1-D
(``cellconfig.CONVENTIONS``): J_i = −(G_i + α Σ_j ∂_j D_ij) p − Σ_j D_ij ∂_j p.
α = 1 (Itô) and α = 0 (isothermal) are exact; α = ½ is the Stratonovich equation
when the noise directions do not rotate with θ (e.g. constant or scalar-times-constant
D). Written in the scheme's split form the flux on an x-face is

    J_x = −G_eff,x p − D_xx ∂_x p − ∂_y(D_xy p),   G_eff,x = G_x + α ∂_x D_xx − (1 − α) ∂_y D_xy,

and symmetrically on a y-face.

Discretisation (conservative finite volumes, cell index (i, j) = (x, y), p shape (nx, ny)):

* the diagonal part −G_eff,x p − D_xx ∂_x p is the 1-D Scharfetter–Gummel flux
  (:func:`sgdsweep.fokker_planck.fp1d.face_coefficients`) row by row, and likewise along y.
  Where D_xx → 0 it is pure upwinding of −G_eff (the ``drift_only`` mode is the same code);
* the cross term −∂_y(D_xy p) on the x-face between cells L = (i−1, j) and R = (i, j)
  uses u = D_xy p at cell centres along the diagonal that matches the sign of D_xy on
  the face: for D_xy ≥ 0, ∂_y u ≈ [u(R + ŷ) − u(R) + u(L) − u(L − ŷ)] / (2 dy), for
  D_xy < 0, [u(R) − u(R − ŷ) + u(L + ŷ) − u(L)] / (2 dy) (both second order at the
  face). Summed over x- and y-faces this is the classical 9-point stencil for
  2 ∂x∂y(D_xy p) whose diagonal neighbours get the sign of D_xy. Next to a wall, where
  one difference would need a cell beyond it, the other is used alone with double
  weight (one-sided, first order in that row only; the monotonicity bound is then
  twice as strict for those faces).

Guarantees. Wall faces carry no flux and each interior face moves exactly what it takes
from one cell into its neighbour, so the generator M (dp/dt = M p) has zero column sums:
mass is conserved to round-off by every implicit step. The off-diagonal entries of M
are ≥ 0 (M is an M-matrix: implicit steps keep p ≥ 0 at any dt, the stationary density
is ≥ 0) wherever, up to the drift's effect on the Scharfetter–Gummel weights,

    |D_xy| ≤ min(D_xx·dy/dx, D_yy·dx/dy).

Where that fails (e.g. rank-one D whose direction is not the grid diagonal) the scheme is
still conservative and consistent, but not monotone: nothing is clipped. The operator
reports the faces that break the condition and the negative off-diagonal entries of M
(:class:`Monotonicity`); the stationary solve and :meth:`~FokkerPlanck2D.evolve` report
the most negative density produced.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from sgdsweep.errors import ConfigError
from sgdsweep.fokker_planck.current import centre_current
from sgdsweep.fokker_planck.fp1d import COLLAPSE_CELLS, face_coefficients
from sgdsweep.fokker_planck.march import march
from sgdsweep.fokker_planck.operator import Monotonicity, Stationary
from sgdsweep.landscapes.grid import Grid1D
from sgdsweep.landscapes.landscape import GAUSSIAN, Landscape
from sgdsweep.landscapes.noise import diffusion
from sgdsweep.transfer.markov import Relaxation, generator_relaxation
from sgdsweep.validate import real

#: Relative tolerance for "positive semi-definite": det ≥ −PSD_TOL·(tr D)², D_kk ≥ −PSD_TOL·max|D|.
PSD_TOL = 1e-10
#: A grid is too coarse for a landscape when a cell is wider than this fraction of the
#: narrowest Gaussian term's width (the term's e-folding length in that axis).
MAX_DX_PER_WIDTH = 0.5
#: A stationary density below this fraction of its maximum at the anchor cell is re-solved.
ANCHOR_MIN = 1e-8
#: Column ordering for SuperLU: minimum degree on AᵀA + A suits the structurally symmetric
#: 9-point pattern (a third less fill and faster solves than the default COLAMD at 200²).
PERMC = "MMD_AT_PLUS_A"

Field = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Coefficients2D:
    """Drift and diffusion sampled where the scheme needs them (units: θ/time, θ²/time).

    ``drift_x`` G_x on the x-faces (nx+1, ny); ``drift_y`` G_y on the y-faces (nx, ny+1);
    ``diff_x`` D on the x-faces (nx+1, ny, 2, 2); ``diff_y`` D on the y-faces
    (nx, ny+1, 2, 2); ``diff_c`` D at the centres (nx, ny, 2, 2); ``diff_n`` D at the
    grid nodes (nx+1, ny+1, 2, 2).
    """

    drift_x: np.ndarray
    drift_y: np.ndarray
    diff_x: np.ndarray
    diff_y: np.ndarray
    diff_c: np.ndarray
    diff_n: np.ndarray


def _psd_check(D: np.ndarray, where: np.ndarray) -> None:
    """ConfigError naming the first point where a (…, 2, 2) field is not symmetric PSD."""
    dxx, dyy, dxy, dyx = D[..., 0, 0], D[..., 1, 1], D[..., 0, 1], D[..., 1, 0]
    scale = max(float(np.max(np.abs(D))), 1e-300)
    bad = ~np.isfinite(D).all(axis=(-2, -1))
    bad |= np.abs(dxy - dyx) > PSD_TOL * scale
    bad |= (dxx < -PSD_TOL * scale) | (dyy < -PSD_TOL * scale)
    bad |= dxx * dyy - dxy * dyx < -PSD_TOL * (np.abs(dxx) + np.abs(dyy)) ** 2
    if np.any(bad):
        k = np.unravel_index(int(np.argmax(bad)), bad.shape)
        m = D[k]
        th = where[k]
        if not np.all(np.isfinite(m)):
            raise ConfigError(f"diffusion: not finite at θ = ({th[0]:.4g}, {th[1]:.4g})")
        ev = np.linalg.eigvals(m)
        raise ConfigError(
            f"diffusion: not symmetric positive semi-definite at θ = ({th[0]:.4g}, {th[1]:.4g}): "
            f"D = {np.round(m, 6).tolist()}, eigenvalues {np.round(ev, 6).tolist()}")


def _mesh(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Points (len(a), len(b), 2) with axis 0 along x."""
    X, Y = np.meshgrid(a, b, indexing="ij")
    return np.stack([X, Y], axis=-1)


def sample_coefficients(gx: Grid1D, gy: Grid1D, drift: Field, diffusion_fn: Field | None
                        ) -> Coefficients2D:
    """Sample ``drift`` (m,2)→(m,2) and ``diffusion_fn`` (m,2)→(m,2,2) on the scheme's points.

    ``diffusion_fn`` None means D ≡ 0 (drift only). Raises ConfigError if D is not
    symmetric positive semi-definite (or not finite) anywhere it is sampled, or G is not
    finite.
    """
    pts = {
        "x": _mesh(gx.edges, gy.centres), "y": _mesh(gx.centres, gy.edges),
        "c": _mesh(gx.centres, gy.centres), "n": _mesh(gx.edges, gy.edges),
    }

    def call(fn: Field, key: str, shape: tuple[int, ...], name: str) -> np.ndarray:
        p = pts[key]
        out = np.asarray(fn(p.reshape(-1, 2)), dtype=np.float64)
        if out.shape != (p.shape[0] * p.shape[1], *shape):
            raise ConfigError(f"{name}: expected shape (m, {', '.join(map(str, shape))}) for m "
                              f"points, got {out.shape}")
        return out.reshape(*p.shape[:2], *shape)

    gxf = call(drift, "x", (2,), "drift")[..., 0]
    gyf = call(drift, "y", (2,), "drift")[..., 1]
    for g, key in ((gxf, "x"), (gyf, "y")):
        if not np.all(np.isfinite(g)):
            k = np.unravel_index(int(np.argmax(~np.isfinite(g))), g.shape)
            th = pts[key][k]
            raise ConfigError(f"drift: not finite at θ = ({th[0]:.4g}, {th[1]:.4g})")
    diffs = {}
    for key in ("x", "y", "c", "n"):
        if diffusion_fn is None:
            diffs[key] = np.zeros((*pts[key].shape[:2], 2, 2))
        else:
            diffs[key] = call(diffusion_fn, key, (2, 2), "diffusion")
            _psd_check(diffs[key], pts[key])
    return Coefficients2D(gxf, gyf, diffs["x"], diffs["y"], diffs["c"], diffs["n"])


def check_resolution(landscape: Landscape, gx: Grid1D, gy: Grid1D) -> None:
    """ConfigError if a cell is wider than ``MAX_DX_PER_WIDTH`` of the narrowest Gaussian term.

    A Gaussian term a·exp(−rᵀAr) varies on the length 1/sqrt(A_kk) along axis k; a grid
    coarser than half of it cannot represent the term's well or bump.
    """
    for t in range(landscape.kind.shape[0]):
        if landscape.kind[t] != GAUSSIAN:
            continue
        for axis, g, name in ((0, gx, "grid_x"), (1, gy, "grid_y")):
            width = 1.0 / math.sqrt(landscape.mat[t, axis, axis])
            if g.dx > MAX_DX_PER_WIDTH * width:
                raise ConfigError(
                    f"{name}.cells: too coarse for the landscape: dx = {g.dx:.4g} but a gaussian "
                    f"term has width {width:.4g} along axis {axis} (need dx <= "
                    f"{MAX_DX_PER_WIDTH} * width, i.e. cells >= "
                    f"{math.ceil((g.upper - g.lower) / (MAX_DX_PER_WIDTH * width))})")


class FokkerPlanck2D:
    """The 2-D Fokker–Planck operator on the grid ``gx`` × ``gy`` (see module docstring).

    Densities are cell averages of shape (nx, ny), axis 0 = θ_x, with Σ p·dx·dy = 1.
    ``generator`` is the sparse matrix M (N × N, N = nx·ny, cell (i, j) ↦ i·ny + j) of
    dp/dt = M p; ``flux_x`` ((nx−1)·ny × N) and ``flux_y`` (nx·(ny−1) × N) map p to the
    interior face fluxes, so that M = −(div_x flux_x + div_y flux_y) exactly.
    """

    def __init__(self, gx: Grid1D, gy: Grid1D, coeffs: Coefficients2D, alpha: float = 1.0) -> None:
        if not (math.isfinite(alpha) and 0.0 <= alpha <= 1.0):
            raise ConfigError(f"alpha: convention power must lie in [0, 1], got {alpha!r}")
        nx, ny = gx.cells, gy.cells
        expect = {"drift_x": (nx + 1, ny), "drift_y": (nx, ny + 1), "diff_x": (nx + 1, ny, 2, 2),
                  "diff_y": (nx, ny + 1, 2, 2), "diff_c": (nx, ny, 2, 2), "diff_n": (nx + 1, ny + 1, 2, 2)}
        for name, shape in expect.items():
            if getattr(coeffs, name).shape != shape:
                raise ConfigError(f"{name}: expected shape {shape}, got {getattr(coeffs, name).shape}")
        self.gx, self.gy, self.coeffs, self.alpha = gx, gy, coeffs, float(alpha)
        self.grids = (gx, gy)
        self.shape = (nx, ny)
        self.flux_x, self.flux_y = self._fluxes()
        self.generator = self._generator()
        self.monotonicity = self._monotonicity()
        self._lu: dict[float, object] = {}

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_functions(cls, gx: Grid1D, gy: Grid1D, drift: Field, diffusion_fn: Field | None,
                       alpha: float = 1.0) -> FokkerPlanck2D:
        """Operator for user callables: ``drift`` G(θ) (m,2)→(m,2), ``diffusion_fn`` D(θ)
        (m,2)→(m,2,2) (None: D ≡ 0). D must be symmetric positive semi-definite."""
        return cls(gx, gy, sample_coefficients(gx, gy, drift, diffusion_fn), alpha)

    @classmethod
    def from_landscape(cls, landscape: Landscape, gx: Grid1D, gy: Grid1D, lr: float,
                       noise_factor: float, alpha: float = 1.0, drift_only: bool = False,
                       sme2: bool = False, extra_diffusion: float = 0.0) -> FokkerPlanck2D:
        """The FP operator of SGD on a 2-D ``landscape``: G = ∇L, D = η Σ_b / 2 (+ ``extra_diffusion``·I,
        isotropic noise injected on top of the minibatch noise, in θ²/t).

        ``noise_factor`` is Σ_b / Σ (:func:`sgdsweep.landscapes.noise.batch_noise_factor`);
        ``drift_only`` sets D ≡ 0 (the ``fp_drift`` method); ``sme2`` uses the drift of
        the second-order stochastic modified equation, ∇(L + (η/4)|∇L|²) = G + (η/2)·H·G
        (H = ∇²L), with the same D, as in 1-D. Validates everything (dimension, lr, noise
        factor, grid resolution) before sampling.
        """
        if landscape.dim != 2:
            raise ConfigError(f"landscape.dim: the 2-D Fokker–Planck solver needs dim 2, got {landscape.dim}")
        lr = real(lr, "lr", positive=True)
        noise_factor = real(noise_factor, "noise_factor", nonnegative=True)
        check_resolution(landscape, gx, gy)

        def drift(pts: np.ndarray) -> np.ndarray:
            if not sme2:
                return landscape.evaluate(pts)["grad"]
            e = landscape.evaluate(pts)
            return e["grad"] + 0.5 * lr * np.einsum("mij,mj->mi", e["hess"], e["grad"])

        extra = real(extra_diffusion, "extra_diffusion", nonnegative=True)

        def diff(pts: np.ndarray) -> np.ndarray:
            D = diffusion(landscape.evaluate(pts)["cov"], lr, noise_factor)
            return D + extra * np.eye(2) if extra else D

        return cls.from_functions(gx, gy, drift, None if drift_only else diff, alpha)

    def _fluxes(self) -> tuple[sp.csr_matrix, sp.csr_matrix]:
        c = self.coeffs
        nx, ny = self.shape
        a = self.alpha
        idx = np.arange(nx * ny).reshape(nx, ny)
        # Convention correction −(1 − α) ∂_y D_xy on x-faces (and ∂_x D_xy on y-faces),
        # from D_xy at the face's two end nodes.
        dxy_n = c.diff_n[..., 0, 1]
        gx_eff = c.drift_x - (1.0 - a) * np.diff(dxy_n, axis=1) / self.gy.dx
        gy_eff = c.drift_y - (1.0 - a) * np.diff(dxy_n, axis=0) / self.gx.dx
        fx = self._axis_flux(idx, gx_eff, c.diff_x, c.diff_c, axis=0)
        fy = self._axis_flux(idx.T, gy_eff.T, c.diff_y.transpose(1, 0, 2, 3)[..., ::-1, ::-1],
                             c.diff_c.transpose(1, 0, 2, 3)[..., ::-1, ::-1], axis=1)
        # y-face rows come out ordered (j, i); reorder to (i, j).
        perm = np.arange(nx * (ny - 1)).reshape(ny - 1, nx).T.ravel()
        return fx, fy[perm]

    def _axis_flux(self, idx: np.ndarray, g_eff: np.ndarray, d_face: np.ndarray,
                   d_centre: np.ndarray, axis: int) -> sp.csr_matrix:
        """Flux matrix of the interior faces normal to ``axis``, written as if it were x.

        Inputs are transposed for axis 1 so that axis 0 is the normal direction and the
        matrices have their own (normal, tangential) components first: D[..., 0, 0] normal,
        D[..., 0, 1] cross. Rows are faces (f = 1..n−1 of each line, line-major).
        """
        n, m = idx.shape  # cells along the normal, along the tangent
        h = (self.gx, self.gy)[axis].dx
        k = (self.gy, self.gx)[axis].dx
        A = np.empty((n + 1, m))
        C = np.empty((n + 1, m))
        dnn_f, dnn_c = d_face[..., 0, 0], d_centre[..., 0, 0]
        for j in range(m):
            A[:, j], C[:, j] = face_coefficients(np.ascontiguousarray(g_eff[:, j]),
                                                 np.ascontiguousarray(dnn_f[:, j]),
                                                 np.ascontiguousarray(dnn_c[:, j]), h, self.alpha)
        faces = np.arange((n - 1) * m).reshape(n - 1, m)  # face (f, j), f = 1..n−1 ↦ (f−1)·m + j
        L, R = idx[:-1, :], idx[1:, :]
        rows = [faces, faces]
        cols = [L, R]
        vals = [A[1:-1, :], -C[1:-1, :]]
        # Cross term −∂_t(D_nt p) along the diagonal that matches the sign of D_nt on the face.
        dnt_c = d_centre[..., 0, 1]
        pos = d_face[1:-1, :, 0, 1] >= 0.0
        jj = np.broadcast_to(np.arange(m), (n - 1, m))
        Lc, Rc = dnt_c[:-1, :], dnt_c[1:, :]
        up = jj + 1 < m
        dn = jj - 1 >= 0
        # Next to a wall one of the two differences would need a cell beyond it: the other
        # one is used alone with double weight (a one-sided derivative, O(dy) at the face),
        # so the flux stays consistent there (dropping it would be an O(1) flux error).
        w = np.where(up & dn, 1.0, 2.0) / (2.0 * k)

        # each difference u(a) − u(b) enters the flux as −w·(u(a) − u(b)).
        def pair(mask, ia, ja_off, ib, jb_off, src_a, src_b):
            ja = np.clip(jj + ja_off, 0, m - 1)
            jb = np.clip(jj + jb_off, 0, m - 1)
            ff = np.arange(n - 1)[:, None]
            rows.extend([faces[mask], faces[mask]])
            cols.extend([ia[ff, ja][mask], ib[ff, jb][mask]])
            vals.extend([-(w * src_a[ff, ja])[mask], (w * src_b[ff, jb])[mask]])

        Ridx, Lidx = idx[1:, :], idx[:-1, :]
        # D_nt ≥ 0: [u(R+t) − u(R)] + [u(L) − u(L−t)]
        pair(pos & up, Ridx, +1, Ridx, 0, Rc, Rc)
        pair(pos & dn, Lidx, 0, Lidx, -1, Lc, Lc)
        # D_nt < 0: [u(R) − u(R−t)] + [u(L+t) − u(L)]
        pair(~pos & dn, Ridx, 0, Ridx, -1, Rc, Rc)
        pair(~pos & up, Lidx, +1, Lidx, 0, Lc, Lc)
        rows = np.concatenate([np.ravel(r) for r in rows])
        cols = np.concatenate([np.ravel(c) for c in cols])
        vals = np.concatenate([np.ravel(v) for v in vals])
        return sp.csr_matrix((vals, (rows, cols)), shape=((n - 1) * m, n * m))

    def divergence(self) -> tuple[sp.csr_matrix, sp.csr_matrix]:
        """(div_x, div_y): N × faces matrices, −(div_x J_x + div_y J_y) = dp/dt per cell."""
        nx, ny = self.shape
        idx = np.arange(nx * ny).reshape(nx, ny)
        fx = np.arange((nx - 1) * ny).reshape(nx - 1, ny)
        fy = np.arange(nx * (ny - 1)).reshape(nx, ny - 1)
        h, k = self.gx.dx, self.gy.dx
        # a face's flux leaves its lower cell and enters its upper cell
        div_x = sp.csr_matrix((np.concatenate([np.full(fx.size, 1.0 / h), np.full(fx.size, -1.0 / h)]),
                               (np.concatenate([idx[:-1].ravel(), idx[1:].ravel()]),
                                np.concatenate([fx.ravel(), fx.ravel()]))), shape=(nx * ny, fx.size))
        div_y = sp.csr_matrix((np.concatenate([np.full(fy.size, 1.0 / k), np.full(fy.size, -1.0 / k)]),
                               (np.concatenate([idx[:, :-1].ravel(), idx[:, 1:].ravel()]),
                                np.concatenate([fy.ravel(), fy.ravel()]))), shape=(nx * ny, fy.size))
        return div_x, div_y

    def _generator(self) -> sp.csc_matrix:
        div_x, div_y = self.divergence()
        M = -(div_x @ self.flux_x + div_y @ self.flux_y)
        M = M.tocsc()
        M.sum_duplicates()
        M.eliminate_zeros()
        return M

    def _monotonicity(self) -> Monotonicity:
        c = self.coeffs
        h, k = self.gx.dx, self.gy.dx

        def bad(D: np.ndarray, wall_rows: tuple) -> np.ndarray:
            lim = np.minimum(D[..., 0, 0] * k / h, D[..., 1, 1] * h / k)
            lim[wall_rows] *= 0.5  # the one-sided cross difference next to a wall weighs double
            return np.abs(D[..., 0, 1]) > lim * (1.0 + 1e-12)

        bx = bad(c.diff_x[1:-1], (slice(None), [0, -1]))
        by = bad(c.diff_y[:, 1:-1], ([0, -1], slice(None)))
        M = self.generator.tocoo()
        off = (M.row != M.col) & (M.data < 0.0)
        return Monotonicity(faces=bx.size + by.size, faces_violating=int(bx.sum() + by.sum()),
                            negative_offdiag=int(off.sum()),
                            min_offdiag=float(M.data[off].min()) if off.any() else 0.0)

    # ------------------------------------------------------------------ solves

    @property
    def cell_volume(self) -> float:
        """dx·dy: a density times it is the mass per cell."""
        return self.gx.dx * self.gy.dx

    def stationary(self) -> Stationary:
        """Direct sparse solve of M p = 0 with Σ p·dx·dy = 1.

        One equation (of an anchor cell: first the cell with the slowest outflow, then the
        density's maximum if the first anchor held almost no mass) is replaced by p_k = 1,
        which removes the one-dimensional null space; p is then normalised. If the
        generator is singular even so (several absorbing sets, e.g. drift only with
        several minima), the solution is the long-time limit from the uniform density,
        ε (εI − M)⁻¹ 1 with ε tiny, and ``degenerate`` says so.
        """
        M = self.generator
        N = M.shape[0]
        k = int(np.argmax(M.diagonal()))  # least negative diagonal: slowest outflow
        message = ""
        degenerate = False
        p = None
        for _ in range(2):
            keep = np.ones(N)
            keep[k] = 0.0
            A = (sp.diags(keep) @ M + sp.csc_matrix(([1.0], ([k], [k])), shape=(N, N))).tocsc()
            rhs = np.zeros(N)
            rhs[k] = 1.0
            try:
                p = spla.splu(A, permc_spec=PERMC).solve(rhs)
            except RuntimeError:
                p = None
                break
            if not np.all(np.isfinite(p)):
                p = None
                break
            if p[k] >= ANCHOR_MIN * np.max(np.abs(p)):
                break
            k = int(np.argmax(p))
        if p is None:
            scale = float(np.max(np.abs(M.diagonal()))) or 1.0
            eps = 1e-10 * scale
            lu = spla.splu((eps * sp.identity(N, format="csc") - M).tocsc(), permc_spec=PERMC)
            p = eps * lu.solve(np.ones(N))
            degenerate = True
            message = ("the generator has more than one stationary state (absorbing sets): "
                       "returned the long-time limit from the uniform density")
        p = p / (p.sum() * self.cell_volume)
        Mp = np.abs(M @ p).sum()
        norm_m = float(np.max(np.abs(M).sum(axis=0)))
        residual = float(Mp / (norm_m * np.abs(p).sum())) if norm_m > 0 else 0.0
        dens = p.reshape(self.shape)
        if not degenerate:
            w = np.clip(p, 0.0, None) * self.cell_volume
            cells = 1.0 / float(np.sum(w * w))
            if cells < COLLAPSE_CELLS:
                i, j = np.unravel_index(int(np.argmax(p)), self.shape)
                degenerate = True
                message = (f"stationary density collapsed onto ~{cells:.2g} cell(s) near θ = "
                           f"({self.gx.centres[i]:.4g}, {self.gy.centres[j]:.4g}): the grid cannot "
                           "resolve it (D → 0 there, or the grid is too coarse)")
        return Stationary(dens, degenerate, float(min(p.min(), 0.0)), residual, message)

    def _factor(self, dt: float):
        lu = self._lu.get(dt)
        if lu is None:
            N = self.generator.shape[0]
            lu = spla.splu((sp.identity(N, format="csc") - dt * self.generator).tocsc(), permc_spec=PERMC)
            self._lu[dt] = lu
        return lu

    def step(self, p: np.ndarray, dt: float, nsteps: int = 1) -> np.ndarray:
        """``nsteps`` implicit Euler steps (I − dt M) p⁺ = p; p (nx, ny) → (nx, ny).

        One sparse LU factorisation per dt (cached on the operator).
        """
        dt = real(dt, "dt", positive=True)
        q = np.array(p, dtype=np.float64)
        if q.shape != self.shape:
            raise ConfigError(f"p: expected shape {self.shape}, got {q.shape}")
        lu = self._factor(float(dt))
        q = q.ravel()
        for _ in range(nsteps):
            q = lu.solve(q)
        return q.reshape(self.shape)

    def evolve(self, p0: np.ndarray, times: np.ndarray, dt: float) -> np.ndarray:
        """Implicit-Euler densities at ``times`` (S,), shape (S, nx, ny), from ``p0`` at t = 0.

        Same stepping as the 1-D solver (:func:`~.march.march`); a step within 1e-12 dt of
        dt reuses dt's factorisation, and each other length costs one more (cached).
        """

        def advance(p: np.ndarray, h: float, nsteps: int) -> np.ndarray:
            return self.step(p, dt if abs(h - dt) <= 1e-12 * dt else h, nsteps)

        return march(p0, self.shape, times, dt, advance)

    def current(self, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(J_x on the x-faces (nx+1, ny), J_y on the y-faces (nx, ny+1)) of a density (nx, ny):
        the scheme's own fluxes (``flux_x``, ``flux_y``); wall faces carry exactly zero."""
        nx, ny = self.shape
        q = np.asarray(p, dtype=np.float64)
        if q.shape != (nx, ny):
            raise ConfigError(f"p: expected shape {(nx, ny)}, got {q.shape}")
        q = q.ravel()
        Jx = np.zeros((nx + 1, ny))
        Jy = np.zeros((nx, ny + 1))
        Jx[1:-1] = (self.flux_x @ q).reshape(nx - 1, ny)
        Jy[:, 1:-1] = (self.flux_y @ q).reshape(nx, ny - 1)
        return Jx, Jy

    def centre_current(self, p: np.ndarray) -> np.ndarray:
        """J at the cell centres (…, nx, ny, 2) of densities (…, nx, ny)."""
        q = np.asarray(p, dtype=np.float64)
        if q.ndim == 2:
            return centre_current(*self.current(q))
        flat = q.reshape(-1, *self.shape)
        return np.stack([centre_current(*self.current(x)) for x in flat]).reshape(*q.shape, 2)

    def relaxation(self) -> Relaxation:
        """The slowest decay of dp/dt = M p (:func:`~sgdsweep.transfer.markov.generator_relaxation`)."""
        return generator_relaxation(self.generator)


def marginals(p: np.ndarray, dx: float, dy: float) -> tuple[np.ndarray, np.ndarray]:
    """Marginal densities of p (…, nx, ny): (∫ p dθ_y (…, nx), ∫ p dθ_x (…, ny))."""
    p = np.asarray(p, dtype=np.float64)
    return p.sum(axis=-1) * dy, p.sum(axis=-2) * dx
