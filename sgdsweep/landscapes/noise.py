"""Minibatch gradient-noise scaling shared by the SDE, Fokker–Planck and references."""

from __future__ import annotations

from sgdsweep.errors import ConfigError

SAMPLINGS = ("with_replacement", "without_replacement", "reshuffle")


def batch_noise_factor(n: int, batch_size: int, sampling: str) -> float:
    """Σ_b / Σ for one minibatch mean of ``batch_size`` of ``n`` per-sample gradients.

    With replacement the b draws are independent: 1/b. Without replacement (and
    per-step marginally under random reshuffling) the finite-population correction
    applies: (n − b) / (b (n − 1)), which is 0 for full-batch b = n.
    """
    if sampling not in SAMPLINGS:
        raise ConfigError(f"sampling: unknown {sampling!r} (known: {', '.join(SAMPLINGS)})")
    if batch_size < 1:
        raise ConfigError(f"batch_size: must be >= 1, got {batch_size}")
    if batch_size > n:
        raise ConfigError(f"batch_size: {batch_size} is larger than the dataset (n = {n})")
    if sampling == "with_replacement":
        return 1.0 / batch_size
    if n == 1:
        return 0.0
    return (n - batch_size) / (batch_size * (n - 1))


def diffusion(cov, lr: float, factor: float):
    """Itô diffusion coefficient D = η Σ_b / 2 (per unit SDE time t = η·step)."""
    return 0.5 * lr * factor * cov
