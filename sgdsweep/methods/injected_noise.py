"""SGD with explicit Gaussian noise added to the minibatch gradient (``sgd_noise``).

θ ← θ − η (ḡ_B + σ z), z ~ N(0, I) fresh every step, independent of the minibatch.
Its SDE (time t = η·step) is dθ = −G dt + sqrt(η (Σ_b + σ² I)) dW: the injected noise
adds η σ²/2 to the diffusion D (per axis). σ is either given (``sgd_noise.sigma``) or
*matched* to a temperature T: σ² = 2T/η, so that the injected part alone has D = T
and, where the minibatch noise is negligible (Σ_b ≪ σ²) and in the small-step limit
η → 0, the stationary law is Gibbs, ∝ exp(−L/T). Where Σ_b is not negligible the
diffusion is T + η Σ_b(θ)/2 and the law is not Gibbs; that is the point of comparing
it with ``langevin`` at the same T. ``sgd_noise.temperature`` null and ``sigma`` null
match σ to the cell's Langevin temperature (``langevin.temperature`` or its default).
The σ used is stored per cell as ``sgd_noise_sigma``; 1-D cells get the stationary kind
``sgd_noise``, the zero-flux density of that SDE (D = η(Σ_b + σ²)/2), to set beside
``gibbs``. The minibatches are SGD's own (same
random stream; z is hashed from it without advancing it), so ``sgd_noise`` − ``sgd`` is the
effect of the injected noise alone, and σ = 0 is SGD bit for bit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from sgdsweep.cell.config import register_section
from sgdsweep.cell.context import CellContext
from sgdsweep.errors import ConfigError
from sgdsweep.fokker_planck.conventions import CONVENTIONS
from sgdsweep.fokker_planck.fp1d import FokkerPlanck1D
from sgdsweep.fokker_planck.fp2d import FokkerPlanck2D
from sgdsweep.methods.ensemble import ENSEMBLE_FILLS, fill_model, simulate_cell, write_ensemble
from sgdsweep.methods.registry import Variable, register_method
from sgdsweep.montecarlo import kernels
from sgdsweep.validate import real


@dataclass
class SgdNoiseConf:
    """``sgd_noise.sigma`` (σ, gradient units) or ``sgd_noise.temperature`` (T, loss units)."""

    sigma: float | None = None
    temperature: float | None = None

    def __post_init__(self) -> None:
        if self.sigma is not None and self.temperature is not None:
            raise ConfigError("sgd_noise: give sigma or temperature, not both")
        if self.sigma is not None:
            self.sigma = real(self.sigma, "sgd_noise.sigma", nonnegative=True)
        if self.temperature is not None:
            self.temperature = real(self.temperature, "sgd_noise.temperature", positive=True)


register_section("sgd_noise", SgdNoiseConf)


def matched_sigma(temperature: float, lr: float) -> float:
    """σ = sqrt(2T/η): the injected noise's diffusion η σ²/2 equals T."""
    return math.sqrt(2.0 * temperature / lr)


def noise_sigma(ctx: CellContext) -> float:
    """The cell's σ: configured, else matched to ``sgd_noise.temperature`` or the Langevin T."""
    conf = ctx.cell.sections["sgd_noise"]
    if conf.sigma is not None:
        return conf.sigma
    T = conf.temperature if conf.temperature is not None else ctx.temperature
    if T is None:
        raise ConfigError("sgd_noise: give sigma or temperature (no Langevin temperature in this cell)")
    return matched_sigma(T, ctx.cell.lr)


def fill_sgd_noise(ctx: CellContext, ds, name: str) -> None:
    """Run SGD with injected noise of the cell's σ; store σ as ``sgd_noise_sigma``."""
    sigma = noise_sigma(ctx)
    write_ensemble(ctx, ds, name, simulate_cell(ctx, name, {"sigma": sigma}))
    ds["sgd_noise_sigma"] = ((), sigma, ds["sgd_noise_sigma"].attrs)


def fill_sgd_noise_model(ctx, ds, name: str) -> None:
    """SGD with injected noise on a model landscape (σ per parameter)."""
    sigma = noise_sigma(ctx)
    fill_model(ctx, ds, name, grad_noise=sigma)
    ds["sgd_noise_sigma"] = ((), sigma, ds["sgd_noise_sigma"].attrs)


def stationary_sgd_noise(ctx: CellContext) -> np.ndarray:
    """The stationary density of sgd_noise's SDE (the cell's ``fp.convention``):
    D = η (Σ_b + σ² I)/2; 1-D on the refined FP grid, averaged onto the density grid,
    2-D on the density grid."""
    cell, fine = ctx.cell, ctx.fine
    sigma2 = noise_sigma(ctx) ** 2
    if ctx.dim == 2:
        fp2 = FokkerPlanck2D.from_landscape(cell.landscape, *cell.grids, cell.lr, cell.noise_factor,
                                            CONVENTIONS[cell.convention],
                                            extra_diffusion=0.5 * cell.lr * sigma2)
        return fp2.stationary().density
    faces = cell.landscape.evaluate(fine.edges)
    centres = cell.landscape.evaluate(fine.centres)

    def diff(ev):
        return 0.5 * cell.lr * (cell.noise_factor * ev["cov"][:, 0, 0] + sigma2)

    fp = FokkerPlanck1D(fine, faces["grad"][:, 0], diff(faces), diff(centres),
                        CONVENTIONS[cell.convention])
    return ctx.coarse(fp.stationary().density)


register_method(
    name="sgd_noise", label="SGD + injected noise", color="yellow", kernel=kernels.SGD_NOISE,
    stream=kernels.SGD, section="sgd_noise", needs_temperature=True,
    kind="ensemble", fill=fill_sgd_noise, fill_model=fill_sgd_noise_model, dims=(1, 2), fills=ENSEMBLE_FILLS,
    reads=("lr", "batch_size", "sampling", "mc.chains", "sgd_noise", "langevin"), time="t = η·step",
    variables={"sgd_noise_sigma": Variable((), "std σ of the Gaussian added to the minibatch "
                                           "gradient (per axis)")},
    stationary={"sgd_noise": stationary_sgd_noise},
    summary="minibatch SGD plus σ·z added to the gradient each step, z ~ N(0, I); σ given, or "
            "matched σ² = 2T/η (Gibbs at T where the minibatch noise is negligible, η → 0); SGD's "
            "minibatches, σ = 0 is SGD bit for bit; stationary kind `sgd_noise` (its SDE's, 1-D)",
)
