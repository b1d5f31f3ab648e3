"""Exact SGD moments on least squares against brute-force enumeration, closed forms and each other;
the mean-square edge against the recursion and the spectral radius; Kesten's index at the edge."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from sgdsweep.errors import ConfigError
from sgdsweep.models import moments as mo
from sgdsweep.models.datasets import Data
from sgdsweep.models.model import Model, build_model
from sgdsweep.models.tails import kesten_index


def _tiny(l2: float) -> Model:
    rng = np.random.default_rng(11)
    data = Data.from_arrays("tiny", rng.standard_normal((4, 2)), rng.standard_normal(4), "regression")
    return Model(data, "linear_regression", l2=l2, bias=False)


def _batches(n: int, b: int, sampling: str):
    if sampling == "with_replacement":
        seqs = list(itertools.product(range(n), repeat=b))
    else:
        seqs = list(itertools.combinations(range(n), b))
    return [(list(s), 1.0 / len(seqs)) for s in seqs]


@pytest.mark.parametrize("l2", [0.0, 0.3])
@pytest.mark.parametrize(("b", "sampling"), [(1, "with_replacement"), (2, "with_replacement"),
                                             (1, "without_replacement"), (2, "without_replacement")])
def test_transient_moments_equal_enumeration_of_every_minibatch_sequence(b, sampling, l2):
    m, lr, steps = _tiny(l2), 0.4, 3
    theta_star = np.linalg.solve(m.X.T @ m.X / m.n + l2 * np.eye(2), m.X.T @ m.data.y / m.n)
    # a two-point initial law: E[e0] and E[e0 e0ᵀ] ≠ E[e0]E[e0]ᵀ
    starts = [(theta_star + np.array([1.0, -0.5]), 0.5), (theta_star + np.array([-0.2, 2.0]), 0.5)]
    m0 = sum(w * (t - theta_star) for t, w in starts)
    M0 = sum(w * np.outer(t - theta_star, t - theta_star) for t, w in starts)
    exact = mo.sgd_moments(m, lr, b, sampling, m0, M0, steps)
    law, batches = starts, _batches(m.n, b, sampling)
    for s in range(1, steps + 1):
        law = [(t - lr * m.sample_grads(t)[idx].mean(axis=0), w * wb) for t, w in law for idx, wb in batches]
        mean = sum(w * (t - theta_star) for t, w in law)
        second = sum(w * np.outer(t - theta_star, t - theta_star) for t, w in law)
        np.testing.assert_allclose(exact.mean[s], mean, rtol=0, atol=1e-12)
        np.testing.assert_allclose(exact.second[s], second, rtol=0, atol=1e-12)


def test_recursion_converges_to_the_stationary_solve():
    m = _tiny(0.1)
    M = mo.sgd_stationary_cov(m, 0.3, 1, "with_replacement")
    run = mo.sgd_moments(m, 0.3, 1, "with_replacement", np.array([1.0, 1.0]), np.eye(2), 3000)
    np.testing.assert_allclose(run.second[-1], M, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(run.cov[-1], M, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize(("spec", "b", "sampling"), [
    (dict(dataset="diabetes"), 1, "with_replacement"),
    (dict(dataset="diabetes", l2=0.05), 7, "without_replacement"),
    (dict(dataset="teacher_student", n=400, features=44, l2=0.01), 3, "with_replacement"),
])
def test_stationary_dense_and_krylov_agree(spec, b, sampling):
    m = build_model(dict(kind="linear_regression", **spec))
    lr = 0.6 * mo.ms_edge(m, b, sampling)
    dense = mo.sgd_stationary_cov(m, lr, b, sampling, method="dense")
    krylov = mo.sgd_stationary_cov(m, lr, b, sampling, method="krylov", rtol=1e-13)
    # CG's relative residual 1e-13 times cond(L) (~1e2 here after the eigenbasis preconditioning)
    np.testing.assert_allclose(krylov, dense, rtol=0, atol=1e-9 * np.abs(dense).max())
    sde_d = mo.sde_stationary_cov(m, lr, b, sampling, method="dense")
    sde_k = mo.sde_stationary_cov(m, lr, b, sampling, method="krylov", rtol=1e-13)
    np.testing.assert_allclose(sde_k, sde_d, rtol=0, atol=1e-9 * np.abs(sde_d).max())


def _quadratic(h: float, c: np.ndarray) -> Model:
    # l_i = ½(√h θ − √h c_i)² = (h/2)(θ − c_i)²
    data = Data.from_arrays("quadratic", np.full((c.size, 1), math.sqrt(h)), math.sqrt(h) * c, "regression")
    return Model(data, "linear_regression", bias=False)


@pytest.mark.parametrize(("b", "sampling"), [(1, "with_replacement"), (3, "with_replacement"),
                                             (2, "without_replacement"), (4, "without_replacement")])
def test_one_parameter_quadratic_closed_forms(b, sampling):
    h, lr, c = 2.5, 0.3, np.array([0.0, 1.0, 3.0, -1.0, 0.5])
    m, n, var = _quadratic(h, c), c.size, c.var()
    f = 1.0 / b if sampling == "with_replacement" else (n - b) / (b * (n - 1))
    sgd = lr * var * h * f / (2 - lr * h)
    sde = lr * var * h * f / 2
    np.testing.assert_allclose(mo.sgd_stationary_cov(m, lr, b, sampling)[0, 0], sgd, rtol=1e-12)
    np.testing.assert_allclose(mo.sde_stationary_cov(m, lr, b, sampling)[0, 0], sde, rtol=1e-12)
    np.testing.assert_allclose(mo.gibbs_cov(m, 0.7)[0, 0], 0.7 / h, rtol=1e-14)
    # identical curvatures: the edge is GD's 2/h
    np.testing.assert_allclose(mo.ms_edge(m, b, sampling), 2.0 / h, rtol=1e-12)


def test_ms_edge_on_diabetes():
    m = build_model(dict(kind="linear_regression", dataset="diabetes", bias=False))
    lmax = np.linalg.eigvalsh(m.X.T @ m.X / m.n)[-1]
    edge = mo.ms_edge(m, 1, "with_replacement")
    assert edge < 0.5 * (2 / lmax)  # per-sample curvatures differ a lot
    # the pencil's edge is the root of spectral radius = 1 (bisection on the dense eigenvalues)
    lo, hi = 1e-6, 2 / lmax
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if mo.second_moment_radius(m, mid, 1, "with_replacement") < 1 else (lo, mid)
    np.testing.assert_allclose(edge, 0.5 * (lo + hi), rtol=1e-9)
    # ARPACK on the matrix-free operators agrees with the dense eigensolvers
    np.testing.assert_allclose(mo.ms_edge(m, 1, "with_replacement", dense_max=0), edge, rtol=1e-9)
    for lr in (0.5 * edge, 1.02 * edge):
        np.testing.assert_allclose(mo.second_moment_radius(m, lr, 1, "with_replacement", dense_max=0),
                                   mo.second_moment_radius(m, lr, 1, "with_replacement"), rtol=1e-9)
    # the recursion: bounded and settling slightly below the edge, growing geometrically above it
    M0 = np.eye(m.d)
    below = mo.sgd_moments(m, 0.98 * edge, 1, "with_replacement", np.zeros(m.d), M0, 4000).second
    above = mo.sgd_moments(m, 1.02 * edge, 1, "with_replacement", np.zeros(m.d), M0, 4000).second
    tr_b, tr_a = np.trace(below, axis1=1, axis2=2), np.trace(above, axis1=1, axis2=2)
    stat = np.trace(mo.sgd_stationary_cov(m, 0.98 * edge, 1, "with_replacement"))
    assert abs(tr_b[-1] - stat) < 1e-3 * stat
    assert tr_a[-1] > 1e3 * tr_a[0] and np.all(np.diff(tr_a[-500:]) > 0)
    with pytest.raises(ConfigError, match=r"^lr: .* beyond the SGD mean-square edge"):
        mo.sgd_stationary_cov(m, 1.02 * edge, 1, "with_replacement")
    # larger batches without replacement move the edge up to GD's 2/λ_max, reached at b = n
    edges = [mo.ms_edge(m, b, "without_replacement") for b in (1, 10, 100, 400, m.n)]
    assert np.all(np.diff(edges) > 0)
    np.testing.assert_allclose(edges[-1], 2 / lmax, rtol=1e-12)


def test_kesten_index_is_two_at_the_one_parameter_edge():
    x = np.array([0.3, 1.0, 1.7, 2.2, 0.8])
    data = Data.from_arrays("curvatures", x[:, None], np.zeros(5), "regression")
    m = Model(data, "linear_regression", bias=False)
    edge = mo.ms_edge(m, 1, "with_replacement")
    a = x * x
    assert abs(np.mean((1 - edge * a) ** 2) - 1) < 1e-12
    assert abs(kesten_index(a, edge) - 2.0) < 1e-9


def test_errors():
    m = build_model(dict(kind="linear_regression", dataset="diabetes"))
    with pytest.raises(ConfigError, match=r"^sampling: 'reshuffle' has no exact iid moment recursion"):
        mo.ms_edge(m, 1, "reshuffle")
    with pytest.raises(ConfigError, match=r"^landscape\.kind: exact SGD moments need linear_regression"):
        mo.ms_edge(build_model(dict(kind="logistic_regression", dataset="wine")), 1, "with_replacement")
    singular = build_model(dict(kind="linear_regression", dataset="teacher_student", n=5, features=8))
    with pytest.raises(ConfigError, match=r"^landscape\.l2: Ā is singular"):
        mo.sgd_stationary_cov(singular, 0.01, 1, "with_replacement")
