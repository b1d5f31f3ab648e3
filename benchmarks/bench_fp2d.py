"""2-D Fokker–Planck benchmark: time to the stationary density, against py-pde.

Problem: the Itô equation ∂p/∂t = ∇·(G p) + Σ_jk ∂_j∂_k(D_jk p) on [-2.5, 2.5]² with
zero-flux walls and a full, state-dependent diffusion matrix

    D(θ) = [[0.2 + 0.05 y², 0.05 + 0.02 x], [0.05 + 0.02 x, 0.15 + 0.05 x²]],

and the drift G_i = Σ_j D_ij ∂_j V − Σ_j ∂_j D_ij with V = ½ θᵀPθ, P = [[4, 1], [1, 5]].
Then J = −D p ∇(V + log p) vanishes for p ∝ exp(−V): the exact stationary law is
known although D varies and has off-diagonal entries. Start: N((0.5, −0.3), 0.2² I).
"Reached" means L1 = Σ|p − p_exact|·dx·dy below 1e-3.

Parts:
1. ours: operator build, direct stationary solve, one implicit step (after its one-off
   factorisation) at 200 × 200 cells, and the smallest adequate grid for the L1 goal;
2. py-pde (``pip install py-pde``, the ``bench`` extra): the same PDE in conservative
   form, Neumann walls, explicit adaptive solver, on its smallest adequate grid, until
   L1 < 1e-3 (time to the stationary density);
3. cost against cells, 50² … 400².

Timings are best of repeats after a warm-up (compile excluded).
Run: ``python benchmarks/bench_fp2d.py`` (a few minutes, mostly py-pde).
"""

from __future__ import annotations

import os
import platform
import time
import warnings

import numpy as np

from sgdsweep.fokker_planck.fp2d import FokkerPlanck2D
from sgdsweep.landscapes.grid import Grid1D

# Walls far out (V ≥ 12.5 on them, p/p_max ≤ 4e-6) so that py-pde's Neumann walls on p and
# our zero-flux walls pose the same problem.
LO, HI = -2.5, 2.5
P = np.array([[4.0, 1.0], [1.0, 5.0]])
TARGET = 1e-3
STEPS = 20  # implicit steps per timing in the scaling part


def diff(th: np.ndarray) -> np.ndarray:
    x, y = th[:, 0], th[:, 1]
    D = np.empty((len(th), 2, 2))
    D[:, 0, 0] = 0.2 + 0.05 * y**2
    D[:, 1, 1] = 0.15 + 0.05 * x**2
    D[:, 0, 1] = D[:, 1, 0] = 0.05 + 0.02 * x
    return D


def drift(th: np.ndarray) -> np.ndarray:
    g = np.einsum("mij,jk,mk->mi", diff(th), P, th)
    g[:, 1] -= 0.02  # − Σ_j ∂_j D_yj = −∂_x D_yx
    return g


def mesh(g: Grid1D) -> tuple[np.ndarray, np.ndarray]:
    return np.meshgrid(g.centres, g.centres, indexing="ij")


def exact(g: Grid1D) -> np.ndarray:
    X, Y = mesh(g)
    p = np.exp(-0.5 * (P[0, 0] * X**2 + 2 * P[0, 1] * X * Y + P[1, 1] * Y**2))
    return p / (p.sum() * g.dx**2)


def initial(g: Grid1D) -> np.ndarray:
    X, Y = mesh(g)
    p = np.exp(-((X - 0.5) ** 2 + (Y + 0.3) ** 2) / (2 * 0.04))
    return p / (p.sum() * g.dx**2)


def l1(p: np.ndarray, q: np.ndarray, dx: float) -> float:
    return float(np.abs(p - q).sum() * dx * dx)


def best_of(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def operator(n: int) -> FokkerPlanck2D:
    g = Grid1D(LO, HI, n)
    return FokkerPlanck2D.from_functions(g, g, drift, diff)


def machine() -> str:
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{model}, nproc={os.cpu_count()}, Python {platform.python_version()}"


def part_ours() -> dict:
    operator(10).stationary()  # warm-up (Numba SG kernel)
    res = {"errors": []}
    for n in (40, 80, 160, 320):
        fp = operator(n)
        err = l1(fp.stationary().density, exact(fp.gx), fp.gx.dx)
        res["errors"].append((n, err, fp.monotonicity))
    n_ok = next(n for n, err, _ in res["errors"] if err < 0.5 * TARGET)
    res["n"] = n_ok
    res["t_build"] = best_of(lambda: operator(n_ok))
    fp = operator(n_ok)
    res["t_stationary"] = best_of(lambda: fp.stationary())
    return res


def part_pypde() -> dict | None:
    try:
        import pde
    except ImportError:
        return None
    warnings.filterwarnings("ignore")

    def setup(n):
        grid = pde.CartesianGrid([[LO, HI], [LO, HI]], [n, n])
        g = Grid1D(LO, HI, n)
        dxx, dyy, dxy = "(0.2 + 0.05*y**2)", "(0.15 + 0.05*x**2)", "(0.05 + 0.02*x)"
        gx = f"({dxx}*(4*x + y) + {dxy}*(x + 5*y))"
        gy = f"({dxy}*(4*x + y) + {dyy}*(x + 5*y) - 0.02)"
        # Expanded second-order form (central differences). The nested conservative form
        # d_dx(G p + d_dx(D p) + d_dy(D p)) + d_dy(...) was unstable on this problem
        # (L1 grew from 8e-2 at t = 6 to 16 at t = 20 on 32²).
        rhs = (f"d_dx({gx}*p) + d_dy({gy}*p) + d2_dx2({dxx}*p) + d2_dy2({dyy}*p)"
               f" + 2*d_dx(d_dy({dxy}*p))")
        return pde.PDE({"p": rhs}, bc={"derivative": 0}), pde.ScalarField(grid, initial(g)), g

    for n in (32, 64):
        eq, field, g = setup(n)
        t0 = time.perf_counter()
        eq.solve(field, t_range=1e-3, solver="explicit", tracker=None)  # expression compile
        t_compile = time.perf_counter() - t0
        storage = pde.MemoryStorage()
        t0 = time.perf_counter()
        eq.solve(field, t_range=20.0, solver="explicit", adaptive=True, tracker=storage.tracker(0.5))
        t_total = time.perf_counter() - t0
        p_ex = exact(g)
        errs = np.array([l1(f.data, p_ex, g.dx) for f in storage])
        if np.any(errs < TARGET):
            k = int(np.argmax(errs < TARGET))
            t_reach = float(storage.times[k])
            break
        print(f"    py-pde N={n}²: best L1 {errs.min():.2e} by t=20 (compile {t_compile:.0f} s, "
              f"run {t_total:.1f} s)")
    else:
        return {"failed": True, "n": n, "best": float(errs.min()), "version": pde.__version__,
                "t_total": t_total}
    t_solve = best_of(lambda: eq.solve(field, t_range=t_reach, solver="explicit", adaptive=True,
                                       tracker=None), 2)
    r = eq.solve(field, t_range=t_reach, solver="explicit", adaptive=True, tracker=None)
    return {"n": n, "err": l1(r.data, p_ex, g.dx), "t_reach": t_reach, "t_solve": t_solve,
            "version": pde.__version__, "failed": False}


def part_scaling() -> list[tuple]:
    rows = []
    for n in (50, 100, 200, 400):
        t_build = best_of(lambda n=n: operator(n), 2)
        fp = operator(n)
        t_stat = best_of(lambda fp=fp: fp.stationary(), 2)
        p0 = initial(fp.gx)
        t_fact = best_of(lambda fp=fp: (fp._lu.clear(), fp._factor(0.01)), 2)
        fp._factor(0.01)
        t_step = best_of(lambda fp=fp, p0=p0: fp.step(p0, 0.01, STEPS), 2) / STEPS
        rows.append((n, t_build, t_stat, t_fact, t_step))
    return rows


def main() -> None:
    print(f"machine: {machine()}")
    print("note: shared 2-core machine, timings are noisy (best of repeats); one core used")
    ours = part_ours()
    print("\n[1] ours: stationary L1 error against the exact p ∝ exp(−V)")
    for n, err, mono in ours["errors"]:
        print(f"    N={n:>3}²: L1 {err:.2e}; faces breaking |D_xy| ≤ min(..): {mono.faces_violating}, "
              f"negative off-diagonals {mono.negative_offdiag}")
    print(f"    smallest grid with L1 < {0.5 * TARGET:g}: {ours['n']}²: "
          f"build {ours['t_build'] * 1e3:.1f} ms, stationary solve {ours['t_stationary'] * 1e3:.1f} ms")

    pp = part_pypde()
    if pp is None:
        print("\n[2] py-pde not installed: pip install py-pde (or pip install -e '.[bench]'); skipped")
    elif pp["failed"]:
        total = ours["t_build"] + ours["t_stationary"]
        print(f"\n[2] py-pde {pp['version']}: no grid up to {pp['n']}² reached L1 < {TARGET:g} "
              f"(best {pp['best']:.2e}); its last run to t=20 alone took {pp['t_total']:.1f} s, "
              f"{pp['t_total'] / total:,.0f}x our build + solve (a lower bound on the ratio)")
    else:
        total = ours["t_build"] + ours["t_stationary"]
        print(f"\n[2] py-pde {pp['version']}: grid {pp['n']}², explicit adaptive, reaches L1 "
              f"{pp['err']:.2e} at t={pp['t_reach']}: {pp['t_solve']:.2f} s")
        print(f"    ratio py-pde / ours (build + direct stationary solve): {pp['t_solve'] / total:,.0f}x")

    print("\n[3] cost against cells (ours): build, stationary solve, LU of (I − dt M), one step")
    for n, tb, ts, tf, tstep in part_scaling():
        print(f"    N={n:>3}² = {n * n:>6}: build {tb * 1e3:8.1f} ms, stationary {ts * 1e3:8.1f} ms, "
              f"factorise {tf * 1e3:8.1f} ms, step {tstep * 1e3:7.2f} ms ({tstep / n**2 * 1e9:5.0f} ns/cell)")


if __name__ == "__main__":
    main()
