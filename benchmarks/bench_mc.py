"""SGD Monte Carlo throughput: the compiled ensemble kernel vs a vectorised NumPy baseline.

Both run the same update θ ← θ − η·(1/b) Σ_{i∈B} ∇l_i(θ), minibatch indices drawn
with replacement, on the same landscape (seed_two_point, two_basin with n = 16)
for many chains. The NumPy version is vectorised over chains (and the batch),
draws indices with ``rng.integers`` and evaluates the per-sample gradients from
the same term arrays. Reported: particle-steps per second, the ratio on ONE
thread, and the 2-thread / 1-thread scaling of the compiled kernel (best of --repeat runs). Also the
first-call compile time (empty cache) and the load time from the on-disk cache
in a second process.

    python benchmarks/bench_mc.py [--chains 100000] [--repeat 3] [--quick]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import numba
import numpy as np

from sgdsweep.landscapes.grid import Grid1D
from sgdsweep.landscapes.landscape import GAUSSIAN, build_landscape
from sgdsweep.montecarlo import run_ensemble

SEED_TWO_POINT = {"dim": 1, "datapoints": [
    [{"kind": "gaussian", "amplitude": -1.0, "centre": 2.0, "sharpness": 1.0}],
    [{"kind": "gaussian", "amplitude": -1.0, "centre": 2.0, "sharpness": 1.0},
     {"kind": "gaussian", "amplitude": -1.0, "centre": 1.0, "sharpness": 100.0}],
]}
TWO_BASIN = {"dim": 1, "shifts": {"n": 16, "std": 0.1}, "reference": [
    {"kind": "gaussian", "amplitude": -1.0, "centre": -1.0, "width": 0.2},
    {"kind": "gaussian", "amplitude": -1.0, "centre": 1.0, "width": 0.6},
    {"kind": "quadratic", "curvature": 0.2, "centre": 0.0},
]}
CASES = [  # (name, landscape, lr, x0 mean, x0 std, grid)
    ("seed_two_point", SEED_TWO_POINT, 0.02, 0.5, 0.175, Grid1D(-1.0, 4.0, 250)),
    ("two_basin", TWO_BASIN, 0.05, 0.0, 0.5, Grid1D(-3.0, 3.0, 240)),
]


def numpy_sgd(land, x0, lr, steps, batch, rng):
    """Vectorised NumPy SGD in 1-D, with replacement: one array op per term slot."""
    kind, amp, centre, mat, ptr = land.arrays
    c0, a00 = centre[:, 0], mat[:, 0, 0]
    is_gauss = kind == GAUSSIAN
    counts = np.diff(ptr)
    slots = int(counts.max())
    th = x0[:, 0].copy()
    n = land.n
    for _ in range(steps):
        idx = rng.integers(0, n, size=(th.size, batch))
        g = np.zeros(idx.shape)
        first = ptr[idx]
        t = th[:, None]
        for k in range(slots):
            j = first + k
            valid = k < counts[idx]
            j = np.where(valid, j, 0)
            r = t - c0[j]
            ar = a00[j] * r
            s = np.where(is_gauss[j], -2.0 * amp[j] * np.exp(-ar * r), amp[j])
            g += np.where(valid, s * ar, 0.0)
        th -= lr * g.mean(axis=1)
    return th


def compiled_rate(land, x0, lr, steps, batch, grid, threads, repeat):
    """Best of ``repeat`` runs: on a shared machine the minimum time is the least disturbed."""
    numba.set_num_threads(threads)
    best = np.inf
    for _ in range(repeat):
        t = time.perf_counter()
        res = run_ensemble(land, "sgd", x0, lr, np.array([0, steps]), (grid,), batch_size=batch, seed=1)
        best = min(best, time.perf_counter() - t)
    return x0.shape[0] * steps / best, res


COMPILE_SNIPPET = """
import time
t = time.perf_counter()
import numpy as np
from sgdsweep.landscapes.grid import Grid1D
from sgdsweep.landscapes.landscape import build_landscape
from sgdsweep.montecarlo import run_ensemble
land = build_landscape({"dim": 1, "reference": [{"kind": "quadratic", "curvature": 1.0}],
                        "shifts": {"n": 4, "std": 1.0}})
t1 = time.perf_counter()
run_ensemble(land, "sgd", np.zeros((10, 1)), 0.1, np.array([0, 5]), (Grid1D(-5, 5, 10),))
print(time.perf_counter() - t1)
"""


def compile_times() -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        out = []
        for _ in range(2):
            r = subprocess.run([sys.executable, "-c", COMPILE_SNIPPET], env=env, capture_output=True,
                               text=True, check=True)
            out.append(float(r.stdout.strip().splitlines()[-1]))
    return out[0], out[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--chains", type=int, default=100_000)
    ap.add_argument("--quick", action="store_true", help="fewer steps (smoke run)")
    ap.add_argument("--repeat", type=int, default=3, help="timings are the best of this many runs")
    args = ap.parse_args()
    chains = args.chains
    np_steps, nb_steps = (20, 200) if args.quick else (100, 1000)
    max_threads = min(2, numba.config.NUMBA_NUM_THREADS)
    print(f"nproc={os.cpu_count()} numba threads available={numba.config.NUMBA_NUM_THREADS} "
          f"chains={chains}")

    cold, warm = compile_times()
    print(f"first call in a fresh process: {cold:.1f} s with an empty cache (compile), "
          f"{warm:.2f} s with the on-disk cache")

    for name, cfg, lr, mu, sd, grid in CASES:
        land = build_landscape(cfg)
        x0 = np.random.default_rng(0).normal(mu, sd, (chains, 1))
        for batch in sorted({1, min(4, land.n)}):
            # Warm-up: compile / load from cache outside the timing.
            run_ensemble(land, "sgd", x0[:10], lr, np.array([0, 2]), (grid,), batch_size=batch)
            best = np.inf
            for _ in range(args.repeat):
                t = time.perf_counter()
                th_np = numpy_sgd(land, x0, lr, np_steps, batch, np.random.default_rng(1))
                best = min(best, time.perf_counter() - t)
            np_rate = chains * np_steps / best
            r1, res = compiled_rate(land, x0, lr, nb_steps, batch, grid, 1, args.repeat)
            r2, _ = compiled_rate(land, x0, lr, nb_steps, batch, grid, max_threads, args.repeat)
            numba.set_num_threads(max_threads)
            print(f"{name:15s} n={land.n:2d} b={batch}: numpy {np_rate / 1e6:7.2f} M/s | compiled 1 thread "
                  f"{r1 / 1e6:7.2f} M/s ({r1 / np_rate:5.1f}x numpy) | {max_threads} threads "
                  f"{r2 / 1e6:7.2f} M/s (scaling {r2 / r1:4.2f}x) | lost {res.lost[-1]} "
                  f"| numpy mean {th_np.mean():.3f}")


if __name__ == "__main__":
    main()
