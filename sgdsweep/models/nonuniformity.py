"""Non-uniformity of the per-sample Hessians at a minimum, and the Wu–Ma–E stability bound.

Wu, Ma & E (NeurIPS 2018, "How SGD selects the global minima in over-parameterized learning")
linearise SGD at a minimum θ*: e' = (I − ηH_B) e, H_B the mean of the b per-sample Hessians
H_i = ∇²l_i(θ*) of the batch, H = (1/n) Σ H_i. Two numbers characterise the minimum:

* sharpness a = λ_max(H) (units loss/θ²);
* non-uniformity s = λ_max(Σ_H)^{1/2}, Σ_H = (1/n) Σ H_i² − H² (units loss/θ²): the spread of
  the H_i. The l2 term l2·I of every H_i cancels in Σ_H.

With E_B[H_B²] = H² + c Σ_H, c the batch factor of :func:`~sgdsweep.landscapes.noise.
batch_noise_factor` (1/b drawing with replacement, (n − b)/(b(n − 1)) without — the convention
of :func:`sgdsweep.models.moments.ms_edge`), one step takes E|e|² from eᵀe to
eᵀ[(I − ηH)² + η²c Σ_H] e. In one dimension that bracket is the whole story: SGD is
mean-square stable iff (1 − ηa)² + η²c s² ≤ 1, which needs both 0 ≤ a ≤ 2/η and
s ≤ 1/(η√c) (= √b/η with replacement) — the paper's necessary conditions. Hence

    η_WME(b) = min(2/a, 1/(s√c))        (:func:`wme_edge`)

is the largest η that satisfies both. In one dimension the exact edge 2a/(a² + c s²) lies
below it, touching it only where a = s√c. In d dimensions the paper's Theorem 1 is the
*sufficient* condition λ_max((I − ηH)² + η²c Σ_H) ≤ 1 (E|e|² then shrinks at every step from
every start); its largest η is :func:`one_step_edge` = 2/ν_max of the pencil
E_B[H_B²] u = ν H u. It bounds the exact mean-square edge from below (the radius of the
second-moment map is at most λ_max of that bracket), and it is at most η_WME; the exact edge
itself need not lie below η_WME in d dimensions — the bound's two conditions are necessary
for Theorem 1's condition, not for stability. Learning rates here are per step (dimensionless
in the units above: η·a is a number).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import scipy.linalg as sla

from sgdsweep.errors import ConfigError
from sgdsweep.models.hvp_kernels import hessian_square_mean
from sgdsweep.models.model import Model
from sgdsweep.models.sharpness import top_eigenpairs
from sgdsweep.validate import real


def hessian_spread(model: Model, theta) -> Callable[[np.ndarray], np.ndarray]:
    """v ↦ Σ_H v = (1/n) Σ_i H_i(H_i v) − H(H v) at θ, by exact per-sample Hessian-vector products
    (2n + 2 per application, O(n d) for linear models and O(n·hidden·p) for the MLP)."""
    t = np.ascontiguousarray(theta, dtype=np.float64)
    if t.shape != (model.d,):
        raise ConfigError(f"theta: expected shape ({model.d},), got {t.shape}")
    args = model.kernel_args()
    tmp = np.empty(model.d)
    work = np.zeros(max(2 * model.hidden, 1))

    def apply(v: np.ndarray) -> np.ndarray:
        v = np.ascontiguousarray(v, dtype=np.float64)
        out = np.empty(model.d)
        hessian_square_mean(*args, t, v, out, tmp, work)
        return out - model.hvp(t, model.hvp(t, v))

    return apply


def spread_matrix(model: Model, theta) -> np.ndarray:
    """Dense Σ_H (d, d) at θ, from d applications of :func:`hessian_spread` (symmetrised)."""
    apply = hessian_spread(model, theta)
    eye = np.eye(model.d)
    S = np.stack([apply(eye[k]) for k in range(model.d)], axis=1)
    return 0.5 * (S + S.T)


def nonuniformity(model: Model, theta, *, tol: float = 0.0) -> float:
    """s = λ_max(Σ_H)^{1/2} at θ (units loss/θ², like the sharpness): Lanczos on
    :func:`hessian_spread` (``tol`` its relative accuracy, 0 = machine precision; dense for d ≤ 2).
    Σ_H is PSD, so a negative top eigenvalue can only be round-off: s = 0 then."""
    lam = top_eigenpairs(hessian_spread(model, theta), model.d, 1, real(tol, "tol"))[0][0]
    return math.sqrt(max(float(lam), 0.0))


def wme_edge(sharpness: float, nonuniformity: float, factor: float) -> float:
    """η_WME = min(2/a, 1/(s√c)) for sharpness a, non-uniformity s and batch factor c (1/b with
    replacement): the largest η meeting Wu, Ma & E's conditions a ≤ 2/η and s ≤ 1/(η√c) (module
    docstring). ``inf`` where neither binds (a ≤ 0 and s·√c = 0)."""
    a = real(sharpness, "sharpness")
    s = real(nonuniformity, "nonuniformity")
    c = real(factor, "factor")
    if s < 0 or c < 0:
        raise ConfigError(f"nonuniformity, factor: must be >= 0, got {s!r}, {c!r}")
    gd = 2.0 / a if a > 0 else math.inf
    noise = 1.0 / (s * math.sqrt(c)) if s * c > 0 else math.inf
    return min(gd, noise)


def one_step_edge(model: Model, theta, factor: float, *, spread: np.ndarray | None = None) -> float:
    """The largest η with λ_max((I − ηH)² + η²c Σ_H) ≤ 1 (Wu, Ma & E's sufficient condition):
    2/ν_max of the pencil (H² + cΣ_H) u = ν H u, dense (H must be positive definite). ``spread``:
    Σ_H if already built (:func:`spread_matrix`). A lower bound of the exact mean-square edge."""
    c = real(factor, "factor")
    H = model.hessian(theta)
    S = spread_matrix(model, theta) if spread is None else np.asarray(spread, dtype=np.float64)
    try:
        nu = sla.eigh(H @ H + c * S, H, eigvals_only=True)[-1]
    except np.linalg.LinAlgError:
        raise ConfigError("theta: the Hessian there is not positive definite: no one-step edge") from None
    return float(2.0 / nu)


__all__ = ["hessian_spread", "nonuniformity", "one_step_edge", "spread_matrix", "wme_edge"]
