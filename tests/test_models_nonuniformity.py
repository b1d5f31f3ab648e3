"""Non-uniformity of the per-sample Hessians and the Wu–Ma–E bound, against brute force: per-sample
Hessians written out (linear models) or by central differences of the per-sample gradients (the
MLP), and SGD's second-moment map built as a d²×d² matrix from them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from sgdsweep.cell.model_config import model_from_landscape
from sgdsweep.landscapes.noise import batch_noise_factor
from sgdsweep.models import moments
from sgdsweep.models import nonuniformity as nu
from sgdsweep.models.datasets import Data
from sgdsweep.models.model import Model
from sgdsweep.models.reference import find_minimum, normal_equations
from sgdsweep.montecarlo.models import ModelEnsemble

REPO_CONF = Path(__file__).resolve().parent.parent / "conf" / "landscape"


def _linear(n: int, p: int, l2: float, seed: int) -> Model:
    rng = np.random.default_rng(seed)
    # rows of very different lengths: the per-sample Hessians are far from uniform
    X = rng.standard_normal((n, p)) * rng.uniform(0.2, 2.0, size=(n, 1))
    return Model(Data.from_arrays("hand", X, rng.standard_normal(n), "regression"), "linear_regression",
                 l2=l2, bias=False)


def _per_sample_linear(m: Model) -> np.ndarray:
    return np.einsum("ia,ib->iab", m.X, m.X) + m.l2 * np.eye(m.d)


def _brute_s(Hs: np.ndarray) -> tuple[float, float]:
    """(a, s) from the stacked per-sample Hessians, numpy eigvalsh only."""
    H = Hs.mean(axis=0)
    S = np.einsum("iab,ibc->ac", Hs, Hs) / len(Hs) - H @ H
    return float(np.linalg.eigvalsh(H)[-1]), float(np.sqrt(np.linalg.eigvalsh(0.5 * (S + S.T))[-1]))


def _brute_radius(Hs: np.ndarray, lr: float, c: float) -> float:
    """Spectral radius of M ↦ E_B[(I − ηH_B) M (I − ηH_B)] as a d²×d² matrix (Kronecker products of
    the per-sample Hessians; E_B[H_B ⊗ H_B] = H ⊗ H + c(mean H_i ⊗ H_i − H ⊗ H))."""
    d = Hs.shape[1]
    H, eye = Hs.mean(axis=0), np.eye(d)
    KK = np.einsum("iab,icd->acbd", Hs, Hs).reshape(d * d, d * d) / len(Hs)
    HH = np.kron(H, H)
    T = np.kron(eye, eye) - lr * (np.kron(H, eye) + np.kron(eye, H)) + lr**2 * (HH + c * (KK - HH))
    w = np.linalg.eigvalsh(T)  # T is symmetric: vec(H_i) vec(H_i)ᵀ and the Kronecker sums are
    return float(max(-w[0], w[-1]))


def _brute_edge(Hs: np.ndarray, c: float, hi: float) -> float:
    lo = 0.0
    for _ in range(32):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if _brute_radius(Hs, mid, c) < 1.0 else (lo, mid)
    return 0.5 * (lo + hi)


@pytest.mark.parametrize("l2", [0.0, 0.2])
def test_nonuniformity_of_a_linear_model_is_the_brute_force_eigenvalue(l2):
    m = _linear(7, 3, l2, seed=3)
    theta, _ = normal_equations(m)
    Hs = _per_sample_linear(m)
    s = _brute_s(Hs)[1]
    assert nu.nonuniformity(m, theta) == pytest.approx(s, rel=1e-10)
    H = Hs.mean(axis=0)
    np.testing.assert_allclose(nu.spread_matrix(m, theta),
                               np.einsum("iab,ibc->ac", Hs, Hs) / m.n - H @ H, rtol=0, atol=1e-12 * s * s)
    # the l2 part of every H_i cancels in Σ_H
    if l2:
        assert s == pytest.approx(_brute_s(_per_sample_linear(_linear(7, 3, 0.0, seed=3)))[1], rel=1e-12)


def test_wme_edge_and_its_limits():
    assert nu.wme_edge(4.0, 2.0, 1.0) == pytest.approx(0.5)            # 2/a = 1/(s√c) = 0.5
    assert nu.wme_edge(4.0, 2.0, 1 / 16) == pytest.approx(0.5)         # 2/a binds: √16/2 = 2
    assert nu.wme_edge(1.0, 8.0, 1 / 4) == pytest.approx(0.25)         # √4/8
    assert nu.wme_edge(1.0, 8.0, 0.0) == pytest.approx(2.0)            # full batch: GD's 2/a


@pytest.mark.parametrize(("b", "sampling"), [(1, "with_replacement"), (3, "with_replacement"),
                                             (3, "without_replacement")])
def test_one_parameter_edge_is_the_closed_form_below_the_bound(b, sampling):
    """d = 1: SGD's second moment is multiplied by (1 − ηa)² + η²c s² per step, so the exact edge is
    2a/(a² + c s²) ≤ min(2/a, 1/(s√c)) (AM–GM), and the one-step edge is the same number."""
    m = _linear(9, 1, 0.0, seed=5)
    theta, _ = normal_equations(m)
    a, s = _brute_s(_per_sample_linear(m))
    c = batch_noise_factor(m.n, b, sampling)
    exact = 2 * a / (a * a + c * s * s)
    assert moments.ms_edge(m, b, sampling) == pytest.approx(exact, rel=1e-10)
    assert nu.one_step_edge(m, theta, c) == pytest.approx(exact, rel=1e-10)
    assert exact <= nu.wme_edge(a, nu.nonuniformity(m, theta), c) * (1 + 1e-12)


def test_in_d_dimensions_the_bound_is_not_necessary_for_mean_square_stability():
    """Least squares on diabetes (d = 11): the one-step (sufficient) edge ≤ the exact edge ≤ 2/a for
    every b, both from the brute-force second-moment map; but at b = 2, 4, 8 SGD's second moment is
    still stable 2 % above η_WME = √b/s — the bound's s-condition is necessary only in one dimension."""
    land = OmegaConf.to_container(OmegaConf.load(REPO_CONF / "linreg_diabetes.yaml"))["landscape"]
    m = model_from_landscape(land)
    theta, _ = normal_equations(m)
    Hs = _per_sample_linear(m)
    a, s = _brute_s(Hs)
    assert nu.nonuniformity(m, theta) == pytest.approx(s, rel=1e-10)
    above = []
    for b in (1, 2, 4, 8, 16):
        c = 1.0 / b
        wme = nu.wme_edge(a, s, c)
        edge = _brute_edge(Hs, c, 2.0 / a)
        assert moments.ms_edge(m, b, "with_replacement") == pytest.approx(edge, rel=1e-8)
        assert nu.one_step_edge(m, theta, c) <= edge * (1 + 1e-9)
        assert nu.one_step_edge(m, theta, c) <= wme * (1 + 1e-12)
        if _brute_radius(Hs, 1.02 * wme, c) < 1.0:
            above.append(b)
    assert above == [2, 4, 8]


def _fd_sample_hessians(m: Model, theta: np.ndarray, h: float = 1e-5) -> np.ndarray:
    """(n, d, d) per-sample Hessians by central differences of the per-sample gradients."""
    cols = []
    for k in range(m.d):
        e = np.zeros(m.d)
        e[k] = h
        cols.append((m.sample_grads(theta + e) - m.sample_grads(theta - e)) / (2 * h))
    Hs = np.stack(cols, axis=2)
    return 0.5 * (Hs + Hs.transpose(0, 2, 1))


def test_mlp_nonuniformity_and_where_sgd_diverges():
    """A tanh network (4 units, d = 61) on wine at a minimum found by full-batch Newton: s from the
    compiled per-sample HVPs equals the finite-difference value; Monte Carlo SGD (200 chains from
    θ* + N(0, 0.1²), 200 units of SDE time, divergent = chains lost or E|θ − θ*|² grown 2×) is
    stable at 0.75·η_WME and diverged at 1.25·η_WME for b = 1 (the bound's s-condition binds
    there), but at b = 4 it is still stable at 1.2·η_WME: the bound is not where this network's
    SGD diverges."""
    land = OmegaConf.to_container(OmegaConf.load(REPO_CONF / "mlp_wine.yaml"))["landscape"]
    m = model_from_landscape({**land, "hidden": 4})
    theta = find_minimum(m, m.init(0), k=1).theta
    a, s_fd = _brute_s(_fd_sample_hessians(m, theta))
    s = nu.nonuniformity(m, theta)
    assert s == pytest.approx(s_fd, rel=1e-5)
    rng = np.random.default_rng(0)

    def diverged(lr: float, b: int) -> bool:
        start = theta + 0.1 * rng.standard_normal((200, m.d))
        ens = ModelEnsemble(m.kernel_args(), "sgd", start, lr, batch_size=b, seed=1)
        ens.advance(round(200.0 / lr))
        alive = ens.lost_step < 0
        if not alive.all():
            return True
        grow = ((ens.positions - theta) ** 2).sum(1).mean() / ((start - theta) ** 2).sum(1).mean()
        return bool(grow > 2.0)

    w1, w4 = nu.wme_edge(a, s, 1.0), nu.wme_edge(a, s, 0.25)
    assert w1 == pytest.approx(1.0 / s) and w1 < 2.0 / a  # b = 1: s binds
    assert not diverged(0.75 * w1, 1) and diverged(1.25 * w1, 1)
    assert not diverged(1.2 * w4, 4)
