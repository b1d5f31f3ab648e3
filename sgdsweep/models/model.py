"""A model landscape on a dataset: L(θ) = (1/n) Σ_i l_i(θ), l_i = loss(f_θ(x_i), y_i) + (l2/2)|θ|²,
with its gradient, per-sample gradients, exact Hessian-vector products, Hessian and noise covariance.

Kinds: ``linear_regression`` (f = xᵀθ, squared loss), ``logistic_regression`` (f = xᵀθ the logit,
cross-entropy) and ``mlp`` (one tanh hidden layer, squared or cross-entropy; parameter layout in
:mod:`sgdsweep.models.kernels`). Linear models with ``bias`` see a constant-1 feature appended
(d = p + 1); the MLP has its own biases and ``bias`` is ignored.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from sgdsweep.errors import ConfigError
from sgdsweep.models import kernels as K
from sgdsweep.models.datasets import Data, load_data
from sgdsweep.models.hvp_kernels import full_hvp
from sgdsweep.validate import integer, real

KINDS = ("linear_regression", "logistic_regression", "mlp")
LOSSES = ("squared", "cross_entropy")
_LOSS_ID = {"squared": K.SQUARED, "cross_entropy": K.CROSS_ENTROPY}


@dataclass(frozen=True)
class Model:
    """A model of ``kind`` on ``data`` (see the module docstring). Checked on construction."""

    data: Data
    kind: str
    hidden: int = 0
    loss: str = "squared"
    l2: float = 0.0
    bias: bool = True

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"landscape.kind: unknown {self.kind!r} (known: {', '.join(KINDS)})")
        if self.loss not in LOSSES:
            raise ConfigError(f"landscape.loss: unknown {self.loss!r} (known: {', '.join(LOSSES)})")
        want = {"linear_regression": "squared", "logistic_regression": "cross_entropy"}.get(self.kind)
        if want is not None and self.loss != want:
            raise ConfigError(f"landscape.loss: {self.kind} has the {want} loss, got {self.loss!r}")
        if self.loss == "cross_entropy" and self.data.task != "binary":
            raise ConfigError(f"landscape.loss: cross_entropy needs a binary task, {self.data.name} is "
                              f"{self.data.task}")
        if self.kind == "mlp" and self.hidden < 1:
            raise ConfigError(f"landscape.hidden: must be >= 1, got {self.hidden}")
        if not (math.isfinite(self.l2) and self.l2 >= 0):
            raise ConfigError(f"landscape.l2: must be >= 0, got {self.l2!r}")

    @property
    def n(self) -> int:
        return self.data.n

    @cached_property
    def X(self) -> np.ndarray:
        """The design matrix the kernels see: the data's features, plus a 1-column for a linear model
        with bias."""
        if self.kind != "mlp" and self.bias:
            return np.ascontiguousarray(np.hstack([self.data.X, np.ones((self.n, 1))]))
        return self.data.X

    @property
    def d(self) -> int:
        return K.n_params(self._kind_id, self.X.shape[1], self._hidden)

    @property
    def _kind_id(self) -> int:
        return K.MLP if self.kind == "mlp" else K.LINEAR

    @property
    def _hidden(self) -> int:
        return self.hidden if self.kind == "mlp" else 0

    def kernel_args(self) -> tuple:
        """The bundle ``(kind, loss, hidden, X, y, l2)`` of :mod:`sgdsweep.models.kernels`."""
        return (self._kind_id, _LOSS_ID[self.loss], self._hidden, self.X, self.data.y, float(self.l2))

    def _work(self) -> np.ndarray:
        return np.zeros(K.work_size(self._hidden))

    def _theta(self, theta, field: str = "theta") -> np.ndarray:
        t = np.ascontiguousarray(theta, dtype=np.float64)
        if t.shape != (self.d,):
            raise ConfigError(f"{field}: expected shape ({self.d},), got {t.shape}")
        return t

    def loss_value(self, theta) -> float:
        """L(θ)."""
        return float(K.full_loss(*self.kernel_args(), self._theta(theta), self._work()))

    def grad(self, theta) -> np.ndarray:
        """G(θ) = ∇L(θ)."""
        out = np.empty(self.d)
        K.full_grad(*self.kernel_args(), self._theta(theta), out, self._work())
        return out

    def sample_grads(self, theta) -> np.ndarray:
        """(n, d): row i is ∇l_i(θ) (each with its l2·θ)."""
        out = np.empty((self.n, self.d))
        K.sample_grads(*self.kernel_args(), self._theta(theta), out, self._work())
        return out

    def hvp(self, theta, v) -> np.ndarray:
        """∇²L(θ) v, exact (R-operator)."""
        out = np.empty(self.d)
        full_hvp(*self.kernel_args(), self._theta(theta), self._theta(v, "v"), out, self._work())
        return out

    def hessian(self, theta) -> np.ndarray:
        """Dense ∇²L(θ) (d, d): closed form (1/n) Xᵀ diag(w) X + l2·I for linear models (w_i = 1, or
        σ'(f_i) for logistic), d HVP columns for the MLP (symmetrised against round-off)."""
        t = self._theta(theta)
        if self.kind == "mlp":
            eye = np.eye(self.d)
            H = np.stack([self.hvp(t, eye[k]) for k in range(self.d)], axis=1)
            return 0.5 * (H + H.T)
        X = self.X
        if self.loss == "squared":
            w = np.ones(self.n)
        else:
            s = 0.5 * (1.0 + np.tanh(0.5 * (X @ t)))
            w = s * (1.0 - s)
        return (X.T * w) @ X / self.n + self.l2 * np.eye(self.d)

    def noise_cov(self, theta) -> np.ndarray:
        """Σ(θ) = (1/n) Σ_i (g_i − G)(g_i − G)ᵀ, the population covariance of the per-sample gradients."""
        g = self.sample_grads(theta)
        g -= g.mean(axis=0)
        return g.T @ g / self.n

    def init(self, seed: int, scale: float = 1.0) -> np.ndarray:
        """A seeded initial θ: linear models N(0, scale²/d) per coordinate; the MLP N(0, scale²/p) for
        W, N(0, scale²/hidden) for a (fan-in variances), c = 0 and a0 = 0."""
        rng = np.random.default_rng([integer(seed, "seed", 0), 0x1A17])
        scale = real(scale, "scale", positive=True)
        if self.kind != "mlp":
            return scale * rng.standard_normal(self.d) / math.sqrt(self.d)
        h, p = self.hidden, self.X.shape[1]
        theta = np.zeros(self.d)
        theta[: h * p] = scale * rng.standard_normal(h * p) / math.sqrt(p)
        theta[h * p + h: h * p + 2 * h] = scale * rng.standard_normal(h) / math.sqrt(h)
        return theta


_SECTION_KEYS = ("kind", "dataset", "n", "features", "hidden", "loss", "l2", "bias", "seed", "path", "noise",
                 "positive_class", "task")


def build_model(section: Mapping[str, Any], prefix: str = "landscape") -> Model:
    """A :class:`Model` from a config mapping such as ``{kind: mlp, dataset: wine, n: null, features: null,
    hidden: 16, loss: squared, l2: 0.0, bias: true, seed: 0}`` (``seed`` draws the rows; ``path``,
    ``noise``, ``positive_class``, ``task`` go to :func:`~sgdsweep.models.datasets.load_data`).
    Errors name the field as ``prefix.key``."""
    if not isinstance(section, Mapping):
        raise ConfigError(f"{prefix}: expected a mapping, got {type(section).__name__}")
    unknown = sorted(set(section) - set(_SECTION_KEYS))
    if unknown:
        raise ConfigError(f"{prefix}: unknown keys {unknown} (known: {', '.join(_SECTION_KEYS)})")
    kind = section.get("kind")
    if kind not in KINDS:
        raise ConfigError(f"{prefix}.kind: unknown {kind!r} (known: {', '.join(KINDS)})")
    if "dataset" not in section:
        raise ConfigError(f"{prefix}.dataset: missing")

    def opt_int(key: str, minimum: int):
        v = section.get(key)
        return None if v is None else integer(v, f"{prefix}.{key}", minimum)

    hidden = opt_int("hidden", 1) if kind == "mlp" else 0
    if kind == "mlp" and hidden is None:
        raise ConfigError(f"{prefix}.hidden: the mlp needs a width, got None")
    default_loss = "cross_entropy" if kind == "logistic_regression" else "squared"
    loss = section.get("loss") or default_loss
    l2 = real(section.get("l2", 0.0), f"{prefix}.l2")
    if l2 < 0:
        raise ConfigError(f"{prefix}.l2: must be >= 0, got {l2!r}")
    bias = section.get("bias", True)
    if not isinstance(bias, bool):
        raise ConfigError(f"{prefix}.bias: expected true or false, got {bias!r}")
    task = section.get("task") or ("binary" if loss == "cross_entropy" else None)
    try:
        data = load_data(section["dataset"], n=opt_int("n", 2), features=opt_int("features", 1),
                         seed=section.get("seed", 0), path=section.get("path"),
                         noise=section.get("noise", 0.1), positive_class=section.get("positive_class", 0),
                         task=task)
    except ConfigError as exc:
        msg = str(exc)
        raise ConfigError(msg if msg.startswith(prefix) else f"{prefix}.{msg}") from None
    try:
        return Model(data, kind, hidden=hidden, loss=loss, l2=l2, bias=bias)
    except ConfigError as exc:
        raise ConfigError(str(exc).replace("landscape.", f"{prefix}.", 1)) from None
