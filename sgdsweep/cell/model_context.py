"""What the methods of one model cell share, computed once per cell.

:class:`ModelContext` wraps a validated :class:`~sgdsweep.cell.model_config.ModelCellConfig`
with the reference minimum θ* (its Hessian's top eigenpairs and the noise covariance Σ*
there), the directions the ensembles are projected on, the temperature, and the initial
positions (one array for every Monte Carlo method: common random numbers between methods).
"""

from __future__ import annotations

from functools import cached_property

import numpy as np

from sgdsweep.cell.model_config import ModelCellConfig
from sgdsweep.models.reference import Minimum, find_minimum

#: Stream of the initial positions, apart from every method's (rng.stream_key ids are small).
_START_STREAM = 0x57A27


class ModelContext:
    """Shared, lazily computed pieces of one model cell (see the module docstring)."""

    def __init__(self, cell: ModelCellConfig):
        self.cell = cell

    @property
    def model(self):
        return self.cell.model

    @property
    def dim(self) -> int:
        return self.cell.model.d

    @cached_property
    def start(self) -> np.ndarray:
        """The point the chains spread from: θ* (``models.start: minimum``) or the model's
        seeded initialisation (``init``)."""
        if self.cell.models.start == "minimum":
            return self.minimum.theta
        return np.asarray(self.model.init(self.cell.seed), dtype=np.float64)

    @cached_property
    def minimum(self) -> Minimum:
        """θ* by a full-batch solve from the model's seeded initialisation, with the top
        ``models.directions`` Hessian eigenpairs."""
        theta0 = np.asarray(self.model.init(self.cell.seed), dtype=np.float64)
        return find_minimum(self.model, theta0, k=self.cell.models.directions)

    @cached_property
    def directions(self) -> np.ndarray:
        """(k + m, d): the top-k Hessian eigenvectors at θ*, largest eigenvalue first, each with
        its largest component positive (a sign convention, so that cells agree), then the m
        unit vectors of ``models.project_on``."""
        v = np.asarray(self.minimum.hessian_eigvecs[:, : self.cell.models.directions], dtype=np.float64).T
        signs = np.sign(v[np.arange(len(v)), np.argmax(np.abs(v), axis=1)])
        return np.ascontiguousarray(np.vstack([v * signs[:, None], self.cell.models.project_on]))

    @cached_property
    def eigenvalues(self) -> np.ndarray:
        """(k + m,) curvature along :attr:`directions`: the Hessian eigenvalues at θ*, then the
        Rayleigh quotients uᵀH*u of the user's directions."""
        lam = np.asarray(self.minimum.hessian_eigvals[: self.cell.models.directions], dtype=np.float64)
        theta = self.minimum.theta
        user = [float(u @ self.model.hvp(theta, u)) for u in self.cell.models.project_on]
        return np.concatenate([lam, user])

    @property
    def hessian_directions(self) -> int:
        """k: how many of :attr:`directions` are Hessian eigenvectors (the rest are the user's)."""
        return self.cell.models.directions

    @cached_property
    def noise_cov(self) -> np.ndarray:
        """Σ* = Σ(θ*), the per-sample gradient covariance (population) at the minimum, (d, d)."""
        if self.minimum.noise_cov is not None:
            return np.asarray(self.minimum.noise_cov)
        return np.asarray(self.model.noise_cov(self.minimum.theta))

    @cached_property
    def temperature(self) -> float:
        """``langevin.temperature``, or T = tr D(θ*) / d with D = η Σ_b(θ*) / 2: the mean of the
        SDE's diffusion eigenvalues at the minimum (as the 2-D cells' default)."""
        if self.cell.temperature is not None:
            return float(self.cell.temperature)
        D = 0.5 * self.cell.lr * self.cell.noise_factor * np.trace(self.noise_cov)
        return float(D / self.dim) if D > 0 else float("nan")

    @cached_property
    def initial_positions(self) -> np.ndarray:
        """(chains, d): the start plus N(0, start_std²) per parameter, seeded by the master seed."""
        cell = self.cell
        pos = np.repeat(self.start[None, :], cell.chains, axis=0)
        if cell.models.start_std > 0:
            rng = np.random.default_rng([cell.seed, _START_STREAM])
            pos += cell.models.start_std * rng.standard_normal(pos.shape)
        return np.ascontiguousarray(pos)
