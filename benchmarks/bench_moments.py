"""Exact SGD moments on least squares: the stationary second-moment solve, dense (Cholesky of the
d²×d² operator) against matrix-free (eigenbasis-preconditioned CG, O(n d²) per matvec), and the
mean-square edge (one pencil eigenvalue), against d.

Run: ``python benchmarks/bench_moments.py`` (one BLAS thread; about a minute). Prints a markdown
table; figures are recorded in benchmarks/README.md. η = half the mean-square edge, b = 1 with
replacement, l2 = 0; the dense solve is run up to d = 60 (at d = 100 its matrix alone is 800 MB).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import time

import numpy as np

from sgdsweep.models import moments as mo
from sgdsweep.models.model import build_model

SAMPLING = "with_replacement"
CASES = [("diabetes", dict(dataset="diabetes", bias=False)),
         ("breast_cancer (y 0/1 as regression)", dict(dataset="breast_cancer", task="regression")),
         ("teacher_student p=60", dict(dataset="teacher_student", n=2000, features=60, bias=False)),
         ("teacher_student p=100", dict(dataset="teacher_student", n=2000, features=100, bias=False)),
         ("teacher_student p=300", dict(dataset="teacher_student", n=2000, features=300, bias=False))]


def _timed(f):
    t = time.perf_counter()
    out = f()
    return out, time.perf_counter() - t


def main() -> None:
    print("| data | n | d | cond Ā | edge η* | 2/λ_max | edge time | CG solve | dense solve | max|Δ|/max|M| "
          "| tr M_SGD / tr M_SDE |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, spec in CASES:
        m = build_model(dict(kind="linear_regression", **spec))
        lam = mo.least_squares(m).lam
        edge, te = _timed(lambda m=m: mo.ms_edge(m, 1, "with_replacement"))
        lr = 0.5 * edge
        Mk, tk = _timed(lambda m=m, lr=lr: mo.sgd_stationary_cov(m, lr, 1, SAMPLING, method="krylov"))
        dense, diff = "—", "—"
        if m.d <= 60:
            Md, td = _timed(lambda m=m, lr=lr: mo.sgd_stationary_cov(m, lr, 1, SAMPLING, method="dense"))
            dense, diff = f"{td:.3f} s", f"{np.abs(Md - Mk).max() / np.abs(Md).max():.1e}"
        Ms = mo.sde_stationary_cov(m, lr, 1, "with_replacement", method="krylov")
        print(f"| {name} | {m.n} | {m.d} | {lam[-1] / lam[0]:.3g} | {edge:.4g} | {2 / lam[-1]:.4g} "
              f"| {te:.2f} s | {tk:.3f} s | {dense} | {diff} | {np.trace(Mk) / np.trace(Ms):.4f} |",
              flush=True)


if __name__ == "__main__":
    main()
