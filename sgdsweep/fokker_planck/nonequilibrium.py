"""Summary numbers of a stationary state: how far it is from equilibrium.

* mean |J| = ∫ |J| dθ (units θ per unit time): zero in detailed balance;
* circulation (2-D): the signed extreme of the stream function ψ, i.e. the probability
  per unit time that circulates around the vortex (> 0 counter-clockwise);
* KL(stationary ‖ Gibbs) with Gibbs ∝ exp(−L/T): how far the density's *shape* is from
  the Langevin law.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from sgdsweep.analysis.metrics import kl_divergence
from sgdsweep.errors import ConfigError
from sgdsweep.fokker_planck.current import centre_current, stream_function
from sgdsweep.fokker_planck.operator import FokkerPlanckOperator
from sgdsweep.fokker_planck.references import gibbs_density


@dataclass(frozen=True)
class CurrentSummary:
    """``mean_abs_current`` ∫|J| dθ (θ/time), ``circulation`` (probability/time, signed),
    ``circulation_at`` the node (θ_x, θ_y) where |ψ| is largest."""

    mean_abs_current: float
    circulation: float
    circulation_at: tuple[float, float]


def current_summary(fp: FokkerPlanckOperator, p: np.ndarray) -> CurrentSummary:
    """Mean |J| and circulation of the current of density ``p`` (``fp.shape``) under ``fp``.

    In 1-D there is no vortex: circulation and its place are NaN."""
    if len(fp.shape) == 1:
        Jc = fp.centre_current(p)
        return CurrentSummary(float(np.abs(Jc).sum() * fp.cell_volume), math.nan, (math.nan, math.nan))
    Jx, Jy = fp.current(p)
    Jc = centre_current(Jx, Jy)
    mean_abs = float(np.sqrt((Jc**2).sum(axis=-1)).sum() * fp.cell_volume)
    gx, gy = fp.grids
    psi = stream_function(Jx, gy.dx)
    i, j = np.unravel_index(int(np.argmax(np.abs(psi))), psi.shape)
    return CurrentSummary(mean_abs, float(psi[i, j]), (float(gx.edges[i]), float(gy.edges[j])))


def default_temperature(loss: np.ndarray, diff_centres: np.ndarray) -> float:
    """T = ½ tr D at the cell of lowest loss (the mean of D's eigenvalues there).

    The 2-D analogue of :func:`sgdsweep.fokker_planck.references.langevin_default_temperature`; if D
    vanishes there, the grid mean of ½ tr D; ConfigError if D vanishes everywhere.
    """
    tr = 0.5 * (diff_centres[..., 0, 0] + diff_centres[..., 1, 1])
    k = np.unravel_index(int(np.argmin(loss)), np.shape(loss))
    floor = 1e-20 * float(np.max(tr)) if np.max(tr) > 0 else 0.0
    if tr[k] > floor and tr[k] > 0:
        return float(tr[k])
    if np.mean(tr) > 0:
        return float(np.mean(tr))
    raise ConfigError("langevin.temperature: the gradient noise vanishes on the whole grid; "
                      "give one explicitly")


def kl_to_gibbs(p: np.ndarray, loss: np.ndarray, temperature: float, cell_volume: float) -> float:
    """KL(p ‖ Gibbs) in nats, Gibbs ∝ exp(−L/T) on the same cells (p, loss: any equal shape,
    ``cell_volume`` dx in 1-D, dx·dy in 2-D)."""
    p = np.asarray(p, dtype=np.float64).ravel()
    gibbs = gibbs_density(np.asarray(loss).ravel(), temperature, cell_volume)
    return float(kl_divergence(p, gibbs, cell_volume))
