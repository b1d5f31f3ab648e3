"""Tail indices: Hill on exact Pareto samples, Kesten's index against a hand-solved case."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sgdsweep.errors import ConfigError
from sgdsweep.models.tails import hill, kesten_index


@pytest.mark.parametrize("alpha", [1.5, 3.0])
def test_hill_on_exact_pareto_within_three_standard_errors(alpha):
    rng = np.random.default_rng(7)
    u = rng.random(200_000)
    x = u ** (-1.0 / alpha) * rng.choice([-1.0, 1.0], size=u.size)  # |x| Pareto(α, x_min = 1)
    a_hat, se, k = hill(x, frac=0.05)
    assert k == 10_000
    assert abs(se - a_hat / math.sqrt(k)) < 1e-15
    assert abs(a_hat - alpha) < 3 * se


def test_kesten_two_samples_by_hand():
    # η = 1, a = (3, 0.75): |1 − ηa| = (2, 1/4); ½(2^α + 4^−α) = 1 ⇔ s³ − 2s² + 1 = 0 with s = 2^α,
    # = (s − 1)(s² − s − 1): the root s ≠ 1 is the golden ratio, α = log₂((1 + √5)/2)
    expect = math.log2((1 + math.sqrt(5)) / 2)
    assert abs(kesten_index([3.0, 0.75], 1.0) - expect) < 1e-13


def test_kesten_limits_and_errors():
    assert kesten_index([0.5, 1.0, 1.5], 1.0) == math.inf  # every |1 − ηa| ≤ 1
    assert kesten_index([4.0, 0.5], 1.0) == 0.0  # E log|1 − ηa| = (log 3 + log ½)/2 > 0
    with pytest.raises(ConfigError, match=r"^lr: must be > 0"):
        kesten_index([1.0], -1.0)
    with pytest.raises(ConfigError, match=r"^samples: "):
        hill(np.ones(10), frac=0.05)
