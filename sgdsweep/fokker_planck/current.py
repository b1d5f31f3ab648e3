"""The probability current J = −G p − ∇·(D p) exactly as the Fokker–Planck schemes use it.

Face currents are the operators' own fluxes (``FokkerPlanck1D.current``,
``FokkerPlanck2D.current``), so the discrete
divergence of the returned J is −∂p/∂t to round-off (in 1-D: (J_f − J_{f+1})/dx = dp_f/dt).
Units: J is probability per unit length (1-D) or per unit face length (2-D) per unit SDE
time; a positive component flows towards larger θ. Wall faces carry exactly zero.
"""

from __future__ import annotations

import numpy as np


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
