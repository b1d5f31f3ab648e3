"""The configuration of a cell on a model with many parameters (``landscape.family: model``).

Such a cell shares the sweep settings of every cell (``lr``, ``batch_size``, ``sampling``,
``methods``, ``seed``, ``time``, ``mc``, ``langevin``) and reads its own section ``models``
(:class:`ModelsConf`: where the chains start, how many Hessian directions to project on,
when the covariance is stored in full, sharpness, divergence bound, Hill's fraction).
The ``density_grid`` is the 1-D grid of the projections (θ − θ*)·v_k, in units of θ.

No density grid in d dimensions: the ensemble is observed through its moments, loss,
gradient norm and sharpness, and through 1-D densities of its projections on the top
Hessian eigenvectors v_k of the reference minimum θ* (:mod:`sgdsweep.cell.model_run`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from sgdsweep.cell.layout import check_memory
from sgdsweep.cell.schedule import parse_methods, parse_schedule, parse_step, parse_temperature
from sgdsweep.errors import ConfigError
from sgdsweep.landscapes.grid import Grid1D
from sgdsweep.landscapes.noise import batch_noise_factor
from sgdsweep.methods.registry import Method, registered
from sgdsweep.models.model import Model, build_model
from sgdsweep.models.reference import check_isolated
from sgdsweep.validate import integer, real

#: ``landscape.family`` of model landscapes (term landscapes have none, or ``terms``).
MODEL_FAMILY = "model"
#: Landscape keys that describe the landscape, not the model (kept out of build_model).
_LANDSCAPE_ONLY = ("family", "name")
STARTS = ("minimum", "init")


def is_model_landscape(land: Any) -> bool:
    """Whether a landscape mapping describes a model on a dataset."""
    return isinstance(land, Mapping) and land.get("family") == MODEL_FAMILY


def _meta(unit: str, help: str) -> dict[str, str]:
    return {"unit": unit, "help": help}


@dataclass
class ModelsConf:
    """Cells on models with many parameters (``landscape.family: model``); ignored otherwise."""

    start: str = field(default="minimum", metadata=_meta(
        "", "minimum: chains start at the reference minimum θ* plus N(0, start_std²) per "
            "parameter; init: at the model's seeded initialisation (training from scratch)"))
    start_std: float = field(default=0.0, metadata=_meta("θ", "spread of the start around θ*"))
    directions: int | None = field(default=None, metadata=_meta(
        "1", "top Hessian eigenvectors of θ* whose projections are histogrammed, and top "
             "eigenvalues of Σ* stored (≤ d; null: min(4, d))"))
    max_cov_dim: int = field(default=64, metadata=_meta(
        "1", "store the full covariance of θ up to this d, only its diagonal beyond"))
    sharpness_chains: int = field(default=4, metadata=_meta(
        "1", "chains whose sharpness (top Hessian eigenvalue, Lanczos) is computed per snapshot"))
    bound: float = field(default=1e6, metadata=_meta(
        "θ", "a chain with a non-finite θ or |θ_k| > bound is diverged (lost)"))
    hill_frac: float = field(default=0.05, metadata=_meta(
        "1", "fraction of the largest |projections| used by Hill's tail-index estimator"))
    project_on: Any = field(default=None, metadata=_meta(
        "θ", "further directions to project on, after the Hessian's: a list of d-vectors or the "
             "path of a .npy or .csv file holding an (m, d) array; each scaled to unit length and "
             "stored as direction u1…um"))


@dataclass(frozen=True, eq=False)
class ModelCellConfig:
    """A validated cell on a model landscape. Times are SDE times t = η·step."""

    model: Model
    lr: float
    batch_size: int
    sampling: str
    methods: tuple[str, ...]
    seed: int
    grid: Grid1D  # the projections' grid (θ units)
    times: np.ndarray
    steps: np.ndarray
    chains: int
    sde_substeps: int
    temperature: float | None  # None: T = tr D(θ*) / d
    models: ModelsConf
    method_specs: tuple[Method, ...] = ()
    sections: dict[str, Any] = field(default_factory=dict)

    @property
    def dim(self) -> int:
        return self.model.d

    @property
    def landscape(self) -> Model:
        return self.model

    @property
    def noise_factor(self) -> float:
        """Σ_b / Σ for this batch size and sampling scheme."""
        return batch_noise_factor(self.model.n, self.batch_size, self.sampling)


def _models_conf(raw: Mapping[str, Any]) -> ModelsConf:
    known = {f.name for f in fields(ModelsConf)}
    unknown = set(raw) - known
    if unknown:
        raise ConfigError(f"models.{sorted(unknown)[0]}: unknown setting (known: {', '.join(sorted(known))})")
    conf = ModelsConf(**raw)
    if conf.start not in STARTS:
        raise ConfigError(f"models.start: unknown {conf.start!r} (known: {', '.join(STARTS)})")
    conf.start_std = real(conf.start_std, "models.start_std")
    if conf.start_std < 0:
        raise ConfigError(f"models.start_std: must be >= 0, got {conf.start_std}")
    if conf.directions is not None:
        conf.directions = integer(conf.directions, "models.directions", 1)
    conf.max_cov_dim = integer(conf.max_cov_dim, "models.max_cov_dim", 0)
    conf.sharpness_chains = integer(conf.sharpness_chains, "models.sharpness_chains", 0)
    conf.bound = real(conf.bound, "models.bound", positive=True)
    conf.hill_frac = real(conf.hill_frac, "models.hill_frac", positive=True)
    if conf.hill_frac >= 1:
        raise ConfigError(f"models.hill_frac: must be < 1, got {conf.hill_frac}")
    return conf


def user_directions(spec: Any, d: int) -> np.ndarray:
    """``models.project_on`` as an (m, d) array of unit vectors (m = 0 without one).

    ``spec``: None, a list of d numbers (one direction) or of such lists, or the path of a
    ``.npy`` / ``.csv`` (comma-separated, no header) file holding one such array."""
    field_ = "models.project_on"
    if spec is None:
        return np.zeros((0, d))
    if isinstance(spec, str | Path):
        f = Path(spec).expanduser()
        if not f.is_file():
            raise ConfigError(f"{field_}: no such file {str(f)!r}")
        try:
            raw = np.load(f) if f.suffix == ".npy" else np.loadtxt(f, delimiter=",", ndmin=2) \
                if f.suffix == ".csv" else None
        except (ValueError, OSError) as exc:
            raise ConfigError(f"{field_}: {f.name} is not a numeric array ({exc})") from None
        if raw is None:
            raise ConfigError(f"{field_}: expected a .npy or .csv file, got {f.name!r}")
    else:
        try:
            raw = np.array(spec, dtype=np.float64)
        except (TypeError, ValueError):
            raise ConfigError(f"{field_}: expected numbers, a list of d-vectors or a file, "
                              f"got {spec!r}") from None
    V = np.asarray(raw, dtype=np.float64)
    V = V[None, :] if V.ndim == 1 else V
    if V.ndim != 2 or V.shape[1] != d or len(V) == 0:
        raise ConfigError(f"{field_}: each direction needs the model's {d} parameters, got an array "
                          f"of shape {tuple(np.shape(raw))}")
    norms = np.linalg.norm(V, axis=1)
    bad = np.flatnonzero(~np.isfinite(norms) | (norms == 0))
    if bad.size:
        raise ConfigError(f"{field_}: direction {bad[0] + 1} is zero or not finite")
    return np.ascontiguousarray(V / norms[:, None])


def model_from_landscape(land: Mapping[str, Any]) -> Model:
    """The :class:`~sgdsweep.models.model.Model` of a ``family: model`` landscape mapping."""
    return build_model({k: v for k, v in land.items() if k not in _LANDSCAPE_ONLY})


def parse_model_cell(raw: Mapping[str, Any], sections: Mapping[str, Any]) -> ModelCellConfig:
    """Validate a merged cell mapping (defaults filled in) whose landscape is a model.

    ``sections``: the registered sections, already parsed. Settings of term landscapes
    (``init``, ``fp``, ``escape``) are not read.
    """
    model = model_from_landscape(raw["landscape"])
    check_isolated(model)  # at planning, not after a long solve on a worker
    lr, batch_size, sampling = parse_step(raw, model.n)
    methods, specs = parse_methods(raw)
    for m in specs:
        if m.fill_model is None:
            able = [name for name, rec in registered().items() if rec.fill_model is not None]
            raise ConfigError(f"methods: {m.name} does not run on model landscapes (landscape.family: "
                              f"model); drop it (methods that do: {', '.join(able)})")
    seed = integer(raw["seed"], "seed", 0)
    spec = raw["density_grid"]
    for key in ("lower", "upper", "cells"):
        if isinstance(spec[key], list | tuple):
            raise ConfigError(f"density_grid.{key}: a model cell's projection grid is 1-D; give one "
                              f"number, got {spec[key]!r}")
    grid = Grid1D(real(spec["lower"], "density_grid.lower"), real(spec["upper"], "density_grid.upper"),
                  integer(spec["cells"], "density_grid.cells", 3))
    sched = parse_schedule(raw, lr)
    times, steps, chains, substeps = sched.times, sched.steps, sched.chains, sched.sde_substeps
    temperature = parse_temperature(raw)
    conf = _models_conf(raw["models"])
    if conf.directions is None:
        conf.directions = min(4, model.d)
    if conf.directions > model.d:
        raise ConfigError(f"models.directions: {conf.directions} is more than the model's "
                          f"{model.d} parameters")
    conf.project_on = user_directions(conf.project_on, model.d)
    if conf.sharpness_chains > chains:
        raise ConfigError(f"models.sharpness_chains: {conf.sharpness_chains} is more than "
                          f"mc.chains = {chains}")
    cell = ModelCellConfig(
        model=model, lr=lr, batch_size=batch_size, sampling=sampling, methods=tuple(methods),
        seed=seed, grid=grid, times=times, steps=steps, chains=chains, sde_substeps=substeps,
        temperature=temperature, models=conf, method_specs=specs, sections=dict(sections),
    )
    check_memory(cell)  # before θ* or any chain is allocated; the pipeline checks a worker's share
    for m in specs:
        if m.validate is not None:
            m.validate(cell)
    return cell
