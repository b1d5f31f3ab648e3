"""Mean first-passage time from an ensemble in which not every chain has escaped.

The plain mean over the chains that crossed the threshold by the last snapshot
(``escape_time_mean``) ignores the chains still waiting, and is biased low — without
bound: with half the chains escaped it can read a third of the true mean. Treating the
waiting chains as *censored* observations instead, with a constant escape rate (the
exponential law of a rare, memoryless escape; in SGD steps the geometric law), the
maximum-likelihood mean passage time is

    T̂ = (total steps at risk) / (number of escapes),

where a chain that escaped at step s was at risk for s steps, one lost (left the grid)
at step s without escaping for s steps (censored there), and one still waiting at the
last step S for S steps. For the geometric law P(T = s) = p(1 − p)^(s−1) this is exactly
its MLE 1/p̂; with every chain escaped it is the plain mean. Its standard error is the
exponential's asymptotic T̂/√(escapes) (the geometric's is smaller by √(1 − 1/T̂)).
Below :data:`MIN_ESCAPES` escapes the estimate says little (the relative standard error
is 1/√escapes > 30 %): the report and ``status`` flag such cells. With no escape at all
it is undefined (NaN); the data then only bound the mean from below (≈ at risk / 3 at
95 %).

The estimate assumes a constant rate from the start: where escapes need a long
relaxation first (a start far from the well's quasi-stationary law), or chains start
past the threshold (escape step 0, counted as escapes after 0 steps), it is the
likelihood estimate of that model, not an exact mean.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from sgdsweep.cell.schema import MIN_ESCAPES  # relative SE above 1/√10 ≈ 32 %: flagged


@dataclass(frozen=True)
class CensoredEscapes:
    """The censoring-aware mean passage time in SGD steps (see the module docstring)."""

    steps: float  # T̂ = at_risk / escapes; NaN without escapes
    se: float  # T̂ / √escapes; NaN without escapes
    escapes: int
    at_risk: float  # total steps at risk over all chains

    @property
    def flagged(self) -> bool:
        """Too few escapes to say (< :data:`MIN_ESCAPES`)."""
        return self.escapes < MIN_ESCAPES


def censored_escapes(escape_step: np.ndarray, last_step: int,
                     lost_step: np.ndarray | None = None) -> CensoredEscapes:
    """The exponential/geometric maximum-likelihood mean passage time of an ensemble.

    ``escape_step`` (chains,): each chain's first SGD step past the threshold (0 if it
    started there, −1 if never by ``last_step``, the last step simulated); ``lost_step``:
    the step each chain was lost (−1 if never; a chain lost before escaping is censored
    there). Returns :class:`CensoredEscapes` in SGD steps (multiply by η for t).
    """
    esc = np.asarray(escape_step, dtype=np.int64)
    escaped = esc >= 0
    censor = np.full(esc.shape, int(last_step), dtype=np.int64)
    if lost_step is not None:
        lost = np.asarray(lost_step, dtype=np.int64)
        censor = np.where(lost >= 0, np.minimum(lost, censor), censor)
    at_risk = float(np.where(escaped, esc, censor).sum())
    d = int(np.count_nonzero(escaped))
    if d == 0:
        return CensoredEscapes(math.nan, math.nan, 0, at_risk)
    mean = at_risk / d
    return CensoredEscapes(mean, mean / math.sqrt(d), d, at_risk)
