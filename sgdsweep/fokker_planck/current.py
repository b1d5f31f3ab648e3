"""The probability current J = −G p − ∇·(D p) exactly as the Fokker–Planck schemes use it.

Face currents are the fluxes of the finite-volume schemes themselves, so the discrete
divergence of the returned J is −∂p/∂t to round-off (in 1-D: (J_f − J_{f+1})/dx = dp_f/dt).
Units: J is probability per unit length (1-D) or per unit face length (2-D) per unit SDE
time; a positive component flows towards larger θ. Wall faces carry exactly zero.
"""

from __future__ import annotations

import numpy as np

from sgdsweep.errors import ConfigError
from sgdsweep.fokker_planck.fp1d import FokkerPlanck1D
from sgdsweep.fokker_planck.fp2d import FokkerPlanck2D


def face_current_1d(fp: FokkerPlanck1D, p: np.ndarray) -> np.ndarray:
    """Face flux (…, N+1) of the 1-D Scharfetter–Gummel scheme: J_f = A_f p_{f−1} − C_f p_f.

    Uses the operator's own coefficients (``fp.A``, ``fp.C``), so dp/dt = −ΔJ/dx; p has
    cells on its last axis.
    """
    p = np.asarray(p, dtype=np.float64)
    n = fp.grid.cells
    if p.shape[-1] != n:
        raise ConfigError(f"p: expected {n} cells on the last axis, got shape {p.shape}")
    J = np.zeros((*p.shape[:-1], n + 1))
    J[..., 1:-1] = fp.A[1:-1] * p[..., :-1] - fp.C[1:-1] * p[..., 1:]
    return J


def face_current(fp: FokkerPlanck2D, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(J_x on the x-faces (nx+1, ny), J_y on the y-faces (nx, ny+1)) of a density (nx, ny)."""
    nx, ny = fp.shape
    q = np.asarray(p, dtype=np.float64)
    if q.shape != (nx, ny):
        raise ConfigError(f"p: expected shape {(nx, ny)}, got {q.shape}")
    q = q.ravel()
    Jx = np.zeros((nx + 1, ny))
    Jy = np.zeros((nx, ny + 1))
    Jx[1:-1] = (fp.flux_x @ q).reshape(nx - 1, ny)
    Jy[:, 1:-1] = (fp.flux_y @ q).reshape(nx, ny - 1)
    return Jx, Jy


def centre_current(Jx: np.ndarray, Jy: np.ndarray) -> np.ndarray:
    """Face currents averaged to the cell centres, shape (nx, ny, 2) (for plots)."""
    return np.stack([0.5 * (Jx[:-1] + Jx[1:]), 0.5 * (Jy[:, :-1] + Jy[:, 1:])], axis=-1)


def stream_function(Jx: np.ndarray, dy: float) -> np.ndarray:
    """ψ at the grid nodes (nx+1, ny+1) with J_x = ∂ψ/∂y, ψ = 0 on the bottom wall.

    For a stationary (divergence-free) current ψ also gives J_y = −∂ψ/∂x and vanishes on
    every wall; ψ(node) is the probability per unit time crossing any path of faces from
    that node to a wall. A maximum of ψ is a counter-clockwise vortex.
    """
    psi = np.zeros((Jx.shape[0], Jx.shape[1] + 1))
    psi[:, 1:] = np.cumsum(Jx, axis=1) * dy
    return psi
