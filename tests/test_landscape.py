"""Landscape kernels against closed-form values and derivatives; bad input."""

import itertools

import numpy as np
import pytest
import yaml

from sgdsweep import ConfigError, build_landscape
from sgdsweep.landscapes.basins import escape_threshold, find_basins
from sgdsweep.landscapes.shifts import standard_shifts
from tests.conftest import REPO

LANDSCAPES = REPO / "conf" / "landscape"


def seed_landscape():
    with open(LANDSCAPES / "seed_two_point.yaml") as f:
        return build_landscape(yaml.safe_load(f))


def test_seed_model_is_exactly_the_two_datapoint_loss():
    land = seed_landscape()
    x = np.linspace(-1.0, 4.0, 101)
    ev = land.evaluate(x)
    l0 = -np.exp(-((x - 2) ** 2))
    l1 = -np.exp(-((x - 2) ** 2)) - np.exp(-100 * (x - 1) ** 2)
    g0 = 2 * (x - 2) * np.exp(-((x - 2) ** 2))
    g1 = g0 + 200 * (x - 1) * np.exp(-100 * (x - 1) ** 2)
    h0 = (2 - 4 * (x - 2) ** 2) * np.exp(-((x - 2) ** 2))
    h1 = h0 + (200 - 40000 * (x - 1) ** 2) * np.exp(-100 * (x - 1) ** 2)
    assert land.n == 2
    np.testing.assert_allclose(ev["loss"], (l0 + l1) / 2, rtol=0, atol=1e-15)
    np.testing.assert_allclose(ev["grad"][:, 0], (g0 + g1) / 2, rtol=0, atol=1e-13)
    # population variance of two gradients = ((g1 − g0)/2)²
    np.testing.assert_allclose(ev["cov"][:, 0, 0], ((g1 - g0) / 2) ** 2, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ev["hess"][:, 0, 0], (h0 + h1) / 2, rtol=0, atol=1e-10)
    np.testing.assert_allclose(ev["sample_grads"][:, 1, 0], g1, rtol=0, atol=1e-13)


def test_shifted_quadratic_has_exact_mean_gradient_and_constant_noise():
    h, s, n = 2.5, 0.7, 9
    land = build_landscape({"reference": [{"kind": "quadratic", "curvature": h, "centre": 0.3}],
                            "shifts": {"n": n, "std": s}})
    c = 0.3 + standard_shifts(n, s)
    assert c.mean() == pytest.approx(0.3, abs=1e-14) and c.std() == pytest.approx(s, rel=1e-14)
    x = np.linspace(-2, 2, 7)
    ev = land.evaluate(x)
    np.testing.assert_allclose(ev["grad"][:, 0], h * (x - 0.3), atol=1e-13)
    np.testing.assert_allclose(ev["cov"][:, 0, 0], h**2 * s**2, rtol=1e-12)
    np.testing.assert_allclose(ev["loss"], 0.5 * h * ((x - 0.3) ** 2 + s**2), rtol=1e-12)


def test_2d_noise_covariance_does_not_commute_with_hessian():
    land = build_landscape({"dim": 2, "reference": [{"kind": "quadratic", "curvature": [1.0, 4.0],
                                                     "centre": [0.0, 0.0]}],
                            "shifts": {"n": 8, "std": 0.5, "direction": [1.0, 1.0]}})
    ev = land.evaluate(np.array([[0.2, -0.1]]))
    H, S = ev["hess"][0], ev["cov"][0]
    np.testing.assert_allclose(H, np.diag([1.0, 4.0]), atol=1e-14)
    u = np.array([1.0, 1.0]) / np.sqrt(2)
    np.testing.assert_allclose(S, 0.25 * H @ np.outer(u, u) @ H, rtol=1e-12)
    assert np.abs(H @ S - S @ H).max() > 0.5
    np.testing.assert_allclose(ev["grad"][0], H @ np.array([0.2, -0.1]), atol=1e-14)


def test_2d_gaussian_gradient_and_hessian_match_finite_differences():
    land = build_landscape({"dim": 2, "datapoints": [
        [{"kind": "gaussian", "amplitude": -1.3, "centre": [0.5, -0.2], "sharpness": [2.0, 0.5]}],
        [{"kind": "gaussian", "amplitude": 0.7, "centre": [-0.4, 0.1], "width": 0.8},
         {"kind": "quadratic", "curvature": [[1.0, 0.3], [0.3, 2.0]], "centre": [0.0, 0.0]}],
    ]})
    p = np.array([0.31, -0.17])
    e = 1e-5
    ev = land.evaluate(p[None])
    for a in range(2):
        dp = np.zeros(2)
        dp[a] = e
        up, dn = land.evaluate((p + dp)[None]), land.evaluate((p - dp)[None])
        assert ev["grad"][0, a] == pytest.approx((up["loss"][0] - dn["loss"][0]) / (2 * e), abs=1e-8)
        np.testing.assert_allclose(ev["hess"][0, :, a], (up["grad"][0] - dn["grad"][0]) / (2 * e),
                                   atol=1e-7)


@pytest.mark.parametrize(("cfg", "field"), [
    ({"datapoints": [[{"kind": "cubic", "centre": 0.0}]]}, "landscape.datapoints[0][0].kind"),
    ({"datapoints": [[{"kind": "gaussian", "centre": 0.0, "width": -1.0}]]},
     "landscape.datapoints[0][0].width"),
    ({"datapoints": [[{"kind": "quadratic", "curvature": "steep"}]]},
     "landscape.datapoints[0][0].curvature"),
    ({"reference": [{"kind": "quadratic", "curvature": 1.0}], "shifts": {"n": 0, "std": 1.0}},
     "landscape.shifts.n"),
    ({"dim": 3, "datapoints": [[{"kind": "quadratic", "curvature": 1.0}]]}, "landscape.dim"),
    ({"datapoints": []}, "landscape.datapoints"),
    ({"_target_": "no.such.module.make"}, "landscape._target_"),
])
def test_bad_landscape_names_the_field(cfg, field):
    with pytest.raises(ConfigError) as err:
        build_landscape(cfg)
    msg = str(err.value)
    assert msg.startswith(field) and "\n" not in msg


def test_custom_landscape_from_a_python_callable():
    land = build_landscape({"_target_": "tests.custom_landscape.double_well", "separation": 1.5})
    assert land.name == "double_well" and land.n == 4
    ev = land.evaluate(np.array([0.0]))
    assert abs(ev["grad"][0, 0]) < 1e-12  # symmetric


def test_basins_split_at_the_barrier_of_the_seed_model():
    land = seed_landscape()
    x = np.linspace(-1, 4, 5001)
    loss = land.evaluate(x)["loss"]
    b = find_basins(x, loss)
    assert b.names == ("b0", "b1") and len(b.edges) == 1
    # the barrier is the zero of L' between the pit (θ≈1) and the wide minimum (θ≈2)
    dx = x[1] - x[0]
    g = land.evaluate(b.edges + np.array([-dx, dx]))["grad"][:, 0]
    assert 1.0 < b.edges[0] < 2.0 and g[0] > 0 > g[1]
    thr, direction = escape_threshold(b, 0.5)
    assert thr == b.edges[0] and direction == +1


# --------------------------------------------------------------------------- offset distributions

SHAPES = [("even", {}), ("normal", {}), ("student_t", {"nu": 5.0}), ("student_t", {"nu": 0.5}),
          ("outliers", {"k": 1, "scale": 8.0}), ("outliers", {"k": 3, "scale": 4.0})]


def _shifts_of(n, std, dist, **extra):
    land = build_landscape({"reference": [{"kind": "quadratic", "curvature": 1.0, "centre": 0.0}],
                            "shifts": {"n": n, "std": std, "distribution": dist, **extra}})
    return land.centre[:, 0]


def _excess_kurtosis(z):
    z = z - z.mean()
    return (z**4).mean() / (z**2).mean() ** 2 - 3.0


@pytest.mark.parametrize(("dist", "extra"), SHAPES)
@pytest.mark.parametrize("n", [4, 9, 64])
def test_offsets_have_mean_zero_and_the_population_std(dist, extra, n):
    s = _shifts_of(n, 0.37, dist, **extra)
    assert s.shape == (n,)
    assert abs(s.mean()) < 1e-15
    assert s.std() == pytest.approx(0.37, rel=1e-14)


def test_quantile_offsets_match_closed_form_quantiles():
    from statistics import NormalDist

    n, std = 12, 0.8
    q = (np.arange(n) + 0.5) / n

    def rescaled(z):
        return std * (z - z.mean()) / (z - z.mean()).std()

    normal = np.array([NormalDist().inv_cdf(p) for p in q])
    np.testing.assert_allclose(_shifts_of(n, std, "normal"), rescaled(normal), rtol=1e-12, atol=1e-15)
    cauchy = np.tan(np.pi * (q - 0.5))  # Student-t, ν = 1
    np.testing.assert_allclose(_shifts_of(n, std, "student_t", nu=1), rescaled(cauchy), rtol=1e-12,
                               atol=1e-15)
    t2 = (2 * q - 1) / np.sqrt(2 * q * (1 - q))  # Student-t, ν = 2
    np.testing.assert_allclose(_shifts_of(n, std, "student_t", nu=2), rescaled(t2), rtol=1e-12,
                               atol=1e-15)


def test_student_t_offsets_have_heavier_tails_than_even_and_normal():
    n = 32
    k_even = _excess_kurtosis(_shifts_of(n, 1.0, "even"))
    k_normal = _excess_kurtosis(_shifts_of(n, 1.0, "normal"))
    k_t = [_excess_kurtosis(_shifts_of(n, 1.0, "student_t", nu=nu)) for nu in (30.0, 5.0, 2.0, 1.0)]
    assert k_even == pytest.approx(-1.2 * (n * n + 1) / (n * n - 1), rel=1e-12)  # discrete uniform
    assert k_t[1] > k_even and k_t[1] > k_normal
    assert all(a < b for a, b in itertools.pairwise(k_t))  # heavier as ν decreases


def test_outlier_offsets_are_a_uniform_bulk_plus_far_points():
    n, k, scale = 10, 1, 6.0
    s = np.sort(_shifts_of(n, 1.0, "outliers", k=k, scale=scale))
    bulk, far = s[:-1], s[-1]
    np.testing.assert_allclose(np.diff(bulk), np.diff(bulk)[0], rtol=1e-12)  # evenly spaced
    half_width = (bulk[-1] - bulk[0]) / 2
    centre = (bulk[-1] + bulk[0]) / 2
    assert (far - centre) / half_width == pytest.approx(scale, rel=1e-12)
    z = s - s.mean()
    assert (z**3).mean() > 0  # one far point on the + side skews the data
    two = _shifts_of(n, 1.0, "outliers", k=2, scale=scale)
    assert abs((two**3).mean()) < 1e-14 and _excess_kurtosis(two) > 0


def test_existing_landscapes_keep_bit_identical_offsets():
    from omegaconf import OmegaConf

    for name in ("two_basin", "quadratic", "anisotropic_2d"):
        cfg = OmegaConf.to_container(OmegaConf.load(LANDSCAPES / f"{name}.yaml"), resolve=True)
        land = build_landscape(cfg)
        explicit = build_landscape({**cfg, "shifts": {**cfg["shifts"], "distribution": "even"}})
        n, std = cfg["shifts"]["n"], cfg["shifts"]["std"]
        z = np.linspace(-1.0, 1.0, n)  # the documented offsets: evenly spaced, rescaled
        u = np.asarray(cfg["shifts"].get("direction", [1.0] * land.dim), dtype=float)
        u = u / np.linalg.norm(u)
        c0 = np.asarray(cfg["reference"][0]["centre"], dtype=float)
        expected = c0 + (std * z / z.std())[:, None] * u[None, :]
        assert np.array_equal(land.centre[:: len(cfg["reference"])], expected), name
        for a, b in zip(land.arrays, explicit.arrays, strict=True):
            assert np.array_equal(a, b) and a.dtype == b.dtype


def test_heavy_tailed_example_has_heavier_gradient_noise_tails_than_two_basin():
    from omegaconf import OmegaConf

    from sgdsweep.landscapes.noise_diagnostics import noise_diagnostics

    def kurtosis(name):
        cfg = OmegaConf.to_container(OmegaConf.load(LANDSCAPES / f"{name}.yaml"), resolve=True)
        return noise_diagnostics(build_landscape(cfg), [-0.9, 0.0, 1.0], 1)["excess_kurtosis"][:, 0]

    assert np.all(kurtosis("heavy_tailed") > kurtosis("two_basin") + 0.5)


@pytest.mark.parametrize(("shifts", "message"), [
    ({"n": 8, "std": 1.0, "distribution": "student_t", "nu": -1}, "landscape.shifts.nu: must be > 0, got -1"),
    ({"n": 8, "std": 1.0, "distribution": "student_t", "nu": 0.0}, "landscape.shifts.nu: must be > 0"),
    ({"n": 8, "std": 1.0, "distribution": "student_t"}, "landscape.shifts.nu: missing"),
    ({"n": 8, "std": -0.5}, "landscape.shifts.std: must be >= 0"),
    ({"n": 8, "std": 1.0, "distribution": "outliers", "k": 8, "scale": 5.0},
     "landscape.shifts.k: must be < n (= 8), got 8"),
    ({"n": 8, "std": 1.0, "distribution": "outliers", "k": 1, "scale": 0.0},
     "landscape.shifts.scale: must be > 0"),
    ({"n": 8, "std": 1.0, "distribution": "outliers", "k": 1.5, "scale": 5.0},
     "landscape.shifts.k: expected"),
    ({"n": 8, "std": 1.0, "distribution": "cauchy"}, "landscape.shifts.distribution: unknown 'cauchy'"),
    ({"n": 8, "std": 1.0, "nu": 3.0}, "landscape.shifts: unknown key(s) ['nu'] for distribution 'even'"),
])
def test_bad_offset_distribution_names_the_field(shifts, message):
    with pytest.raises(ConfigError) as err:
        build_landscape({"reference": [{"kind": "quadratic", "curvature": 1.0}], "shifts": shifts})
    msg = str(err.value)
    assert msg.startswith(message) and "\n" not in msg
