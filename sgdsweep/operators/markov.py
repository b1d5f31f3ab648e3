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

from sgdsweep.errors import ConfigError


def _csc(P) -> sp.csc_matrix:
    if not sp.issparse(P):
        raise ConfigError("operator: expected a scipy.sparse matrix")
    P = sp.csc_matrix(P)
    if P.shape[0] != P.shape[1]:
        raise ConfigError(f"operator: expected a square matrix, got {P.shape}")
    return P


def check_steps(steps) -> np.ndarray:
    st = np.asarray(steps)
    if st.ndim != 1 or st.size < 1 or not np.issubdtype(st.dtype, np.number):
        raise ConfigError("steps: expected a non-empty 1-D array of SGD step counts")
    if not np.all(np.isfinite(st)) or np.any(st != np.round(st)) or np.any(st < 0):
        raise ConfigError("steps: must be non-negative integers")
    st = st.astype(np.int64)
    if np.any(np.diff(st) < 0):
        raise ConfigError("steps: must be non-decreasing")
    return st


def evolve_masses(P, m0: np.ndarray, steps) -> np.ndarray:
    """Cell masses after each of ``steps`` (S,) SGD steps from ``m0``, shape (S, N)."""
    P = sp.csr_matrix(_csc(P))
    m = np.array(m0, dtype=np.float64, copy=True)
    if m.shape != (P.shape[0],):
        raise ConfigError(f"p0: expected shape ({P.shape[0]},), got {m.shape}")
    if not np.all(np.isfinite(m)) or np.any(m < 0):
        raise ConfigError("p0: initial masses must be finite and >= 0")
    st = check_steps(steps)
    out = np.empty((st.size, m.size))
    now = 0
    for k, s in enumerate(st):
        for _ in range(int(s) - now):
            m = P @ m
        now = int(s)
        out[k] = m
    return out


def stationary_masses(P) -> np.ndarray:
    """The invariant law (P − I) m = 0, Σ m = 1, by one sparse LU solve.

    One equation of the singular system (P − I) m = 0 is redundant (the columns of
    P − I sum to zero); it is replaced by the normalisation Σ m = 1. The replaced row is
    the one of the cell with the most stationary-looking mass (largest diagonal of P),
    which stays well inside a basin. No power iteration is involved, so the cost does not
    depend on the spectral gap; for a metastable chain the accuracy of the *ratio* of the
    basin masses is limited by the round-off in the tiny couplings (tested to 1e-6
    relative at a gap of 1e-13, see the tests). Round-off negatives (≥ −1e-14·max) are
    set to 0 and the result renormalised.
    """
    P = _csc(P)
    n = P.shape[0]
    A = (P - sp.identity(n, format="csc")).tolil()
    k = int(np.argmax(P.diagonal()))
    A[k, :] = np.ones(n)
    rhs = np.zeros(n)
    rhs[k] = 1.0
    m = spla.splu(sp.csc_matrix(A)).solve(rhs)
    if not np.all(np.isfinite(m)):
        raise ConfigError("operator: the stationary system is singular (the chain is reducible: "
                          "more than one closed class of cells)")
    m = np.where(m < 0.0, 0.0, m)
    return m / m.sum()


@dataclass(frozen=True)
class Relaxation:
    """Second eigenvalue λ₂ of P (largest modulus after λ₁ = 1) and the relaxation time.

    ``gap`` = 1 − |λ₂| (computed without cancellation), ``steps`` = −1/ln|λ₂| and
    ``time`` = η·steps (SDE time units t = η·step). ``inf`` where |λ₂| = 1.
    """

    eigenvalue: complex
    gap: float
    steps: float
    time: float


def _near_one_solver(P, m_stat: np.ndarray):
    """x ↦ (P − I)⁻¹ on zero-sum vectors, after projecting out the stationary part."""
    n = P.shape[0]
    A = (P - sp.identity(n, format="csc")).tolil()
    k = int(np.argmax(P.diagonal()))
    A[k, :] = np.ones(n)
    lu = spla.splu(sp.csc_matrix(A))

    def apply(y):
        z = np.array(y, dtype=complex)
        z -= m_stat * z.sum()  # into the range of P − I: zero sum
        z[k] = 0.0  # the replaced equation Σ x = 0 keeps x in the same subspace
        return lu.solve(z.real.copy()) + 1j * lu.solve(z.imag.copy())

    return apply


def relaxation(P, lr: float, m_stat: np.ndarray | None = None) -> Relaxation:
    """λ₂ and the relaxation time τ = −η/ln|λ₂| (see :class:`Relaxation`).

    Two ARPACK runs: on (P − I)⁻¹ restricted to zero-sum vectors (its dominant eigenvalue
    1/(λ − 1) is the eigenvalue nearest 1, and 1 − λ comes out free of cancellation even
    when the gap is 1e-13), and on P − m 1ᵀ (largest modulus, which can be a negative
    eigenvalue near −1 for an oscillating chain). The larger modulus wins.
    """
    P = _csc(P)
    n = P.shape[0]
    if m_stat is None:
        m_stat = stationary_masses(P)
    ones = np.ones(n)
    if n < 8:
        M = P.toarray() - np.outer(m_stat, ones)
        ev = np.linalg.eigvals(M)
        lam = complex(ev[np.argmax(np.abs(ev))])
        return _relaxation_from(lam, 1.0 - abs(lam), lr)
    solve = _near_one_solver(P, m_stat)
    Linv = spla.LinearOperator((n, n), matvec=solve, dtype=complex)
    mu = complex(spla.eigs(Linv, k=1, which="LM", return_eigenvectors=False, tol=1e-12,
                           ncv=min(n - 1, 20))[0])
    d = 1.0 / mu  # λ − 1
    lam_near = 1.0 + d
    # 1 − |λ| = 1 − sqrt(1 + 2 Re d + |d|²) without cancellation.
    q = 2.0 * d.real + abs(d) ** 2
    gap_near = -q / (1.0 + math.sqrt(max(1.0 + q, 0.0)))
    Pd = spla.LinearOperator((n, n), matvec=lambda v: P @ v - m_stat * (ones @ v), dtype=float)
    ev = spla.eigs(Pd, k=1, which="LM", return_eigenvectors=False, tol=1e-10, ncv=min(n - 1, 20))
    lam_far = complex(ev[0])
    if abs(lam_far) > abs(lam_near) * (1.0 + 1e-9):
        return _relaxation_from(lam_far, 1.0 - abs(lam_far), lr)
    return _relaxation_from(lam_near, gap_near, lr)


def _relaxation_from(lam: complex, gap: float, lr: float) -> Relaxation:
    if gap <= 0.0:
        return Relaxation(lam, gap, math.inf, math.inf)
    steps = -1.0 / math.log1p(-gap)
    return Relaxation(lam, gap, steps, lr * steps)


def passage_steps(P, absorbing: np.ndarray) -> np.ndarray:
    """Mean number of steps to first reach the ``absorbing`` cells (bool (N,)), per start cell.

    T_i = 1 + Σ_j P[j, i] T_j on the other cells, i.e. (I − Qᵀ) T = 1 with Q = P restricted
    to them; T = 0 on absorbing cells, inf where they cannot be reached.
    """
    P = _csc(P)
    n = P.shape[0]
    absorbing = np.asarray(absorbing, dtype=bool)
    T = np.zeros(n)
    keep = np.flatnonzero(~absorbing)
    if keep.size == 0:
        return T
    Q = P[keep][:, keep]
    A = sp.identity(keep.size, format="csc") - sp.csc_matrix(Q.T)
    with np.errstate(all="ignore"):
        try:
            x = spla.splu(A).solve(np.ones(keep.size))
        except RuntimeError:  # exactly singular: some cells never reach the absorbing set
            x = np.full(keep.size, np.inf)
    x = np.where(np.isfinite(x) & (x >= 0), x, np.inf)
    T[keep] = x
    return T
