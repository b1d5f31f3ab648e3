"""SVAG (Li, Malladi & Arora 2021, "On the validity of modeling SGD with SDEs").

Each SGD step of size η becomes l steps of size η/l, each with the variance-amplified
gradient a₁·ḡ_{B1} + a₂·ḡ_{B2} of two independent minibatches,
a₁,₂ = (1 ± √(2l−1))/2 (:func:`sgdsweep.montecarlo.kernels.svag_coefficients`): unbiased,
with l times one minibatch's covariance, so the noise per unit of SDE time is SGD's
while the drift is integrated l times more finely. l = 1 is SGD bit for bit (same
random stream); as l → ∞ SVAG converges weakly to the Itô SDE
dθ = −G dt + sqrt(η Σ_b) dW, with weak error O(1/l) (their Theorem 3.2). Time is SDE
time t = η·(SGD step), so l substeps make one step of the time axis.
"""

from __future__ import annotations

from dataclasses import dataclass

from sgdsweep.cell.config import register_section
from sgdsweep.cell.context import CellContext
from sgdsweep.methods.ensemble import ENSEMBLE_FILLS, fill_model, simulate_cell, write_ensemble
from sgdsweep.methods.registry import register_method
from sgdsweep.montecarlo import kernels
from sgdsweep.validate import integer


@dataclass
class SvagConf:
    """SVAG's config section (``svag.l=8``; sweepable: ``grid.svag.l=[2,4,8]``)."""

    l: int = 4

    def __post_init__(self) -> None:
        self.l = integer(self.l, "svag.l", 1)


register_section("svag", SvagConf)


def fill_svag(ctx: CellContext, ds, name: str) -> None:
    """Run SVAG with the cell's ``svag.l`` and write it as an ensemble."""
    write_ensemble(ctx, ds, name, simulate_cell(ctx, name, {"l": ctx.cell.sections["svag"].l}))


def fill_svag_model(ctx, ds, name: str) -> None:
    """SVAG on a model landscape, with the cell's ``svag.l``."""
    fill_model(ctx, ds, name, svag_l=ctx.cell.sections["svag"].l)


register_method(
    name="svag", label="SVAG", color="orange", kernel=kernels.SVAG, stream=kernels.SGD, section="svag",
    kind="ensemble", fill=fill_svag, fill_model=fill_svag_model, dims=(1, 2), fills=ENSEMBLE_FILLS,
    reads=("lr", "batch_size", "sampling", "mc.chains", "svag"), time="t = η·step (l substeps each)",
    summary="SVAG: l steps of η/l per SGD step, gradient ((1+√(2l−1))/2)·ḡ_{B1} + "
            "((1−√(2l−1))/2)·ḡ_{B2} of two independent minibatches; l = 1 is SGD bit for bit, "
            "l → ∞ the Itô SDE (weak error O(1/l))",
)
