"""Datasets for the model landscapes: scikit-learn's bundled sets (no download), a seeded
teacher–student set, or a user file; subsampled, standardised, and fingerprinted.

Conventions (every loader):

* rows: all of them in the source order, or — with ``n`` — the first ``n`` rows of a
  permutation seeded by ``seed``;
* columns: all features, or the first ``features`` of them;
* features standardised over the rows used (mean 0, population std 1);
* regression targets standardised the same way, so squared losses are in units of Var(y)
  (the loss of the constant predictor 0 is ½); binary targets are 0/1.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sgdsweep.errors import ConfigError
from sgdsweep.validate import integer, real

TASKS = ("regression", "binary")
SKLEARN_SETS = ("diabetes", "breast_cancer", "wine", "iris", "digits")
DATASETS = (*SKLEARN_SETS, "teacher_student", "file")


@dataclass(frozen=True)
class Data:
    """One dataset as the models see it: ``X`` (n, p) float64 C-contiguous, ``y`` (n,) float64,
    ``task`` "regression" | "binary", ``digest`` the first 16 hex digits of sha256(X bytes, y bytes)."""

    name: str
    X: np.ndarray
    y: np.ndarray
    task: str
    digest: str
    source: str

    @property
    def n(self) -> int:
        return self.X.shape[0]

    @property
    def p(self) -> int:
        return self.X.shape[1]

    @classmethod
    def from_arrays(cls, name: str, X, y, task: str, source: str = "arrays") -> Data:
        """Data from arrays as given (no subsampling, no standardisation), digest computed."""
        X = np.ascontiguousarray(X, dtype=np.float64)
        y = np.ascontiguousarray(y, dtype=np.float64)
        if X.ndim != 2 or y.shape != (X.shape[0],):
            raise ConfigError(f"dataset: expected X (n, p) and y (n,), got {X.shape} and {y.shape}")
        if task not in TASKS:
            raise ConfigError(f"task: unknown {task!r} (known: {', '.join(TASKS)})")
        return cls(name, X, y, task, digest(X, y), source)


def digest(X: np.ndarray, y: np.ndarray) -> str:
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(X, dtype=np.float64).tobytes())
    h.update(np.ascontiguousarray(y, dtype=np.float64).tobytes())
    return h.hexdigest()[:16]


def _sklearn(name: str) -> tuple[np.ndarray, np.ndarray, list[str], str]:
    from sklearn import datasets as skd

    bunch = getattr(skd, f"load_{name}")()
    X, y = np.asarray(bunch.data, dtype=np.float64), np.asarray(bunch.target, dtype=np.float64)
    names = [str(s) for s in bunch.feature_names]
    note = f"scikit-learn load_{name}"
    if name == "digits":
        # 3 of the 64 pixels are blank in every image: the set is the 61 pixels that vary
        keep = np.flatnonzero(X.std(axis=0) > 0)
        X, names = X[:, keep], [names[k] for k in keep]
        note += f" ({keep.size} of 64 pixels that vary over the set)"
    return X, y, names, note


def _file(path) -> tuple[np.ndarray, np.ndarray, list[str], str]:
    if path is None:
        raise ConfigError("path: the 'file' dataset needs a path to a .npz or .csv file")
    f = Path(path)
    if not f.is_file():
        raise ConfigError(f"path: no such file {str(f)!r}")
    if f.suffix == ".npz":
        with np.load(f) as z:
            if "X" not in z or "y" not in z:
                raise ConfigError(f"path: {f.name} must hold arrays 'X' and 'y', has {sorted(z.files)}")
            X, y = np.asarray(z["X"], dtype=np.float64), np.asarray(z["y"], dtype=np.float64)
        names = [f"x{k}" for k in range(X.shape[1] if X.ndim == 2 else 0)]
    elif f.suffix == ".csv":
        with f.open() as fh:
            header = fh.readline().strip().split(",")
        try:
            table = np.loadtxt(f, delimiter=",", skiprows=1, ndmin=2, dtype=np.float64)
        except ValueError as exc:
            raise ConfigError(f"path: {f.name} is not a numeric csv with one header line ({exc})") from None
        if table.shape[1] < 2 or len(header) != table.shape[1]:
            raise ConfigError(f"path: {f.name} needs a header and >= 2 columns (target last), "
                              f"got {len(header)} names for {table.shape[1]} columns")
        X, y, names = table[:, :-1], table[:, -1], header[:-1]
    else:
        raise ConfigError(f"path: expected a .npz or .csv file, got {f.name!r}")
    if X.ndim != 2 or y.shape != (X.shape[0],):
        raise ConfigError(f"path: expected X (n, p) and y (n,), got {X.shape} and {y.shape}")
    return X, y, names, f"file {f.name}"


def _teacher_student(n, features, seed: int, noise: float, task: str) -> tuple[np.ndarray, np.ndarray, str]:
    if n is None or features is None:
        raise ConfigError("n: the teacher_student dataset needs both n and features")
    rng = np.random.default_rng([seed, 0x7EAC4E5])
    X = rng.standard_normal((n, features))
    theta = rng.standard_normal(features) / math.sqrt(features)
    z = X @ theta + noise * rng.standard_normal(n)
    y = z if task == "regression" else (z > 0).astype(np.float64)
    note = (f"teacher_student: x ~ N(0, I_{features}), planted θ* ~ N(0, I/{features}), "
            f"noise {noise:g}, seed {seed}")
    return X, y, note


def _binary(y: np.ndarray, name: str, positive_class: int) -> tuple[np.ndarray, str]:
    classes = np.unique(y)
    if np.all((classes == 0.0) | (classes == 1.0)):
        return y, ""
    if positive_class not in classes:
        raise ConfigError(f"positive_class: {positive_class} is not a class of {name} "
                          f"(classes: {[int(c) if c == int(c) else c for c in classes]})")
    return (y == positive_class).astype(np.float64), f"; class {positive_class} vs rest"


def _standardise(X: np.ndarray, names: list[str]) -> np.ndarray:
    mean, std = X.mean(axis=0), X.std(axis=0)
    flat = np.flatnonzero(std <= 1e-12 * np.maximum(1.0, np.abs(mean)))
    if flat.size:
        j = int(flat[0])
        raise ConfigError(f"features: column {j} ({names[j]!r}) is constant over the {X.shape[0]} rows used")
    return (X - mean) / std


def load_data(name: str, *, n: int | None = None, features: int | None = None, seed: int = 0,
              path=None, noise: float = 0.1, positive_class: int = 0, task: str | None = None) -> Data:
    """Load, subsample (``n`` rows of a permutation seeded by ``seed``), cut to the first ``features``
    columns and standardise one dataset (module docstring).

    ``task`` defaults to "regression" for diabetes and teacher_student, to "binary" for the
    classification sets (multi-class: class ``positive_class`` vs the rest) and, for a file, to
    "binary" when every target is 0 or 1. Standardised regression targets: losses in units of Var(y).
    """
    if name not in DATASETS:
        raise ConfigError(f"dataset: unknown {name!r} (known: {', '.join(DATASETS)})")
    if task is not None and task not in TASKS:
        raise ConfigError(f"task: unknown {task!r} (known: {', '.join(TASKS)})")
    seed = integer(seed, "seed", 0)
    if n is not None:
        n = integer(n, "n", 2)
    if features is not None:
        features = integer(features, "features", 1)

    if name == "teacher_student":
        noise = real(noise, "noise")
        if noise < 0:
            raise ConfigError(f"noise: must be >= 0, got {noise!r}")
        task = task or "regression"
        X, y, note = _teacher_student(n, features, seed, noise, task)
        names = [f"x{k}" for k in range(X.shape[1])]
        rows_note = ""
    else:
        if name == "file":
            X, y, names, note = _file(path)
            field = "path"
        else:
            X, y, names, note = _sklearn(name)
            field = "dataset"
        bad = int(np.count_nonzero(~np.isfinite(X)) + np.count_nonzero(~np.isfinite(y)))
        if bad:
            raise ConfigError(f"{field}: {name} holds {bad} NaN/inf values")
        if task is None:
            default_reg = name == "diabetes" or (name == "file" and not np.all((y == 0) | (y == 1)))
            task = "regression" if default_reg else "binary"
        if task == "binary":
            if name == "diabetes":
                raise ConfigError("task: diabetes has a continuous target; it is a regression set")
            y, cls_note = _binary(y, name, integer(positive_class, "positive_class", 0))
            note += cls_note
        available = X.shape[0]
        if n is not None:
            if n > available:
                raise ConfigError(f"n: {n} rows asked, {name} has {available}")
            rows = np.random.default_rng([seed, 0x5AB5E7]).permutation(available)[:n]
            X, y = X[rows], y[rows]
            rows_note = f"; rows: first {n} of a permutation of {available} (seed {seed})"
        else:
            rows_note = f"; rows: all {available}"
        if features is not None:
            if features > X.shape[1]:
                raise ConfigError(f"features: {features} asked, {name} has {X.shape[1]}")
            X, names = X[:, :features], names[:features]

    if X.shape[0] < 2:
        raise ConfigError(f"n: must be >= 2 rows, {name} has {X.shape[0]}")
    if X.shape[1] < 1:
        raise ConfigError(f"features: must be >= 1, {name} has none")
    if task == "binary" and np.unique(y).size < 2:
        raise ConfigError(f"task: the binary target of {name} has one class only over the {y.size} rows used")
    X = _standardise(X, names)
    if task == "regression":
        sd = y.std()
        if sd <= 1e-12 * max(1.0, abs(y.mean())):
            raise ConfigError(f"task: the regression target of {name} is constant over the rows used")
        y = (y - y.mean()) / sd
        note += "; y standardised (losses in units of Var(y))"
    note += rows_note + f"; {X.shape[1]} features standardised"
    return Data.from_arrays(name, X, y, task, source=note)
