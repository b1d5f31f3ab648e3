"""A column-stochastic operator as a Markov chain on cells: evolution, stationary law,
relaxation time and mean first-passage times.

Conventions: P[j, i] is the probability that one step moves mass from cell i to cell j
(columns sum to 1), cell *masses* m evolve as m ← P m, a step is one SGD step and SDE
time is t = η·step. Densities (per unit θ) are masses / dx.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from scipy.sparse.csgraph import breadth_first_order, connected_components

from sgdsweep.errors import ConfigError
from sgdsweep.transfer.gth import gth_cost, gth_stationary
from sgdsweep.validate import snapshot_steps


def _csc(P) -> sp.csc_matrix:
    if not sp.issparse(P):
        raise ConfigError("operator: expected a scipy.sparse matrix")
    P = sp.csc_matrix(P)
    if P.shape[0] != P.shape[1]:
        raise ConfigError(f"operator: expected a square matrix, got {P.shape}")
    return P



def evolve_masses(P, m0: np.ndarray, steps) -> np.ndarray:
    """Cell masses after each of ``steps`` (S,) SGD steps from ``m0``, shape (S, N)."""
    P = sp.csr_matrix(_csc(P))
    m = np.array(m0, dtype=np.float64, copy=True)
    if m.shape != (P.shape[0],):
        raise ConfigError(f"p0: expected shape ({P.shape[0]},), got {m.shape}")
    if not np.all(np.isfinite(m)) or np.any(m < 0):
        raise ConfigError("p0: initial masses must be finite and >= 0")
    st = snapshot_steps(steps)
    out = np.empty((st.size, m.size))
    now = 0
    for k, s in enumerate(st):
        for _ in range(int(s) - now):
            m = P @ m
        now = int(s)
        out[k] = m
    return out


def closed_classes(P) -> list[np.ndarray]:
    """The closed communicating classes of the chain (cells it can enter but never leave).

    Several closed classes happen where no path joins two attractors: a deterministic
    region whose fixed point sits exactly on a cell face (both neighbours keep their
    mass), or basins between which no minibatch step reaches.
    """
    P = _csc(P)
    ncomp, lab = connected_components(P.T, directed=True, connection="strong")
    C = P.tocoo()
    leaves = np.zeros(ncomp, dtype=bool)
    cross = (lab[C.col] != lab[C.row]) & (C.data > 0)
    leaves[lab[C.col[cross]]] = True
    return [np.flatnonzero(lab == c) for c in range(ncomp) if not leaves[c]]


def _replaced_lu(P):
    """LU of P − I with one equation replaced by Σ m = 1 (row k: the largest diagonal of P)."""
    n = P.shape[0]
    k = int(np.argmax(P.diagonal()))
    keep = np.ones(n)
    keep[k] = 0.0
    ones_row = sp.csr_matrix((np.ones(n), (np.full(n, k), np.arange(n))), shape=(n, n))
    A = sp.diags(keep) @ (P - sp.identity(n, format="csc")) + ones_row
    return spla.splu(sp.csc_matrix(A)), k


#: Above this many multiply-adds (N·l·u) the stationary law falls back from GTH to sparse LU.
GTH_MAX_COST = 20_000_000_000


def _class_stationary(P) -> np.ndarray:
    n = P.shape[0]
    if n == 1:
        return np.ones(1)
    if gth_cost(P) <= GTH_MAX_COST:
        m = gth_stationary(P)
        if m is not None:
            return m
    lu, k = _replaced_lu(P)
    rhs = np.zeros(n)
    rhs[k] = 1.0
    m = lu.solve(rhs)
    m = np.where(m < 0.0, 0.0, m)
    return m / m.sum()


def stationary_masses(P, m0: np.ndarray | None = None) -> np.ndarray:
    """The invariant law (P − I) m = 0, Σ m = 1, by direct elimination.

    Banded chains (every transfer operator) use GTH state reduction
    (:mod:`~sgdsweep.transfer.gth`): subtraction-free, so each entry is accurate to a
    few ulps relative whatever the spectral gap (tested at 1e-13 against detailed
    balance). Beyond ``GTH_MAX_COST`` multiply-adds it falls back to a sparse LU solve of
    (P − I) m = 0 with one equation replaced by Σ m = 1 (accurate to ~eps/gap in the
    basin masses). No power iteration: the cost does not depend on the gap.

    When the chain has several closed classes (:func:`closed_classes`) the limit law
    depends on where the mass starts: then ``m0`` (initial cell masses) is required and
    the result is Σ_C (probability of being absorbed in C from m0) · (C's own invariant
    law), the t → ∞ limit of the (Cesàro-averaged) evolution from m0.
    """
    P = _csc(P)
    n = P.shape[0]
    classes = closed_classes(P)
    if len(classes) == 1 and classes[0].size == n:
        return _class_stationary(P)
    out = np.zeros(n)
    laws = [_class_stationary(P[c][:, c]) for c in classes]
    if len(classes) == 1:
        out[classes[0]] = laws[0]
        return out
    if m0 is None:
        raise ConfigError(f"init: the chain has {len(classes)} closed classes (no step joins them), "
                          "so its limit law depends on the initial law; give the initial masses")
    m0 = np.asarray(m0, dtype=np.float64)
    closed = np.zeros(n, dtype=bool)
    for c in classes:
        closed[c] = True
    trans = np.flatnonzero(~closed)
    lu = spla.splu(sp.identity(trans.size, format="csc") - sp.csc_matrix(P[trans][:, trans].T)) \
        if trans.size else None
    for c, law in zip(classes, laws, strict=True):
        weight = m0[c].sum()
        if lu is not None:
            # h(i) = P(absorbed in c | start i): h = Qᵀh + R_cᵀ1 on the transient cells.
            r = np.asarray(P[c][:, trans].sum(axis=0)).ravel()
            weight += float(np.dot(m0[trans], lu.solve(r)))
        out[c] = weight * law
    return out / out.sum()


@dataclass(frozen=True)
class Relaxation:
    """Slowest decaying mode: eigenvalue λ₂, gap 1 − |λ₂|, relaxation time in steps and in t.

    λ₂ is the eigenvalue of largest modulus after the unit eigenvalue(s) of the closed
    classes: the larger of each closed class's second eigenvalue and the spectral radius
    of the transient block. ``steps`` = −1/ln|λ₂|, ``time`` = η·steps (t = η·step); ``inf``
    where |λ₂| = 1. ``classes`` is the number of closed classes.
    """

    eigenvalue: complex
    gap: float
    steps: float
    time: float
    classes: int = 1


def _dominant(apply, n: int, maxiter: int | None = None) -> complex | None:
    """Dominant eigenvalue of the linear map ``apply`` (ARPACK), None if not converged."""
    op = spla.LinearOperator((n, n), matvec=apply, dtype=complex)
    # Fixed start vectors: ARPACK's own random start depends on the process's history of
    # calls, and a non-normal block (upwind transport) converges to slightly different
    # values from different starts; the result must not depend on which worker ran it.
    # A second start is tried after a breakdown of the Arnoldi factorisation.
    rng = np.random.default_rng(0x5EED)
    for _ in range(2):
        v0 = rng.random(n) + 0.5
        try:
            return complex(spla.eigs(op, k=1, which="LM", return_eigenvectors=False, tol=1e-12,
                                     ncv=min(n - 1, 24), maxiter=maxiter, v0=v0)[0])
        except spla.ArpackNoConvergence:
            return None
        except spla.ArpackError:
            continue
    return None


def _complex_solver(lu, project=None, k=None):
    def apply(y):
        z = np.array(y, dtype=complex)
        if project is not None:
            z -= project * z.sum()  # into the zero-sum subspace (projecting out the invariant law)
        if k is not None:
            z[k] = 0.0  # the replaced equation Σ x = 0 keeps x there
        return lu.solve(z.real.copy()) + 1j * lu.solve(z.imag.copy())
    return apply


def _slowest(M, near_plus, near_minus) -> tuple[complex, float] | None:
    """Slowest mode of M among the eigenvalues nearest +1 and nearest −1.

    ``near_plus`` is x ↦ (M − I)⁻¹x and ``near_minus`` x ↦ (M + I)⁻¹x (None if M + I is
    singular: λ = −1); their dominant eigenvalues are 1/(λ ∓ 1). The gap 1 − |λ| comes
    from d = λ ∓ 1 without cancellation. None when Arnoldi finds no eigenvalue near +1
    (a gap far below round-off makes (M − I)⁻¹ numerically singular).
    """
    n = M.shape[0]
    if n <= 8:
        ev = np.linalg.eigvals(M)
        lam = complex(ev[np.argmax(np.abs(ev))])
        return lam, 1.0 - abs(lam)
    best = (0j, 1.0)
    for sign, apply in ((1.0, near_plus), (-1.0, near_minus)):
        if apply is None:
            return -1.0 + 0j, 0.0
        # Near −1 a slow mode is well separated (1/(λ + 1) ≫ ½) and converges in a few
        # iterations; when ARPACK does not, there is none, and the search is dropped.
        mu = _dominant(apply, n, None if sign > 0 else 4)
        if mu is None:
            if sign > 0:  # the mode nearest +1 always exists: not finding it is not knowing λ₂
                return None
            continue
        d = 1.0 / mu  # λ − sign
        q = 2.0 * sign * d.real + abs(d) ** 2  # |λ|² − 1
        gap = -q / (1.0 + math.sqrt(max(1.0 + q, 0.0)))
        if gap < best[1]:
            best = (sign + d, gap)
    return best


def _lu_or_none(A):
    try:
        return spla.splu(sp.csc_matrix(A))
    except RuntimeError:  # exactly singular
        return None


def relaxation(P, lr: float) -> Relaxation:
    """λ₂ and the relaxation time τ = −η/ln|λ₂| (see :class:`Relaxation`).

    Within a closed class, (P − I)⁻¹ on zero-sum vectors (the replaced-row LU, after
    projecting out the invariant law) has dominant eigenvalue 1/(λ₂ − 1), so 1 − λ₂ comes
    out without cancellation; the LU solves limit its relative accuracy to ~eps/gap
    (2e-3 at a gap of 6.5e-14 in the tests, against 60-digit arithmetic). The same with
    (P + I)⁻¹ finds the eigenvalue nearest −1 (an oscillating chain, η·L″ near 2); the
    larger modulus wins. Complex eigenvalues far from ±1 are not searched (a rotating
    slow mode would be missed). Transient cells contribute their block's eigenvalues
    nearest ±1 the same way.

    Limitation: where SGD is deterministic (every sample agrees, Σ_b = 0) the transient
    block is a non-normal upwind transport; its slowest mode is mass creeping across a
    plateau cell by cell at a rate ∝ drift/dx, so τ from such a block depends on the grid
    (the seed model's far-left plateau: 24, 12.8, 9.9, 8.3 t at dx = 0.02 … 0.0025). The
    escape times and the closed classes' λ₂ converge (benchmarks/README.md). NaN when the
    gap is so far below round-off that Arnoldi finds no eigenvalue near 1 (two wells that
    exchange mass at rates of 1e-50: "astronomically slow", not a number).
    """
    P = _csc(P)
    n = P.shape[0]
    classes = closed_classes(P)
    best: tuple[complex, float] = (0j, 1.0)
    closed = np.zeros(n, dtype=bool)
    for c in classes:
        closed[c] = True
        if c.size < 2:
            continue
        Pc = sp.csc_matrix(P[c][:, c])
        m = _class_stationary(Pc)
        if c.size <= 8:
            cand = _slowest(Pc.toarray() - np.outer(m, np.ones(c.size)), None, None)
        else:
            try:
                lu, k = _replaced_lu(Pc)
            except RuntimeError:  # P − I exactly singular in floats: the gap is below round-off
                return Relaxation(complex(math.nan), math.nan, math.nan, math.nan, len(classes))
            lu_m = _lu_or_none(Pc + sp.identity(c.size, format="csc"))
            cand = _slowest(Pc, _complex_solver(lu, m, k),
                            None if lu_m is None else _complex_solver(lu_m, m))
        if cand is None:
            return Relaxation(complex(math.nan), math.nan, math.nan, math.nan, len(classes))
        if cand[1] < best[1]:
            best = cand
    trans = np.flatnonzero(~closed)
    if trans.size:
        Q = sp.csc_matrix(P[trans][:, trans])
        if trans.size <= 8:
            cand = _slowest(Q.toarray(), None, None)
        else:
            eye = sp.identity(trans.size, format="csc")
            lu_p, lu_m = _lu_or_none(Q - eye), _lu_or_none(Q + eye)
            if lu_p is None:  # an eigenvalue 1 in a transient block cannot happen; be safe
                cand = (1.0 + 0j, 0.0)
            else:
                cand = _slowest(Q, _complex_solver(lu_p), None if lu_m is None else _complex_solver(lu_m))
        if cand is None:
            return Relaxation(complex(math.nan), math.nan, math.nan, math.nan, len(classes))
        if cand[1] < best[1]:
            best = cand
    lam, gap = best
    if gap <= 0.0:
        return Relaxation(lam, gap, math.inf, math.inf, len(classes))
    if gap >= 1.0:  # λ₂ = 0: every other mode is gone after one step
        return Relaxation(lam, gap, 0.0, 0.0, len(classes))
    steps = -1.0 / math.log1p(-gap)
    return Relaxation(lam, gap, steps, lr * steps, len(classes))


def mean_over_start(T: np.ndarray, masses: np.ndarray) -> float:
    """E[T(X₀)] for a start X₀ with these cell ``masses`` (normalised here): Σ mᵢTᵢ / Σ mᵢ.

    Cells without mass contribute nothing even where T is inf (cells that never reach the
    target), so the mean is inf only when mass starts where the passage never happens.
    """
    m = np.asarray(masses, dtype=np.float64)
    return float(np.dot(np.where(m > 0, T, 0.0), m) / m.sum())


def passage_steps(P, absorbing: np.ndarray) -> np.ndarray:
    """Mean number of steps to first reach the ``absorbing`` cells (bool (N,)), per start cell.

    T_i = 1 + Σ_j P[j, i] T_j on the other cells, i.e. (I − Qᵀ) T = 1 with Q = P restricted
    to them (one sparse LU solve); T = 0 on absorbing cells and inf on cells from which no
    path reaches them (found first by a graph search, so they do not make the system
    singular). Where the exit is a rare event the LU solve's relative accuracy is
    ~eps·T (1e-3 for T ~ 1e13 steps).
    """
    P = _csc(P)
    n = P.shape[0]
    absorbing = np.asarray(absorbing, dtype=bool)
    T = np.zeros(n)
    if not absorbing.any():
        T[:] = np.inf
        return T
    # Cells that can reach the absorbing set: reachable from it against the chain's edges.
    # In csgraph, entry (j, i) of P is an edge j → i, the reverse of the chain's i → j.
    src = np.flatnonzero(absorbing)
    hub = sp.csr_matrix((np.ones(src.size), (np.full(src.size, n), src)), shape=(n + 1, n + 1))
    G = sp.bmat([[sp.csr_matrix(P), None], [None, sp.csr_matrix((1, 1))]], format="csr") + hub
    order = breadth_first_order(G, n, directed=True, return_predecessors=False)
    can = np.zeros(n + 1, dtype=bool)
    can[order] = True
    can = can[:n]
    T[~can] = np.inf
    keep = np.flatnonzero(can & ~absorbing)
    if keep.size == 0:
        return T
    Q = P[keep][:, keep]
    A = sp.identity(keep.size, format="csc") - sp.csc_matrix(Q.T)
    x = spla.splu(A).solve(np.ones(keep.size))
    T[keep] = np.where(np.isfinite(x) & (x >= 0), x, np.inf)
    return T


def generator_relaxation(M) -> Relaxation:
    """Slowest decay of a continuous-time generator dm/dt = M m (columns summing to 0,
    off-diagonals ≥ 0): e.g. the Fokker–Planck operator (t units).

    Uniformised to the chain P = I + h·M with h = 1/(2·max|M_ii|): column-stochastic with
    every eigenvalue in [0, 1] (Gershgorin), and P − I = h·M, so :func:`relaxation`'s
    cancellation-free 1 − λ₂ of P is h·|μ₂| exactly for a real μ₂ (a 1-D FP generator is
    similar to a symmetric matrix: real spectrum). Returns eigenvalue μ₂, gap |μ₂| (a
    rate, 1/t), ``steps`` NaN and ``time`` 1/|μ₂|.
    """
    M = _csc(M)
    d = np.abs(M.diagonal())
    if not np.any(d > 0):
        return Relaxation(0j, 0.0, math.nan, math.inf, M.shape[0])
    h = 0.5 / float(d.max())
    P = sp.identity(M.shape[0], format="csc") + h * M
    rel = relaxation(P, 1.0)
    rate = rel.gap / h
    time = math.inf if rate <= 0 else 1.0 / rate  # NaN stays NaN
    return Relaxation(complex(-rate, rel.eigenvalue.imag / h), rate, math.nan, time, rel.classes)
