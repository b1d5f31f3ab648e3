"""Model landscapes on real data: gradients, per-sample gradients and exact HVPs against central
differences, dense Hessians, Lanczos sharpness, reference minima and the noise geometry.

Central differences with step h on O(1) standardised data: truncation h²|f'''|/6 ~ 1e-11 and
round-off ε|f|/h ~ 1e-11 at h = 1e-5, so 1e-7 relative to the largest entry leaves a wide margin
while any wrong term (O(1)) fails it.
"""

from __future__ import annotations

import numpy as np
import pytest

from sgdsweep.errors import ConfigError
from sgdsweep.models import kernels as K
from sgdsweep.models.datasets import load_data
from sgdsweep.models.model import Model, build_model
from sgdsweep.models.reference import find_minimum
from sgdsweep.models.sharpness import noise_geometry, top_eigenvalue

H = 1e-5
CASES = {
    "linear_diabetes": dict(kind="linear_regression", dataset="diabetes", l2=0.01),
    "logistic_breast_cancer": dict(kind="logistic_regression", dataset="breast_cancer", l2=0.02),
    "mlp_wine_squared": dict(kind="mlp", dataset="wine", hidden=5, loss="squared", l2=0.01),
    "mlp_breast_cancer_ce": dict(kind="mlp", dataset="breast_cancer", hidden=3, loss="cross_entropy", l2=0.0),
}


def _model_theta(case):
    m = build_model(CASES[case])
    return m, m.init(seed=5, scale=2.0) + 0.1


def _close(a, b, rel=1e-7):
    assert np.abs(a - b).max() <= rel * max(1.0, np.abs(b).max())


@pytest.mark.parametrize("case", CASES)
def test_gradients_and_sample_gradients_against_central_differences(case):
    m, t = _model_theta(case)
    args, work = m.kernel_args(), np.zeros(K.work_size(m.hidden))
    eye = np.eye(m.d)
    fd = np.array([(m.loss_value(t + H * e) - m.loss_value(t - H * e)) / (2 * H) for e in eye])
    _close(m.grad(t), fd)
    G = m.sample_grads(t)
    _close(G.mean(axis=0), m.grad(t), rel=1e-13)
    for i in (0, m.n // 2, m.n - 1):
        fd_i = np.array([(K.sample_loss(*args, t + H * e, i, work) - K.sample_loss(*args, t - H * e, i, work))
                         / (2 * H) for e in eye])
        _close(G[i], fd_i)


@pytest.mark.parametrize("case", CASES)
def test_hvp_against_central_differences_of_the_gradient_and_dense_hessian(case):
    m, t = _model_theta(case)
    v = np.random.default_rng(1).standard_normal(m.d)
    fd = (m.grad(t + H * v) - m.grad(t - H * v)) / (2 * H)
    _close(m.hvp(t, v), fd)
    Hm = m.hessian(t)
    _close(Hm @ v, m.hvp(t, v), rel=1e-12)
    assert np.allclose(Hm, Hm.T, rtol=0, atol=1e-14 * np.abs(Hm).max())


def test_lanczos_top_eigenvalues_against_dense():
    m, t = _model_theta("mlp_wine_squared")
    lam = top_eigenvalue(m, t, k=3)
    exact = np.linalg.eigvalsh(m.hessian(t))[::-1][:3]
    np.testing.assert_allclose(lam, exact, rtol=1e-10)


def test_linear_regression_minimum_is_lstsq():
    m = build_model(dict(kind="linear_regression", dataset="diabetes"))
    mn = find_minimum(m)
    ref = np.linalg.lstsq(m.X, m.data.y, rcond=None)[0]
    np.testing.assert_allclose(mn.theta, ref, rtol=1e-10, atol=1e-12)
    assert mn.grad_norm <= mn.tolerance
    np.testing.assert_allclose(mn.hessian_eigvals, np.linalg.eigvalsh(m.X.T @ m.X / m.n)[::-1], rtol=1e-12)
    np.testing.assert_allclose(mn.noise_cov, m.noise_cov(mn.theta), rtol=1e-14)


def test_logistic_newton_and_lbfgs_reach_the_same_minimum():
    m = build_model(dict(kind="logistic_regression", dataset="breast_cancer", l2=1e-3))
    newton = find_minimum(m)
    assert newton.solver.startswith("newton") and newton.grad_norm <= newton.tolerance
    quasi = find_minimum(m, dense_max=10, k=4)  # d = 31 > 10: L-BFGS, Lanczos spectra
    assert quasi.solver.startswith("l-bfgs") and quasi.grad_norm <= quasi.tolerance
    assert quasi.noise_cov is None
    # l2-strongly convex: one minimum, and |θ − θ*| ≤ |G(θ)| / l2 for each of the two
    assert np.linalg.norm(quasi.theta - newton.theta) <= (quasi.grad_norm + newton.grad_norm) / 1e-3
    np.testing.assert_allclose(quasi.hessian_eigvals, newton.hessian_eigvals[:4], rtol=1e-8)
    np.testing.assert_allclose(quasi.noise_eigvals, newton.noise_eigvals[:4], rtol=1e-8)


def test_mlp_newton_minimum():
    m = build_model(dict(kind="mlp", dataset="wine", hidden=4, l2=1e-3))
    mn = find_minimum(m)
    assert mn.grad_norm <= mn.tolerance and np.all(mn.hessian_eigvals > 0)
    assert np.linalg.norm(m.grad(mn.theta)) == mn.grad_norm


def test_mlp_with_more_parameters_than_samples_needs_l2():
    """d > n without l2: refused before any solve (its minima are a valley of dimension >= d − n);
    with l2 the same network has an isolated minimum; on all 178 samples (d < n) without l2 the
    solve is allowed and reaches its tolerance (there the Hessian's smallest eigenvalues are
    ~1e-11 of its largest: flat, not a valley the solver creeps along)."""
    few = dict(kind="mlp", dataset="wine", n=40, hidden=4, l2=0.0)  # d = 4·(13 + 2) + 1 = 61 > 40
    with pytest.raises(ConfigError, match=r"^landscape\.l2: an MLP with more parameters than samples "
                                          r"\(d = 61, n = 40\)"):
        find_minimum(build_model(few))
    mn = find_minimum(build_model({**few, "l2": 1e-2}))
    assert mn.grad_norm <= mn.tolerance and np.all(mn.hessian_eigvals > 0)
    mn = find_minimum(build_model({**few, "n": None}))
    assert mn.grad_norm <= mn.tolerance


def test_separable_logistic_without_l2_has_no_minimum():
    m = build_model(dict(kind="logistic_regression", dataset="teacher_student", n=20, features=5, noise=0.0))
    with pytest.raises(ConfigError, match=r"^landscape\.l2: without l2 the cross-entropy has no minimum"):
        find_minimum(m)


def test_noise_geometry_closed_cases():
    rng = np.random.default_rng(0)
    Q = np.linalg.qr(rng.standard_normal((5, 5)))[0]
    lam = np.array([5.0, 2.0, 1.0, 0.5, 0.1])
    Hm = (Q * lam) @ Q.T
    # isotropic diffusion D = T·I is exactly Gibbs at T: every direction has temperature T
    g = noise_geometry(Hm, 2 * 0.3 * np.eye(5) / (0.1 * 0.5), lr=0.1, factor=0.5)
    np.testing.assert_allclose(g.temperatures, 0.3, rtol=1e-12)
    assert abs(g.temperature - 0.3) < 1e-12 and abs(g.spread - 1) < 1e-12
    # Σ = H: perfectly aligned, r_k = 1, temperatures ∝ λ_k (spread λ_max/λ_min)
    g = noise_geometry(Hm, Hm)
    assert abs(g.alignment - 1) < 1e-12
    np.testing.assert_allclose(g.ratios, 1.0, rtol=1e-10)
    assert abs(g.spread - 50.0) < 1e-9


def test_build_model_errors():
    def err(**kw):
        with pytest.raises(ConfigError) as e:
            build_model(kw)
        return str(e.value)

    assert err(kind="mlp", dataset="wine", hidden=0).startswith("landscape.hidden: must be >= 1, got 0")
    assert err(kind="cnn", dataset="wine").startswith("landscape.kind: unknown 'cnn'")
    assert err(kind="linear_regression", dataset="wine", l2=-1).startswith("landscape.l2: must be >= 0")
    assert err(kind="linear_regression", dataset="nope").startswith("landscape.dataset: unknown 'nope'")
    assert err(kind="linear_regression", dataset="wine", n=1).startswith("landscape.n: must be >= 2")
    assert err(kind="mlp", dataset="diabetes", hidden=2, loss="cross_entropy").startswith(
        "landscape.task: diabetes has a continuous target")
    with pytest.raises(ConfigError, match=r"^landscape\.loss: cross_entropy needs a binary task"):
        Model(load_data("diabetes"), "mlp", hidden=2, loss="cross_entropy")
    assert err(kind="linear_regression", dataset="wine", lr=1).startswith("landscape: unknown keys ['lr']")
    m = build_model(dict(kind="mlp", dataset="wine", n=None, features=None, hidden=16, loss="squared", l2=0.0,
                         bias=True, seed=0))
    assert m.d == 16 * (13 + 2) + 1 and m.X is m.data.X
    lin = build_model(dict(kind="logistic_regression", dataset="wine"))
    assert lin.d == 14 and np.all(lin.X[:, -1] == 1.0)
