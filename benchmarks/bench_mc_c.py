"""SGD, SVAG and SDE Monte Carlo against hand-written C loops and NumPy, measured in one run.

Problems: 1-D minibatch SGD, b = 1 (with replacement), 10⁵ chains, on
``four_gaussians`` (issue 11's reference: 4 datapoints l_i(θ) = −exp(−(θ − s_i)²), offsets
s_i evenly spaced with std 0.5) and on ``two_basin`` (n = 16 samples of 2 Gaussian wells
and a quadratic, as in ``bench_mc.py``).

* **C**: a straightforward loop — steps outer, chains inner; per chain one splitmix64
  draw (the same stream as ours: same per-chain states, same increment, same
  multiply-shift index), the gradient with libm ``exp``, the step, the grid-box check
  that freezes a chain and records the step it left (for ``two_basin`` one pass over the
  chains per term slot, so that the chain loop stays vectorisable). Compiled here with
  ``cc -O3 -ffast-math -march=native`` (gcc vectorises the chain loop and calls
  libmvec's SIMD exp) and called through ctypes on the NumPy arrays. Skipped with a
  message when no C compiler is found.
  ``--method svag`` (l = 4) and ``--method sde`` (Euler–Maruyama, 2 substeps per SGD
  step, one Box–Muller pair per SGD step) have C loops written the same way on
  ``four_gaussians``: the same draws, products and sums as ours.
* **ours**: ``sgdsweep.montecarlo.run_ensemble(method=...)`` on 1 numba thread and on 2.
* **NumPy**: the vectorised baseline of ``bench_mc.py`` (SGD only).

Reported: particle-steps per second (best of --repeat; by wall time and by the process's
CPU time, the steadier figure for one thread on a shared machine), ratios to C. The C loop and ours
draw the same minibatch indices, so their final ensembles agree to the rounding of
exp (checked and printed: the largest |Δ mean|, |Δ var|).

    python benchmarks/bench_mc_c.py [--chains 100000] [--steps 1000] [--repeat 5]
                                    [--case four_gaussians] [--method sgd|svag|sde]
"""

from __future__ import annotations

import argparse
import ctypes
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

import numba
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_mc import TWO_BASIN, numpy_sgd

from sgdsweep.landscapes.grid import Grid1D
from sgdsweep.landscapes.landscape import build_landscape
from sgdsweep.methods import get_method
from sgdsweep.montecarlo import run_ensemble
from sgdsweep.montecarlo.kernels import svag_coefficients
from sgdsweep.montecarlo.lanes import _LANES, _padded_terms_1d
from sgdsweep.montecarlo.rng import chain_states, stream_key

FOUR_GAUSSIANS = {"dim": 1, "shifts": {"n": 4, "std": 0.5},
                  "reference": [{"kind": "gaussian", "amplitude": -1.0, "centre": 0.0, "width": 1.0}]}
CASES = [  # (name, landscape, lr, grid, std of the N(0, std²) start)
    ("four_gaussians", FOUR_GAUSSIANS, 0.1, Grid1D(-6.0, 6.0, 240), 1.0),
    ("two_basin", TWO_BASIN, 0.05, Grid1D(-3.0, 3.0, 240), 0.5),
]
CFLAGS = ["-O3", "-ffast-math", "-march=native"]
METHODS = ("sgd", "svag", "sde")
SVAG_L = 4  # SVAG's substeps per SGD step in the benchmark
SDE_SUBSTEPS = 2  # Euler–Maruyama steps per SGD step (one normal pair)

C_SOURCE = r"""
#include <stdint.h>
#include <math.h>

static inline uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

/* 1-D SGD, b = 1 with replacement, one Gaussian term per sample:
   l_i = amp_i exp(-a_i (x - c_i)^2), gradient gg_i exp(-a_i r^2) a_i r with gg_i = -2 amp_i. */
void sgd1d(long chains, long s0, long s1, double *restrict x, uint64_t *restrict state,
           long *restrict lost_step, long n, const double *restrict c, const double *restrict a,
           const double *restrict gg, double lr, double lo, double hi) {
    for (long s = s0; s < s1; s++) {
        for (long k = 0; k < chains; k++) {
            uint64_t z = state[k] + 0x9E3779B97F4A7C15ULL;
            state[k] = z;
            long i = (long)(((mix64(z) >> 32) * (uint64_t)n) >> 32);
            double xk = x[k];
            long ls = lost_step[k];
            double r = xk - c[i];
            double ar = a[i] * r;
            double xn = xk - lr * (gg[i] * exp(-ar * r) * ar);
            int live = ls < 0;
            int left = live & !(lo <= xn && xn <= hi);
            x[k] = live ? xn : xk;
            lost_step[k] = left ? s + 1 : ls;
        }
    }
}

/* Any 1-D landscape of Gaussian and quadratic terms, b = 1 with replacement: sample i has T term
   slots i*T .. i*T+T-1 (zero terms pad), gradient sum_t (gg exp(-a r^2) + gq) a r, r = x - c.
   One pass per slot over all chains (so that gcc vectorises the chain loop); idx and g are
   per-chain scratch. The same products and sums, in the same order, as the compiled kernel. */
void sgd1d_terms(long chains, long s0, long s1, double *restrict x, uint64_t *restrict state,
                 long *restrict lost_step, long *restrict idx, double *restrict g, long n, long T,
                 const double *restrict cp, const double *restrict ap, const double *restrict gg,
                 const double *restrict gq, double lr, double lo, double hi) {
    for (long s = s0; s < s1; s++) {
        for (long k = 0; k < chains; k++) {
            uint64_t z = state[k] + 0x9E3779B97F4A7C15ULL;
            state[k] = z;
            idx[k] = (long)(((mix64(z) >> 32) * (uint64_t)n) >> 32) * T;
            g[k] = 0.0;
        }
        for (long t = 0; t < T; t++) {
            for (long k = 0; k < chains; k++) {
                long j = idx[k] + t;
                double r = x[k] - cp[j];
                double ar = ap[j] * r;
                g[k] += (gg[j] * exp(-ar * r) + gq[j]) * ar;
            }
        }
        for (long k = 0; k < chains; k++) {
            double xk = x[k];
            long ls = lost_step[k];
            double xn = xk - lr * g[k];
            int live = ls < 0;
            int left = live & !(lo <= xn && xn <= hi);
            x[k] = live ? xn : xk;
            lost_step[k] = left ? s + 1 : ls;
        }
    }
}

/* SVAG, b = 1 with replacement, one Gaussian term per sample: l substeps of lr/l per SGD step,
   each with two minibatch draws and the gradient a1*g1 + a2*g2. */
void svag1d(long chains, long s0, long s1, double *restrict x, uint64_t *restrict state,
            long *restrict lost_step, long n, const double *restrict c, const double *restrict a,
            const double *restrict gg, double lr, long l, double a1, double a2, double lo, double hi) {
    double scale = lr / (double)l;
    for (long s = s0; s < s1; s++) {
        for (long m = 0; m < l; m++) {
            for (long k = 0; k < chains; k++) {
                uint64_t z1 = state[k] + 0x9E3779B97F4A7C15ULL;
                uint64_t z2 = z1 + 0x9E3779B97F4A7C15ULL;
                state[k] = z2;
                long i1 = (long)(((mix64(z1) >> 32) * (uint64_t)n) >> 32);
                long i2 = (long)(((mix64(z2) >> 32) * (uint64_t)n) >> 32);
                double xk = x[k];
                long ls = lost_step[k];
                double r1 = xk - c[i1], ar1 = a[i1] * r1;
                double r2 = xk - c[i2], ar2 = a[i2] * r2;
                double g1 = gg[i1] * exp(-ar1 * r1) * ar1;
                double g2 = gg[i2] * exp(-ar2 * r2) * ar2;
                double xn = xk - scale * (a1 * g1 + a2 * g2);
                int live = ls < 0;
                int left = live & !(lo <= xn && xn <= hi);
                x[k] = live ? xn : xk;
                lost_step[k] = left ? s + 1 : ls;
            }
        }
    }
}

/* Euler-Maruyama of the Ito SDE dx = -G dt + sqrt(lr f Sigma) dW, one Gaussian term per sample,
   G and Sigma over all n samples, two substeps per SGD step sharing one Box-Muller pair. */
void sde1d(long chains, long s0, long s1, double *restrict x, uint64_t *restrict state,
           long *restrict lost_step, double *restrict z1s, long n, const double *restrict c,
           const double *restrict a, const double *restrict gg, double lr, double f, double lo,
           double hi) {
    const double dt = lr / 2.0, scale = sqrt(lr * f * dt);
    for (long s = s0; s < s1; s++) {
        for (long m = 0; m < 2; m++) {
            for (long k = 0; k < chains; k++) {
                double zk;
                if (m == 0) {
                    uint64_t u1 = state[k] + 0x9E3779B97F4A7C15ULL;
                    uint64_t u2 = u1 + 0x9E3779B97F4A7C15ULL;
                    state[k] = u2;
                    double v1 = (double)(mix64(u1) >> 11) * 0x1.0p-53;
                    double v2 = (double)(mix64(u2) >> 11) * 0x1.0p-53;
                    double rad = sqrt(-2.0 * log(1.0 - v1)), ang = 6.283185307179586 * v2;
                    zk = rad * cos(ang);
                    z1s[k] = rad * sin(ang);
                } else {
                    zk = z1s[k];
                }
                double xk = x[k];
                long ls = lost_step[k];
                double g = 0.0, q2 = 0.0;
                for (long i = 0; i < n; i++) {
                    double r = xk - c[i], ar = a[i] * r;
                    double gi = gg[i] * exp(-ar * r) * ar;
                    g += gi;
                    q2 += gi * gi;
                }
                double G = g / n;
                double var = q2 / n - G * G;
                var = var > 0.0 ? var : 0.0;
                double xn = xk + (-G * dt + scale * sqrt(var) * zk);
                int live = ls < 0;
                int left = live & !(lo <= xn && xn <= hi);
                x[k] = live ? xn : xk;
                lost_step[k] = left ? s + 1 : ls;
            }
        }
    }
}
"""


def build_c(workdir: str) -> ctypes.CDLL | None:
    cc = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        print("C reference skipped: no C compiler found (set CC or install gcc/clang)")
        return None
    src = os.path.join(workdir, "sgd1d.c")
    lib = os.path.join(workdir, "sgd1d.so")
    with open(src, "w") as f:
        f.write(C_SOURCE)
    r = subprocess.run([cc, *CFLAGS, "-shared", "-fPIC", src, "-o", lib, "-lm"],
                       capture_output=True, text=True)
    if r.returncode != 0:
        print(f"C reference skipped: {cc} failed:\n{r.stderr}")
        return None
    version = subprocess.run([cc, "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    print(f"C reference: {version}, {' '.join(CFLAGS)}")
    so = ctypes.CDLL(lib)
    dp = np.ctypeslib.ndpointer(np.float64, flags="C_CONTIGUOUS")
    up = np.ctypeslib.ndpointer(np.uint64, flags="C_CONTIGUOUS")
    lp = np.ctypeslib.ndpointer(np.int64, flags="C_CONTIGUOUS")
    L, D = ctypes.c_long, ctypes.c_double
    so.sgd1d.argtypes = [L, L, L, dp, up, lp, L, dp, dp, dp, D, D, D]
    so.sgd1d.restype = None
    so.sgd1d_terms.argtypes = [L, L, L, dp, up, lp, lp, dp, L, L, dp, dp, dp, dp, D, D, D]
    so.sgd1d_terms.restype = None
    so.svag1d.argtypes = [L, L, L, dp, up, lp, L, dp, dp, dp, D, L, D, D, D, D]
    so.svag1d.restype = None
    so.sde1d.argtypes = [L, L, L, dp, up, lp, dp, L, dp, dp, dp, D, D, D, D]
    so.sde1d.restype = None
    return so


def run_c(so, case, land, x0, steps, method="sgd", seed=1):
    """The C loop on the same chain streams as ``run_ensemble(..., seed=seed)``.

    Returns (x, lost_step, wall seconds, CPU seconds of this process).
    """
    name, _, lr, grid, _ = case
    chains = x0.shape[0]
    padded = -(-chains // _LANES) * _LANES
    state = chain_states(stream_key(seed, get_method(method).stream), padded)[:chains].copy()
    x = x0[:, 0].copy()  # the C loop writes in place
    lost = np.where((x < grid.lower) | (x > grid.upper), 0, -1).astype(np.int64)
    T, cp, ap, gg, gq = _padded_terms_1d(land)
    t, p = time.perf_counter(), time.process_time()
    if method == "svag":
        assert T == 1 and not np.any(gq)
        a1, a2 = svag_coefficients(SVAG_L)
        so.svag1d(chains, 0, steps, x, state, lost, land.n, cp, ap, gg, lr, SVAG_L, a1, a2,
                  grid.lower, grid.upper)
    elif method == "sde":
        assert T == 1 and not np.any(gq)
        so.sde1d(chains, 0, steps, x, state, lost, np.empty(chains), land.n, cp, ap, gg, lr, 1.0,
                 grid.lower, grid.upper)
    elif name == "four_gaussians":  # the reference: one Gaussian term per sample
        assert T == 1 and not np.any(gq)
        so.sgd1d(chains, 0, steps, x, state, lost, land.n, cp, ap, gg, lr, grid.lower, grid.upper)
    else:
        idx, g = np.empty(chains, dtype=np.int64), np.empty(chains)
        so.sgd1d_terms(chains, 0, steps, x, state, lost, idx, g, land.n, T, cp, ap, gg, gq, lr,
                       grid.lower, grid.upper)
    return x, lost, time.perf_counter() - t, time.process_time() - p


def ours(case, land, x0, steps, threads, method="sgd", seed=1):
    _, _, lr, grid, _ = case
    numba.set_num_threads(threads)
    t, p = time.perf_counter(), time.process_time()
    res = run_ensemble(land, method, x0, lr, np.array([0, steps]), (grid,), batch_size=1, seed=seed,
                       params={"l": SVAG_L} if method == "svag" else None, substeps=SDE_SUBSTEPS,
                       noise_factor=1.0)
    return res, time.perf_counter() - t, time.process_time() - p


def bench_case(so, case, chains, steps, repeat, threads, method="sgd") -> None:
    name, cfg, lr, _, x0_std = case
    land = build_landscape(cfg)
    x0 = np.random.default_rng(0).normal(0.0, x0_std, (chains, 1))
    ours(case, land, x0[:64], 2, 1, method)  # compile / load from the on-disk cache outside the timing
    what = {"sgd": "SGD", "svag": f"SVAG l = {SVAG_L} (rates per SGD step)",
            "sde": f"SDE, {SDE_SUBSTEPS} EM substeps (rates per SGD step)"}[method]
    print(f"\n{name}: 1-D {what}, n = {land.n}, b = 1, lr = {lr}, {chains} chains, {steps} steps")
    # Best of ``repeat``, by wall time and by CPU time of the process. On a shared machine the
    # CPU time of a one-thread run is the steadier figure (it does not count time spent
    # waiting for a core); with 2 threads only wall time measures the speed-up.
    wall: dict[str, float] = {}
    cpu: dict[str, float] = {}

    def keep(key, dt, dp):
        wall[key] = min(wall.get(key, np.inf), dt)
        cpu[key] = min(cpu.get(key, np.inf), dp)

    res_c = None
    np_steps = max(steps // 10, 1)
    for _ in range(repeat):
        if so is not None:
            x, lost, dt, dp = run_c(so, case, land, x0, steps, method)
            keep("C", dt, dp)
            res_c = (x, lost)
        res1, dt, dp = ours(case, land, x0, steps, 1, method)
        keep("ours, 1 thread", dt, dp)
        res2, dt, dp = ours(case, land, x0, steps, threads, method)
        keep(f"ours, {threads} threads", dt, dp)
        if method == "sgd":
            t, p = time.perf_counter(), time.process_time()
            numpy_sgd(land, x0, lr, np_steps, 1, np.random.default_rng(1))
            per = steps / np_steps  # NumPy runs a tenth of the steps; rates are per step
            keep("NumPy", (time.perf_counter() - t) * per, (time.process_time() - p) * per)
    numba.set_num_threads(threads)

    assert np.array_equal(res1.counts, res2.counts), "thread count changed the result"
    has_c = "C" in wall
    print(f"{'':18s} {'wall: M steps/s':>16s} {'vs C':>6s} | {'CPU time: M steps/s':>20s} {'vs C':>6s}")
    for key in wall:
        rw, rc = chains * steps / wall[key] / 1e6, chains * steps / cpu[key] / 1e6
        vw = f"{wall['C'] / wall[key]:5.2f}x" if has_c else ""
        vc = f"{cpu['C'] / cpu[key]:5.2f}x" if has_c and "threads" not in key else ""
        print(f"{key:18s} {rw:16.1f} {vw:>6s} | {rc:20.1f} {vc:>6s}")
    scaling = wall["ours, 1 thread"] / wall[f"ours, {threads} threads"]
    print(f"scaling {threads} threads / 1 thread (wall): {scaling:.2f}x")
    if res_c is not None:
        x, lost = res_c
        alive = lost < 0
        print(f"C vs ours: lost {np.count_nonzero(~alive)} vs {res1.lost[-1]}; "
              f"|Δ mean| {abs(x[alive].mean() - res1.mean[-1, 0]):.1e}, "
              f"|Δ var| {abs(x[alive].var() - res1.var[-1, 0]):.1e}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--chains", type=int, default=100_000)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--case", choices=[c[0] for c in CASES], action="append",
                    help="run only this case (repeatable); default all")
    ap.add_argument("--method", choices=METHODS, action="append",
                    help="run only this method (repeatable); default all (svag, sde: four_gaussians)")
    args = ap.parse_args()
    threads = min(2, numba.config.NUMBA_NUM_THREADS)
    print(f"{platform.processor() or platform.machine()}, nproc={os.cpu_count()}, "
          f"python {platform.python_version()}, numba {numba.__version__}, numpy {np.__version__}, "
          f"load average {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as tmp:
        so = build_c(tmp)
        for method in args.method or METHODS:
            for case in CASES:
                if method != "sgd" and case[0] != "four_gaussians":
                    continue  # the C loops of svag and sde take one Gaussian term per sample
                if args.case is None or case[0] in args.case:
                    bench_case(so, case, args.chains, args.steps, args.repeat, threads, method)


if __name__ == "__main__":
    main()
