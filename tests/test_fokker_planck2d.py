"""The 2-D Fokker–Planck solver and the probability current against exact results.

Tolerances are stated at each assertion. The Ornstein–Uhlenbeck tests compare with
N(0, C), HC + CHᵀ = 2D (continuous Lyapunov), and the exact stationary current
J = −(H − D C⁻¹) θ p = −Q ∇p with Q = (CH − HC)/2 antisymmetric, whose stream function
is ψ = −Q₀₁ p: the circulation around the mode is −Q₀₁ / (2π sqrt(det C)).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import scipy.linalg as sl

from sgdsweep import build_landscape
from sgdsweep.errors import ConfigError
from sgdsweep.fokker_planck.current import centre_current, stream_function
from sgdsweep.fokker_planck.fp1d import FokkerPlanck1D
from sgdsweep.fokker_planck.fp2d import FokkerPlanck2D, marginals
from sgdsweep.fokker_planck.nonequilibrium import current_summary, kl_to_gibbs
from sgdsweep.landscapes.grid import Grid1D
from sgdsweep.landscapes.noise import batch_noise_factor
from sgdsweep.montecarlo import run_ensemble

# Hessian and a constant full-rank diffusion that does not commute with it.
H = np.array([[1.0, 0.3], [0.3, 2.0]])
D = np.array([[0.3, -0.12], [-0.12, 0.2]])


def mesh(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    X, Y = np.meshgrid(a, b, indexing="ij")
    return np.stack([X, Y], axis=-1)


def gaussian(th: np.ndarray, C: np.ndarray) -> np.ndarray:
    Ci = np.linalg.inv(C)
    q = np.einsum("...i,ij,...j->...", th, Ci, th)
    return np.exp(-0.5 * q) / (2 * math.pi * math.sqrt(np.linalg.det(C)))


def ou_operator(n: int, half_width: float, diff: np.ndarray = D) -> FokkerPlanck2D:
    g = Grid1D(-half_width, half_width, n)
    return FokkerPlanck2D.from_functions(g, g, lambda x: x @ H.T,
                                         lambda x: np.broadcast_to(diff, (len(x), 2, 2)))


def observed_orders(errors: list[float]) -> list[float]:
    return [math.log2(a / b) for a, b in itertools.pairwise(errors)]


def test_ou_stationary_density_and_current_second_order():
    assert not np.allclose(H @ D, D @ H)
    C = sl.solve_continuous_lyapunov(H, 2 * D)  # H C + C Hᵀ = 2D
    B = H - D @ np.linalg.inv(C)
    q = 0.5 * (C @ H - H @ C)[0, 1]
    psi0 = -q / (2 * math.pi * math.sqrt(np.linalg.det(C)))
    half = 4.5 * math.sqrt(C.diagonal().max())
    dens_err, cur_err, circ_err = [], [], []
    for n in (40, 80, 160):
        fp = ou_operator(n, half)
        st = fp.stationary()
        area = fp.cell_volume
        assert st.density.sum() * area == pytest.approx(1.0, abs=1e-12)
        assert st.residual < 1e-12 and not st.degenerate
        exact = gaussian(mesh(fp.gx.centres, fp.gy.centres), C)
        dens_err.append(np.abs(st.density - exact).sum() * area)
        Jx, Jy = fp.current(st.density)
        tx, ty = mesh(fp.gx.edges, fp.gy.centres), mesh(fp.gx.centres, fp.gy.edges)
        Jx_ex = -(tx @ B.T)[..., 0] * gaussian(tx, C)
        Jy_ex = -(ty @ B.T)[..., 1] * gaussian(ty, C)
        cur_err.append((np.abs(Jx - Jx_ex).sum() + np.abs(Jy - Jy_ex).sum()) * area)
        circ_err.append(abs(current_summary(fp, st.density).circulation - psi0))
    # Error table (n = 40, 80, 160), recorded in benchmarks/README.md:
    # density L1 8.5e-3, 2.1e-3, 5.3e-4; current L1 1.9e-2, 5.0e-3, 1.3e-3.
    for errs in (dens_err, cur_err, circ_err):
        assert min(observed_orders(errs)) > 1.7, errs
    assert dens_err[-1] < 1e-3 and cur_err[-1] < 2e-3
    assert circ_err[-1] < 0.01 * abs(psi0)
    # The current really circulates: ∫|J| matches the exact one (centre averaging of the
    # face currents costs O(dx²): 0.5 % at n = 160).
    fp = ou_operator(160, half)
    p = fp.stationary().density
    s = current_summary(fp, p)
    th = mesh(fp.gx.centres, fp.gy.centres)
    exact_abs = (np.linalg.norm(th @ B.T, axis=-1) * gaussian(th, C)).sum() * fp.cell_volume
    assert s.mean_abs_current == pytest.approx(exact_abs, rel=1e-2)
    assert s.circulation_at == pytest.approx((0.0, 0.0), abs=fp.gx.dx)


def test_discrete_divergence_of_current_is_time_derivative():
    fp = ou_operator(50, 3.0)
    rng = np.random.default_rng(0)
    p = rng.random(fp.shape)
    Jx, Jy = fp.current(p)
    div = (Jx[1:] - Jx[:-1]) / fp.gx.dx + (Jy[:, 1:] - Jy[:, :-1]) / fp.gy.dx
    dpdt = (fp.generator @ p.ravel()).reshape(fp.shape)
    assert np.abs(dpdt + div).max() < 1e-12 * np.abs(dpdt).max()
    # walls carry no flux
    assert not Jx[0].any() and not Jx[-1].any() and not Jy[:, 0].any() and not Jy[:, -1].any()
    Jc = centre_current(Jx, Jy)
    assert Jc.shape == (*fp.shape, 2)
    assert stream_function(Jx, fp.gy.dx).shape == (51, 51)


def test_gradient_case_is_gibbs_without_current():
    # L = ½ θᵀ diag(1, 2) θ + a Gaussian bump (not quadratic), D = T I constant.
    T = 0.25
    c0 = np.array([0.5, -0.3])

    def loss(th):
        r = th - c0
        return 0.5 * (th[..., 0] ** 2 + 2 * th[..., 1] ** 2) + 0.5 * np.exp(-(r**2).sum(-1) / 0.5)

    def grad(th):
        r = th - c0
        bump = 0.5 * np.exp(-(r**2).sum(-1) / 0.5)
        return np.stack([th[:, 0], 2 * th[:, 1]], -1) - bump[:, None] * 2 * r / 0.5

    errs, currents = [], []
    for n in (40, 80, 160):
        g = Grid1D(-2.5, 2.5, n)
        fp = FokkerPlanck2D.from_functions(g, g, grad,
                                           lambda x: np.broadcast_to(T * np.eye(2), (len(x), 2, 2)))
        assert fp.monotonicity.monotone
        p = fp.stationary().density
        L = loss(mesh(g.centres, g.centres))
        gibbs = np.exp(-(L - L.min()) / T)
        gibbs /= gibbs.sum() * fp.cell_volume
        errs.append(np.abs(p - gibbs).sum() * fp.cell_volume)
        currents.append(current_summary(fp, p).mean_abs_current)
        assert kl_to_gibbs(p, L, T, g.dx * g.dx) < 1e-3
    assert min(observed_orders(errs)) > 1.7 and errs[-1] < 1e-3, errs
    # J → 0 with the discretisation error (second order), far below the OU's ~0.1.
    assert min(observed_orders(currents)) > 1.7 and currents[-1] < 1e-4, currents


def test_mass_walls_positivity_and_approach_to_stationary():
    # A weaker cross-diffusion (still not commuting with H) so that the operator is an
    # M-matrix everywhere, including the wall rows where the bound is twice as strict.
    D2 = np.array([[0.3, -0.05], [-0.05, 0.2]])
    assert not np.allclose(H @ D2, D2 @ H)
    C = sl.solve_continuous_lyapunov(H, 2 * D2)
    fp = ou_operator(100, 4.0 * math.sqrt(C.diagonal().max()), D2)
    assert fp.monotonicity.faces_violating == 0 and fp.monotonicity.monotone
    # A point mass in a corner cell next to two walls.
    p0 = np.zeros(fp.shape)
    p0[3, 2] = 1.0 / fp.cell_volume
    out = fp.evolve(p0, np.array([0.5, 5.0, 30.0]), 0.05)  # 600 implicit steps
    mass = out.sum(axis=(1, 2)) * fp.cell_volume
    assert np.abs(mass - 1.0).max() < 1e-10
    assert out.min() >= -1e-14 * out.max()  # M-matrix: no negative density
    st = fp.stationary().density
    l1 = np.abs(out - st).sum(axis=(1, 2)) * fp.cell_volume
    assert l1[0] > l1[1] > l1[2]
    # Slowest decay rate λ₂: after t = 30 the distance is e^(−λ₂ t)-small.
    rate = fp.relaxation().gap
    assert 0.5 < rate < 2.5  # OU: λ₂ = smallest eigenvalue of H (1.0) up to implicit-Euler damping
    assert l1[2] < 1e-6
    # large steps stay stable and land on the stationary density
    far = fp.evolve(p0, np.array([1000.0]), 50.0)[0]  # 20 steps, each damps by 1/(1 + 50 λ₂)
    assert np.abs(far - st).sum() * fp.cell_volume < 1e-8


def test_relaxation_rate_of_ou_is_smallest_hessian_eigenvalue():
    C = sl.solve_continuous_lyapunov(H, 2 * D)
    errs = []
    lam = np.linalg.eigvalsh(H).min()  # OU spectrum: sums of eigenvalues of H
    for n in (40, 80):
        fp = ou_operator(n, 5.0 * math.sqrt(C.diagonal().max()))
        errs.append(abs(fp.relaxation().gap - lam))
    assert errs[1] < 0.3 * errs[0] and errs[1] < 5e-3 * lam, errs


def test_marginals_of_ou_are_exact_gaussians():
    C = sl.solve_continuous_lyapunov(H, 2 * D)
    fp = ou_operator(160, 4.5 * math.sqrt(C.diagonal().max()))
    px, py = marginals(fp.stationary().density, fp.gx.dx, fp.gy.dx)
    for m, g, var in ((px, fp.gx, C[0, 0]), (py, fp.gy, C[1, 1])):
        exact = np.exp(-g.centres**2 / (2 * var)) / math.sqrt(2 * math.pi * var)
        assert np.abs(m - exact).sum() * g.dx < 1e-3
        assert m.sum() * g.dx == pytest.approx(1.0, abs=1e-12)
    a, b = marginals(np.ones((2, 4, 5)), 0.5, 0.25)
    assert a.shape == (2, 4) and b.shape == (2, 5)


def test_face_current_1d_is_the_scheme_flux():
    g = Grid1D(-3.0, 3.0, 200)
    e = g.edges
    dfun = lambda x: 0.1 + 0.05 * x**2  # noqa: E731
    fp = FokkerPlanck1D(g, e, dfun(e), dfun(g.centres))
    p = fp.stationary().density
    J = fp.current(p)
    assert J[0] == 0.0 and J[-1] == 0.0
    assert np.abs(J).max() < 1e-12 * p.max()  # zero-flux stationary state
    rng = np.random.default_rng(1)
    q = rng.random(200)
    lower, diag, upper = fp.tridiagonal()
    dqdt = diag * q
    dqdt[1:] += lower[1:] * q[:-1]
    dqdt[:-1] += upper[:-1] * q[1:]
    Jq = fp.current(q)
    assert np.allclose(dqdt, -(Jq[1:] - Jq[:-1]) / g.dx, rtol=0, atol=1e-12 * np.abs(dqdt).max())
    # exact current of the transient at a face: J = −x p − ∂(D p) for a smooth p
    x = e[1:-1]
    pe = np.exp(-x**2)
    Je = -x * pe - 0.1 * x * pe - dfun(x) * (-2 * x * pe)  # −x p − D′ p − D p′
    Jn = fp.current(np.exp(-g.centres**2))[1:-1]
    assert np.abs(Jn - Je).max() < 1e-3


def quadratic_landscape(shifts) -> object:
    return build_landscape({"dim": 2, "name": "quad2d",
                            "reference": [{"kind": "quadratic", "curvature": H.tolist(),
                                           "centre": [0.0, 0.0]}],
                            "shifts": shifts})


def test_sgd_stationary_covariance_is_discrete_lyapunov():
    shifts = [[1.0, 0.2], [-0.6, 0.8], [-0.4, -1.0], [0.0, 0.0]]
    land = quadratic_landscape(shifts)
    lr, b = 0.3, 1
    s = np.array(shifts)
    cov_c = (s - s.mean(0)).T @ (s - s.mean(0)) / len(s)
    sigma_b = H @ cov_c @ H * batch_noise_factor(len(s), b, "with_replacement")
    ev = land.evaluate(np.array([[0.3, -0.2]]))
    assert np.allclose(ev["cov"][0] * batch_noise_factor(len(s), b, "with_replacement"), sigma_b)
    A = np.eye(2) - lr * H
    C_disc = sl.solve_discrete_lyapunov(A, lr**2 * sigma_b)  # C = A C Aᵀ + η² Σ_b
    C_sde = sl.solve_continuous_lyapunov(H, lr * sigma_b)  # SDE: H C + C H = η Σ_b = 2D
    chains = 40_000
    g = Grid1D(-2.0, 2.0, 200)
    r = run_ensemble(land, "sgd", np.zeros((chains, 2)), lr, np.array([200]), [g, g],
                     batch_size=b, seed=7)
    assert r.lost[-1] == 0
    counts = r.counts[-1] / chains
    th = mesh(g.centres, g.centres)
    mean = np.einsum("ij,ijk->k", counts, th)
    cxy = float(np.einsum("ij,ij->", counts, (th[..., 0] - mean[0]) * (th[..., 1] - mean[1])))
    C_mc = np.array([[r.var[-1, 0], cxy], [cxy, r.var[-1, 1]]])
    # MC standard error of a covariance entry: sqrt((C_aa C_bb + C_ab²) / chains).
    se = np.sqrt((np.outer(C_disc.diagonal(), C_disc.diagonal()) + C_disc**2) / chains)
    assert np.all(np.abs(C_mc - C_disc) < 4 * se), (C_mc, C_disc, se)
    # ... and the SDE's continuous Lyapunov answer is off by many standard errors.
    assert np.max(np.abs(C_mc - C_sde) / se) > 10
    # The 2-D Fokker–Planck operator of the same cell (lr, Σ_b from the landscape) gives the
    # SDE's covariance (second-order discretisation error, 1 % here), not SGD's.
    half = 5.0 * math.sqrt(C_sde.diagonal().max())
    gf = Grid1D(-half, half, 100)
    fp = FokkerPlanck2D.from_landscape(land, gf, gf, lr, batch_noise_factor(len(s), b, "with_replacement"))
    p = fp.stationary().density * fp.cell_volume
    th = mesh(gf.centres, gf.centres)
    C_fp = np.einsum("ij,ijk,ijl->kl", p, th, th)
    assert np.allclose(C_fp, C_sde, rtol=0, atol=0.01 * np.abs(C_sde).max()), (C_fp, C_sde)
    assert np.abs(C_fp - C_disc).max() > 0.1 * np.abs(C_disc).max()


def test_rank_one_noise_is_reported_not_clipped():
    # conf/landscape/anisotropic_2d.yaml written out: Σ ∝ H u uᵀ H, rank one, tilted.
    land = build_landscape({"dim": 2, "name": "anisotropic_2d",
                            "reference": [{"kind": "quadratic", "curvature": [1.0, 4.0],
                                           "centre": [0.0, 0.0]}],
                            "shifts": {"n": 8, "std": 0.5, "direction": [1.0, 1.0]}})
    g = Grid1D(-1.0, 1.0, 80)
    fp = FokkerPlanck2D.from_landscape(land, g, g, lr=0.1, noise_factor=1.0)
    mono = fp.monotonicity
    assert mono.faces_violating > 0.5 * mono.faces and not mono.monotone
    st = fp.stationary()
    p = st.density
    assert np.all(np.isfinite(p)) and p.sum() * fp.cell_volume == pytest.approx(1.0, abs=1e-12)
    assert st.min_density == min(float(p.min()), 0.0)
    assert st.residual < 1e-10
    # Exact: the SDE's stationary law is N(0, C), H C + C H = 2 D (degenerate but
    # hypoelliptic, so C is full rank); the scheme converges to it even without monotonicity.
    D0 = fp.coeffs.diff_c[40, 40]
    C = sl.solve_continuous_lyapunov(np.diag([1.0, 4.0]), 2 * D0)
    th = mesh(g.centres, g.centres)
    cov = np.einsum("ij,ijk,ijl->kl", p * fp.cell_volume, th, th)
    assert np.allclose(cov, C, rtol=0.05, atol=0.02 * C.max()), (cov, C)
    # drift only: every point flows to the minimum; the density collapses and says so
    fpd = FokkerPlanck2D.from_landscape(land, g, g, lr=0.1, noise_factor=1.0, drift_only=True)
    assert fpd.monotonicity.monotone
    sd = fpd.stationary()
    assert sd.degenerate and "collapsed" in sd.message
    assert sd.min_density == 0.0


def test_conventions_shift_the_stationary_density():
    # D(θ) = diag(d(x), 0.2), d = 0.2 + 0.1 x², G = θ: the stationary law is a product with
    # zero current, x-marginal ∝ d^(−α) exp(−∫ x/d) = d^(−α−5) (as in 1-D: the convention
    # matters), y-marginal N(0, 0.2).
    g = Grid1D(-2.0, 2.0, 120)

    def dfun(x):
        out = np.zeros((len(x), 2, 2))
        out[:, 0, 0] = 0.2 + 0.1 * x[:, 0] ** 2
        out[:, 1, 1] = 0.2
        return out

    res = {}
    for alpha in (0.0, 0.5, 1.0):
        fp = FokkerPlanck2D.from_functions(g, g, lambda x: x.copy(), dfun, alpha)
        res[alpha] = marginals(fp.stationary().density, fp.gx.dx, fp.gy.dx)[0]
    x = g.centres
    for alpha, p in res.items():
        exact = (0.2 + 0.1 * x**2) ** (-alpha - 5.0)
        exact /= exact.sum() * g.dx
        assert np.abs(p - exact).sum() * g.dx < 2e-3, alpha


def test_bad_input_is_one_clear_line():
    g = Grid1D(-1.0, 1.0, 20)

    def not_psd(x):
        return np.broadcast_to(np.array([[0.1, 0.3], [0.3, 0.1]]), (len(x), 2, 2))

    with pytest.raises(ConfigError, match=r"^diffusion: not symmetric positive semi-definite at θ"):
        FokkerPlanck2D.from_functions(g, g, lambda x: x, not_psd)
    with pytest.raises(ConfigError, match=r"^diffusion: expected shape"):
        FokkerPlanck2D.from_functions(g, g, lambda x: x, lambda x: np.zeros((len(x), 2)))
    land = build_landscape({"dim": 2, "reference": [{"kind": "gaussian", "amplitude": -1.0,
                                                     "width": 0.05, "centre": [0.0, 0.0]}],
                            "shifts": {"n": 4, "std": 0.1}})
    with pytest.raises(ConfigError, match=r"^grid_x.cells: too coarse for the landscape") as e:
        FokkerPlanck2D.from_landscape(land, g, g, lr=0.1, noise_factor=1.0)
    assert "\n" not in str(e.value)
    land1 = build_landscape({"reference": [{"kind": "quadratic", "curvature": 1.0}],
                             "shifts": {"n": 2, "std": 1.0}})
    with pytest.raises(ConfigError, match=r"^landscape.dim"):
        FokkerPlanck2D.from_landscape(land1, g, g, lr=0.1, noise_factor=1.0)
    with pytest.raises(ConfigError, match=r"^alpha"):
        FokkerPlanck2D.from_functions(g, g, lambda x: x, None, alpha=2.0)
