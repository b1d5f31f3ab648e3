"""Minibatch gradient-noise shape and noise-to-signal ratio against brute-force enumeration."""

import itertools

import numpy as np
import pytest

from sgdsweep import ConfigError, build_landscape
from sgdsweep.landscapes.noise_diagnostics import minibatch_shape, noise_diagnostics, noise_to_signal


def brute_force(values, b, with_replacement):
    """Variance, skewness, excess kurtosis of the mean of b of ``values``, every minibatch enumerated."""
    n = len(values)
    if with_replacement:
        batches = itertools.product(range(n), repeat=b)  # n^b equally likely ordered draws
    else:
        batches = itertools.combinations(range(n), b)  # C(n, b) equally likely subsets
    means = np.array([values[list(B)].mean() for B in batches])
    dev = means - values.mean()
    m2, m3, m4 = (dev**2).mean(), (dev**3).mean(), (dev**4).mean()
    return m2, m3 / m2**1.5, m4 / m2**2 - 3.0


# Skewed, heavy-ish sets of per-sample gradients, one row per point θ.
VALUES = np.array([
    [0.3, -1.2, 2.5, 0.1, 0.1, -0.4, 4.0],
    [1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
    [-2.0, 1.5, 0.25, 3.0, -0.75, 0.5, 0.6],
])


@pytest.mark.parametrize("n", [2, 3, 4, 5, 7])
@pytest.mark.parametrize("sampling", ["with_replacement", "without_replacement"])
def test_shape_matches_enumeration_of_all_minibatches(n, sampling):
    vals = VALUES[:, :n]
    grads = vals[:, :, None]  # (points, n, d = 1)
    bmax = n if sampling == "without_replacement" else min(n, 5)
    for b in range(1, bmax + 1):
        var, skew, kurt = minibatch_shape(grads, b, sampling)
        for p in range(vals.shape[0]):
            if sampling == "without_replacement" and b == n:
                assert var[p, 0] == 0.0 and np.isnan(skew[p, 0]) and np.isnan(kurt[p, 0])
                continue
            m2, s, k = brute_force(vals[p], b, sampling == "with_replacement")
            assert var[p, 0] == pytest.approx(m2, rel=1e-12, abs=1e-14), (n, b, p)
            assert skew[p, 0] == pytest.approx(s, abs=1e-10), (n, b, p)
            assert kurt[p, 0] == pytest.approx(k, abs=1e-10), (n, b, p)


def test_reshuffle_has_the_without_replacement_law():
    """Random reshuffling: each epoch a uniform permutation of the n samples, cut into ⌊n/b⌋
    consecutive batches (the last n mod b dropped). Enumerating all n! = 5040 permutations
    gives the exact law of the minibatch mean at every step of the epoch; each step's
    variance, skewness and excess kurtosis must be what ``minibatch_shape`` reports."""
    n = VALUES.shape[1]
    perms = np.array(list(itertools.permutations(range(n))))  # n! equally likely epochs
    grads = VALUES[:, :, None]
    for b in (2, 3, 5):
        var, skew, kurt = minibatch_shape(grads, b, "reshuffle")
        for p in range(VALUES.shape[0]):
            vals = VALUES[p]
            for step in range(n // b):
                dev = vals[perms[:, step * b:(step + 1) * b]].mean(axis=1) - vals.mean()
                m2, m3, m4 = (dev**2).mean(), (dev**3).mean(), (dev**4).mean()
                assert var[p, 0] == pytest.approx(m2, rel=1e-12, abs=1e-14), (b, p, step)
                assert skew[p, 0] == pytest.approx(m3 / m2**1.5, abs=1e-10), (b, p, step)
                assert kurt[p, 0] == pytest.approx(m4 / m2**2 - 3.0, abs=1e-10), (b, p, step)


def test_with_replacement_scales_as_inverse_sqrt_b_and_inverse_b():
    grads = VALUES[:, :, None]
    _, s1, k1 = minibatch_shape(grads, 1, "with_replacement")
    assert np.all(np.abs(s1) > 0.05) and np.all(np.abs(k1) > 0.4)  # a non-trivial check
    for b in (2, 3, 4, 7):
        _, s, k = minibatch_shape(grads, b, "with_replacement")
        np.testing.assert_allclose(s, s1 / np.sqrt(b), rtol=1e-12)
        np.testing.assert_allclose(k, k1 / b, rtol=1e-12)


def test_2d_is_per_axis():
    rng = np.random.default_rng(3)
    grads = rng.standard_exponential((4, 6, 2))
    var, skew, kurt = minibatch_shape(grads, 3, "without_replacement")
    for p in range(4):
        for a in range(2):
            m2, s, k = brute_force(grads[p, :, a], 3, False)
            assert var[p, a] == pytest.approx(m2, rel=1e-12)
            assert skew[p, a] == pytest.approx(s, abs=1e-10)
            assert kurt[p, a] == pytest.approx(k, abs=1e-10)


def test_zero_spread_gives_nan_not_noise_from_rounding():
    # All samples agree (up to rounding of their own computation): no noise, shape undefined.
    g = np.full((1, 5, 1), 0.1 + 0.2)
    g[0, 2, 0] = 0.3  # differs from 0.1 + 0.2 by one ulp
    var, skew, kurt = minibatch_shape(g, 2, "with_replacement")
    assert var[0, 0] < 1e-32 and np.isnan(skew[0, 0]) and np.isnan(kurt[0, 0])
    # n = 1: nothing to sample.
    var, skew, kurt = minibatch_shape(np.ones((3, 1, 1)), 1, "with_replacement")
    assert np.all(var == 0) and np.all(np.isnan(skew)) and np.all(np.isnan(kurt))


def test_two_point_dataset_has_closed_form_shape():
    # Bernoulli-like: two gradients ±1 (after centring). Skew 0, one-sample excess kurtosis −2.
    g = np.array([[[-1.0], [1.0]]])
    _, s, k = minibatch_shape(g, 1, "with_replacement")
    assert s[0, 0] == pytest.approx(0.0, abs=1e-15) and k[0, 0] == pytest.approx(-2.0, rel=1e-14)
    _, s, k = minibatch_shape(g, 2, "with_replacement")
    assert k[0, 0] == pytest.approx(-1.0, rel=1e-14)


def test_quadratic_landscape_diagnostics_are_exact():
    # l_i = h/2 (θ − c_i)²: g_i = h (θ − c_i), so the noise is −h·c_i whatever θ, G = h θ,
    # and NSR_b = h² s² noise_factor / (h θ)² exactly.
    h, s, n = 2.0, 0.5, 6
    land = build_landscape({"reference": [{"kind": "quadratic", "curvature": h, "centre": 0.0}],
                            "shifts": {"n": n, "std": s}})
    theta = np.array([-1.0, 0.25, 2.0])
    out = noise_diagnostics(land, theta, 2, "without_replacement")
    factor = (n - 2) / (2 * (n - 1))
    np.testing.assert_allclose(out["noise_to_signal"], s**2 * factor / theta**2, rtol=1e-12)
    np.testing.assert_allclose(out["variance"][:, 0], h**2 * s**2 * factor, rtol=1e-12)
    # Evenly spaced offsets are symmetric: no skew; their kurtosis is the discrete uniform's.
    np.testing.assert_allclose(out["skewness"], 0.0, atol=1e-12)
    _, _, k = brute_force(-h * land.centre[:, 0], 2, False)
    np.testing.assert_allclose(out["excess_kurtosis"][:, 0], k, atol=1e-10)
    assert k < 0


def test_noise_to_signal_at_stationary_points():
    grad = np.array([[0.0], [0.0], [2.0]])
    cov = np.array([[[1.0]], [[0.0]], [[4.0]]])
    out = noise_to_signal(grad, cov, 0.5)
    assert out[0] == np.inf and np.isnan(out[1]) and out[2] == pytest.approx(0.5)


@pytest.mark.parametrize("kwargs, message", [
    ({"batch_size": 0}, "batch_size: must be >= 1"),
    ({"batch_size": 9}, "batch_size: 9 is larger than the dataset"),
    ({"batch_size": 1, "sampling": "shuffled"}, "sampling: unknown 'shuffled'"),
    ({"batch_size": 1, "points": [[0.0, 1.0]]}, "points: expected shape (m, 1)"),
    ({"batch_size": 1, "points": [np.nan]}, "points: must be finite"),
])
def test_bad_input_names_the_field(kwargs, message):
    land = build_landscape({"reference": [{"kind": "quadratic", "curvature": 1.0}],
                            "shifts": {"n": 8, "std": 1.0}})
    kwargs = {"points": [0.0], **kwargs}
    with pytest.raises(ConfigError) as err:
        noise_diagnostics(land, **kwargs)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


# --------------------------------------------------------------------------- stored per cell


def test_cells_store_the_diagnostics_for_their_batch_size():
    from sgdsweep import run_cell
    from sgdsweep.analysis.plots import gradient_noise

    land = {"name": "heavy", "n": 12, "reference": [
        {"kind": "gaussian", "amplitude": -1.0, "centre": 0.0, "width": 0.5},
        {"kind": "quadratic", "curvature": 0.3, "centre": 0.0}],
        "shifts": {"n": 12, "std": 0.3, "distribution": "outliers", "k": 1, "scale": 4.0}}
    base = {"landscape": land, "methods": ["gd"], "mc": {"chains": 8},
            "time": {"t_end": 0.04, "snapshots": 2},
            "density_grid": {"lower": -2.0, "upper": 2.0, "cells": 40}}
    one = run_cell(base)
    four = run_cell({**base, "batch_size": 4})
    # With replacement: skewness γ₁/√b, excess kurtosis γ₂/b, NSR ∝ 1/b.
    np.testing.assert_allclose(four["noise_skewness"], one["noise_skewness"] / 2, rtol=1e-12)
    np.testing.assert_allclose(four["noise_kurtosis"], one["noise_kurtosis"] / 4, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(four["noise_to_signal"], one["noise_to_signal"] / 4, rtol=1e-12)
    # One-sided outlier: the noise is skewed; values equal the library function at the centres.
    assert np.nanmax(np.abs(one["noise_skewness"].values)) > 1.0
    wo = run_cell({**base, "batch_size": 4, "sampling": "without_replacement"})
    ref = noise_diagnostics(build_landscape(land), wo["x"].values, 4, "without_replacement")
    np.testing.assert_array_equal(wo["noise_skewness"].values, ref["skewness"][:, 0])
    np.testing.assert_array_equal(wo["noise_kurtosis"].values, ref["excess_kurtosis"][:, 0])
    np.testing.assert_array_equal(wo["noise_to_signal"].values, ref["noise_to_signal"])
    fig = gradient_noise(one)
    assert len(fig.axes) == 4
