"""The distinct minibatches of one SGD step and their probabilities.

A minibatch is represented by its *count vector* c ∈ ℕⁿ, Σ c_i = b: the minibatch
mean gradient is ḡ_B = (1/b) Σ_i c_i g_i, so two index sequences with the same counts
give the same step and are merged.

* ``with_replacement``: b iid uniform indices. The distinct minibatches are the
  multisets of size b, C(n + b − 1, b) of them, each with the multinomial probability
  b! / (∏ c_i!) · n^(−b).
* ``without_replacement``: a uniform b-subset, C(n, b) of them, each 1 / C(n, b).
* ``reshuffle``: the batch depends on the epoch's permutation and on how far into the
  epoch the step is, so θ alone is not a Markov state: no one-step operator exists.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from sgdsweep.errors import ConfigError
from sgdsweep.landscapes.noise import SAMPLINGS
from sgdsweep.validate import integer

#: Samplings with a one-step transfer operator on θ alone.
MARKOV_SAMPLINGS = ("with_replacement", "without_replacement")


def check_sampling(sampling: str) -> None:
    """ConfigError unless ``sampling`` makes SGD a Markov chain in θ alone."""
    if sampling == "reshuffle":
        raise ConfigError("sampling: 'reshuffle' is not a Markov chain in θ alone (the batch depends on "
                          "the epoch's permutation); the transfer operator needs with_replacement or "
                          "without_replacement")
    if sampling not in SAMPLINGS:
        raise ConfigError(f"sampling: unknown {sampling!r} (known: {', '.join(MARKOV_SAMPLINGS)})")


def _check(n: int, batch_size: int, sampling: str) -> tuple[int, int]:
    check_sampling(sampling)
    n = integer(n, "n", 1)
    b = integer(batch_size, "batch_size", 1)
    if b > n:
        raise ConfigError(f"batch_size: {b} is larger than the dataset (n = {n})")
    return n, b


def minibatch_count(n: int, batch_size: int, sampling: str) -> int:
    """Number of distinct minibatches (count vectors): C(n+b−1, b) or C(n, b)."""
    n, b = _check(n, batch_size, sampling)
    if sampling == "with_replacement":
        return math.comb(n + b - 1, b)
    return math.comb(n, b)


def enumerate_minibatches(n: int, batch_size: int, sampling: str) -> tuple[np.ndarray, np.ndarray]:
    """All distinct minibatches: ``counts`` (K, n) int64 (rows sum to b) and ``weights`` (K,).

    Weights are the minibatch probabilities (they sum to 1 to round-off). Order: the
    lexicographic order of the sorted index tuples.
    """
    n, b = _check(n, batch_size, sampling)
    if sampling == "with_replacement":
        combos = itertools.combinations_with_replacement(range(n), b)
    else:
        combos = itertools.combinations(range(n), b)
    rows = [np.bincount(np.asarray(c, dtype=np.int64), minlength=n) for c in combos]
    counts = np.asarray(rows, dtype=np.int64).reshape(-1, n)
    if sampling == "with_replacement":
        log_fact = np.array([math.lgamma(k + 1.0) for k in range(b + 1)])
        logw = math.lgamma(b + 1.0) - log_fact[counts].sum(axis=1) - b * math.log(n)
        weights = np.exp(logw)
    else:
        weights = np.full(counts.shape[0], 1.0 / counts.shape[0])
    return counts, weights
