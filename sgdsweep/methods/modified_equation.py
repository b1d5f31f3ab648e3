"""The second-order stochastic modified equation of SGD (Li, Tai & E 2017): ``sme2``, ``fp_sme2``.

    dθ = −∇(L + (η/4)|∇L|²) dt + sqrt(η Σ_b) dW      (Itô, t = η·step)

i.e. the SDE's drift G corrected by (η/2)·H·G (H = ∇²L), with the SDE's diffusion. It is
a weak order-2 approximation of SGD over finite times (the first-order SDE is order 1).

* ``sme2``: Euler–Maruyama Monte Carlo, ``mc.sde_substeps`` steps per SGD step, on the
  SDE's Brownian increments (same random stream as ``sde``: the difference of the two
  ensembles is the drift correction, not sampling noise). 1-D and 2-D.
* ``fp_sme2``: its Fokker–Planck density, the ``fp`` solver with the corrected drift
  (1-D on the refined FP grid, 2-D on the density grid, as ``fp``), under the cell's
  ``fp.convention``; stationary kind ``sme2``, the generator's null vector.

On a quadratic l_i = h/2 (θ − c_i)² the corrected drift is h(1 + ηh/2)(θ − c̄) and D is
constant, so the stationary law is normal with variance η h Var(c) f / (2 + ηh) (f = Σ_b/Σ):
below the SDE's η h Var(c) f / 2, while exact SGD's η h Var(c) f / (2 − ηh) is above it.
The order-2 drift correction alone moves the stationary variance the wrong way: the
finite-time weak-order guarantee does not extend to t → ∞. In 2-D with a shared Hessian
H = hI the corrected drift is h(1 + ηh/2)(θ − c̄), so the stationary law is N(c̄, C),
C = η Σ_b / (h (2 + ηh)) (Σ_b = h² Cov(c) f constant).
"""

from __future__ import annotations

import xarray as xr

from sgdsweep.cell.context import CellContext
from sgdsweep.fokker_planck.conventions import CONVENTIONS
from sgdsweep.methods.ensemble import ENSEMBLE_FILLS, fill_ensemble
from sgdsweep.methods.fokker_planck import DENSITY_FILLS, write_density
from sgdsweep.methods.registry import register_method
from sgdsweep.montecarlo import kernels


def _operator(ctx: CellContext):
    return ctx.fp_operator(CONVENTIONS[ctx.cell.convention], sme2=True)


def fill_fp_sme2(ctx: CellContext, ds: xr.Dataset, name: str) -> None:
    """Evolve the FP equation of the modified SDE from the initial law into ``ds``."""
    fp = _operator(ctx)
    write_density(ctx, ds, name, fp.evolve(ctx.initial_masses / fp.cell_volume, ctx.cell.times, ctx.fp_dt))


def stationary_sme2(ctx: CellContext):
    """The stationary density of the modified SDE, on the density grid ((nx, ny) in 2-D)."""
    return ctx.coarse(_operator(ctx).stationary().density)


register_method(
    name="sme2", label="SME-2 (Euler–Maruyama)", color="sky", kernel=kernels.SME2, stream=kernels.SDE,
    kind="ensemble", fill=fill_ensemble, dims=(1, 2), fills=ENSEMBLE_FILLS,
    reads=("lr", "batch_size", "sampling", "mc"),
    summary="Euler–Maruyama of the second-order modified equation dθ = −∇(L + (η/4)‖∇L‖²) dt "
            "+ sqrt(η Σ_b) dW (Itô; drift G + (η/2)·H·G), the SDE's Brownian increments",
)
register_method(
    name="fp_sme2", label="FP of SME-2", color="black", linestyle=":",
    kind="density", fill=fill_fp_sme2, dims=(1, 2), fills=DENSITY_FILLS,
    reads=("lr", "batch_size", "sampling", "fp", "mc.sde_substeps"),
    stationary={"sme2": stationary_sme2},
    summary="Fokker–Planck density of `sme2` (the `fp` solver with drift G + (η/2)·H·G); "
            "stationary kind `sme2`",
)
