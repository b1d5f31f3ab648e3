"""SGD's transfer operator: build + stationary solve cost, time to the stationary density
against Monte Carlo SGD at equal accuracy, cost against cells and minibatches, and a
grid-convergence table on the seed model.

Run: ``NUMBA_NUM_THREADS=1 python benchmarks/bench_transfer.py`` (one core; add ``--quick``
for a smoke run). Prints markdown tables; figures are recorded in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import time
import warnings
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numba
import numpy as np
import yaml

from sgdsweep.errors import ConfigError
from sgdsweep.landscapes.basins import escape_threshold, find_basins
from sgdsweep.landscapes.grid import Grid1D
from sgdsweep.landscapes.initial import Initial
from sgdsweep.landscapes.landscape import build_landscape
from sgdsweep.montecarlo import run_ensemble
from sgdsweep.transfer.transfer1d import sgd_transfer

CONF = Path(__file__).resolve().parents[1] / "conf" / "landscape"
TWO_POINT = {"datapoints": [[{"kind": "quadratic", "curvature": 1.0, "centre": -1.0}],
                            [{"kind": "quadratic", "curvature": 1.0, "centre": 1.0}]]}


def two_basin(shift_std: float = 0.1) -> dict:
    return {"reference": [
        {"kind": "gaussian", "amplitude": -1.0, "centre": -1.0, "width": 0.2},
        {"kind": "gaussian", "amplitude": -1.0, "centre": 1.0, "width": 0.6},
        {"kind": "quadratic", "curvature": 0.2, "centre": 0.0}],
        "shifts": {"n": 16, "std": shift_std}}


def best_of(fn, repeat: int):
    best, out = math.inf, None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def tv(p, q) -> float:
    return 0.5 * float(np.abs(np.asarray(p) - np.asarray(q)).sum())


# --------------------------------------------------------------------------- (a)


def bench_build(repeat: int) -> None:
    land = build_landscape(two_basin(0.5))
    grid = Grid1D(-2.5, 2.5, 4000)
    sgd_transfer(land, Grid1D(-2.5, 2.5, 400), 0.02, refine=1).stationary()  # compile / load cache
    t_build, op = best_of(lambda: sgd_transfer(land, grid, 0.02, refine=1), repeat)
    t_stat, _ = best_of(op.stationary, repeat)
    print("\n(a) two_basin with shift std 0.5 (n = 16, b = 1: 16 minibatches), 4,000 cells, lr 0.02, "
          "quadrature 4")
    print("| build | stationary solve (GTH) | total | nnz |")
    print("|---|---|---|---|")
    print(f"| {t_build * 1e3:.0f} ms | {t_stat * 1e3:.0f} ms | {(t_build + t_stat) * 1e3:.0f} ms | "
          f"{op.matrix.nnz:,} |")


# --------------------------------------------------------------------------- (b)


def mc_to_target(land, init, lr, steps, chains, grid, seed=1):
    x0 = init.sample(chains, np.random.default_rng(seed))
    t = time.perf_counter()
    res = run_ensemble(land, "sgd", x0, lr, np.array([steps]), [grid], seed=seed)
    return time.perf_counter() - t, res.counts[0] / chains


def stationary_masses(land, grid, lr, refine):
    """Build + stationary solve, cell masses on the output grid."""
    op = sgd_transfer(land, grid, lr, refine=refine)
    return op.coarsen(op.stationary()) * grid.dx


def bench_time_to_stationary(repeat: int, quick: bool) -> None:
    """Both methods reach TV ≤ 0.01 to the reference stationary law on a 100-cell output grid."""
    target = 0.01
    cases = [
        ("two-point quadratic, η = 0.5 (exact: uniform on [−1, 1])", build_landscape(TWO_POINT),
         Grid1D(-1.5, 1.5, 100), 0.5, {"kind": "normal", "mean": 0.0, "std": 0.3}, "uniform"),
        ("two_basin (shift std 0.5), lr 0.05", build_landscape(two_basin(0.5)),
         Grid1D(-2.5, 2.5, 100), 0.05, {"kind": "normal", "mean": -1.0, "std": 0.2}, "fine"),
        ("two_basin (shift std 0.5), lr 0.01", build_landscape(two_basin(0.5)),
         Grid1D(-2.5, 2.5, 100), 0.01, {"kind": "normal", "mean": -1.0, "std": 0.2}, "fine"),
    ]
    print(f"\n(b) time to SGD's stationary density at TV ≤ {target} (100-cell output grid, one core)")
    print("| case | operator (refine, build + solve) | its TV | MC chains × steps | MC time | MC TV | "
          "ratio |")
    print("|---|---|---|---|---|---|---|")
    for name, land, grid, lr, init_cfg, ref_kind in cases:
        init = Initial.from_dict(init_cfg, 1)
        if ref_kind == "uniform":
            ref = np.clip(np.minimum(grid.edges[1:], 1) - np.maximum(grid.edges[:-1], -1), 0, None) / 2
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ref_op = sgd_transfer(land, grid, lr, refine=128)
            ref = ref_op.coarsen(ref_op.stationary()) * grid.dx
        # Operator: the smallest refine whose stationary law is within half the target.
        for refine in (1, 2, 4, 8, 16, 32, 64):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    t_op, p = best_of(lambda a=(land, grid, lr, refine): stationary_masses(*a), repeat)
                except ConfigError:  # cells wider than the minibatch spread: refine further
                    continue
            if tv(p, ref) <= target / 2:
                break
        tv_op = tv(p, ref)
        # MC: burn-in from the operator's own relaxation (residual ≤ target/10), chains from
        # the expected TV of a multinomial histogram: E TV ≈ ½ Σ sqrt(2 π_j (1 − π_j) / (π N)).
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            op = sgd_transfer(land, grid, lr, refine=refine)
        m0 = op.initial_masses(init)
        steps = 1
        while tv(op.coarsen(op.evolve(m0, [steps])[0]) * grid.dx, p) > target / 10:
            steps *= 2
        lo, hi = steps // 2, steps
        while hi - lo > max(1, hi // 20):
            mid = (lo + hi) // 2
            if tv(op.coarsen(op.evolve(m0, [mid])[0]) * grid.dx, p) > target / 10:
                lo = mid
            else:
                hi = mid
        steps = hi
        s = 0.5 * np.sqrt(2 * ref * (1 - ref) / math.pi).sum()
        chains = math.ceil((s / (0.9 * target)) ** 2)
        if quick:
            chains = min(chains, 20_000)
        mc_to_target(land, init, lr, 2, 100, grid)  # compile / load cache
        t_mc, h = mc_to_target(land, init, lr, steps, chains, grid)
        print(f"| {name} | {t_op * 1e3:.1f} ms (refine {refine}) | {tv_op:.4f} | {chains:,} × {steps:,} | "
              f"{t_mc:.2f} s | {tv(h, ref):.4f} | **{t_mc / t_op:,.0f}×** |")


# --------------------------------------------------------------------------- (c)


def bench_scaling(repeat: int) -> None:
    land = build_landscape(two_basin(0.5))
    print("\n(c1) cost against cells (two_basin shift std 0.5, 16 minibatches, lr 0.02, refine 1)")
    print("| cells | build | stationary | build ns / (cell · minibatch) | nnz |")
    print("|---|---|---|---|---|")
    for cells in (1000, 2000, 4000, 8000, 16000, 32000):
        grid = Grid1D(-2.5, 2.5, cells)
        t_b, op = best_of(lambda g=grid: sgd_transfer(land, g, 0.02, refine=1), repeat)
        t_s, _ = best_of(op.stationary, repeat)
        print(f"| {cells:,} | {t_b * 1e3:.1f} ms | {t_s * 1e3:.1f} ms | {t_b / (cells * 16) * 1e9:.0f} | "
              f"{op.matrix.nnz:,} |")
    print("\n(c2) cost against minibatches (two_basin shift std 0.5, n = 16, 4,000 cells, lr 0.02, refine 1)")
    print("| b | sampling | minibatches | method | build | stationary | nnz |")
    print("|---|---|---|---|---|---|---|")
    grid = Grid1D(-2.5, 2.5, 4000)
    rows = [(1, "with_replacement", 4096), (2, "with_replacement", 4096), (3, "with_replacement", 4096),
            (4, "with_replacement", 4096), (4, "with_replacement", 100), (8, "with_replacement", 100),
            (4, "without_replacement", 4096), (8, "without_replacement", 100)]
    for b, sampling, limit in rows:
        t_b, op = best_of(lambda b=b, s=sampling, m=limit: sgd_transfer(land, grid, 0.02, b, s, refine=1,
                                                                         max_minibatches=m), repeat)
        t_s, _ = best_of(op.stationary, repeat)
        print(f"| {b} | {sampling} | {op.minibatches:,} | {op.approximation} | {t_b * 1e3:.0f} ms | "
              f"{t_s * 1e3:.0f} ms | {op.matrix.nnz:,} |")


# --------------------------------------------------------------------------- convergence


def _convergence_rows(land, base, init, lrs, refines, relax: bool) -> None:
    basins = find_basins(base.centres, land.evaluate(base.centres)["loss"])
    thr, direction = escape_threshold(basins, init.mean[0])
    print(f"escape over θ = {thr:.4g} ({'up' if direction > 0 else 'down'}); basins split at "
          f"{basins.edges.round(4).tolist()}")
    print("| lr | refine | cells | dx | stationary mass " + " / ".join(basins.names) +
          " | escape (steps) | escape (t) |" + (" relaxation τ (t) | λ₂ |" if relax else ""))
    print("|---|---|---|---|---|---|---|" + ("---|---|" if relax else ""))
    for lr in lrs:
        for r in refines:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    op = sgd_transfer(land, base, lr, refine=r)
                except ConfigError as e:
                    print(f"| {lr} | {r} | {base.cells * r:,} | — | {e} | | |" + (" | |" if relax else ""))
                    continue
            m0 = op.initial_masses(init)
            p = op.stationary(m0) * op.grid.dx
            k = np.searchsorted(basins.edges, op.grid.centres, side="right")
            masses = " / ".join(f"{p[k == b].sum():.4g}" for b in range(len(basins.names)))
            esc = op.escape(m0, thr, direction)
            row = (f"| {lr} | {r} | {op.grid.cells:,} | {op.grid.dx:.2e} | {masses} | {esc.steps:.2f} | "
                   f"{esc.time:.4f} |")
            if relax:
                rel = op.relaxation()
                row += f" {rel.time:.5g} | {rel.eigenvalue.real:.8f} |"
            print(row, flush=True)


def bench_convergence(refines) -> None:
    seed = build_landscape(yaml.safe_load((CONF / "seed_two_point.yaml").read_text()))
    print("\nGrid convergence, seed model, default grid [-1, 4] × 250·refine, init N(0.5, 0.175²)")
    _convergence_rows(seed, Grid1D(-1.0, 4.0, 250),
                      Initial.from_dict({"kind": "normal", "mean": 0.5, "std": 0.175}, 1),
                      (0.02, 0.05), refines, relax=False)
    print("\nGrid convergence, two_basin (shift std 0.5), grid [-2.5, 2.5] × 250·refine, init N(-1, 0.2²)")
    _convergence_rows(build_landscape(two_basin(0.5)), Grid1D(-2.5, 2.5, 250),
                      Initial.from_dict({"kind": "normal", "mean": -1.0, "std": 0.2}, 1),
                      (0.02,), refines[:-1], relax=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--only", choices=["build", "stationary", "scaling", "convergence"])
    args = ap.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, nproc={os.cpu_count()}, "
          f"numba threads={numba.config.NUMBA_NUM_THREADS}, Python {platform.python_version()}, "
          f"numba {numba.__version__}")

    def run(part: str) -> bool:
        return args.only in (None, part)

    if run("build"):
        bench_build(args.repeat)
    if run("stationary"):
        bench_time_to_stationary(1 if args.quick else args.repeat, args.quick)
    if run("scaling"):
        bench_scaling(1 if args.quick else args.repeat)
    if run("convergence"):
        bench_convergence((1, 2, 4) if args.quick else (1, 2, 4, 8, 16, 32, 64))


if __name__ == "__main__":
    main()
