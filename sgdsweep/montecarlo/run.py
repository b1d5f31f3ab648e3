"""Compiled Monte Carlo ensembles: minibatch SGD and its variants, its Itô SDE, Langevin, GD.

Time is counted in SGD steps k; the SDE time is t = η·k (η = ``lr``).

* ``sgd``: θ ← θ − η·(1/b) Σ_{i∈B} ∇l_i(θ) on the finite dataset. Minibatch sampling:
  ``with_replacement`` (b iid uniform indices), ``without_replacement`` (b distinct
  indices per step, a partial Fisher–Yates shuffle of a per-chain permutation) or
  ``reshuffle`` (a fresh per-chain permutation each epoch, cut into consecutive
  batches of b; when b does not divide n the last n mod b indices of each
  permutation are dropped, like ``drop_last``, so an epoch is ⌊n/b⌋ steps).
* ``sde``: Euler–Maruyama of the Itô SDE dθ = −G dt + sqrt(η Σ_b(θ)) dW with
  ``substeps`` EM steps per SGD step (dt = η/substeps), Σ_b = noise_factor·Σ;
  in 2-D the noise is the Cholesky factor of Σ_b times a standard normal pair.
* ``svag`` (Li, Malladi & Arora 2021): l (``params["l"]``) steps of η/l per SGD step, each
  with a₁ḡ_{B1} + a₂ḡ_{B2} of two independent minibatches drawn as for ``sgd``,
  a₁,₂ = (1 ± √(2l−1))/2 (:func:`svag_coefficients`). It draws from SGD's stream, so
  l = 1 (one minibatch, a₁ = 1) is ``sgd`` bit for bit.
* ``sgd_noise``: ``sgd`` plus σ (``params["sigma"]``) times a standard normal (per axis) added
  to the minibatch gradient: θ ← θ − (η/b Σ_{i∈B} ∇l_i + η σ z). z is hashed from SGD's
  stream state and the step number without advancing the stream: the minibatches are
  SGD's, and σ = 0 is ``sgd`` bit for bit.
* ``sme2``: as ``sde`` with the drift of the second-order modified equation
  G + (η/2)·H·G, H = ∇²L (Li, Tai & E 2017), on the SDE's random stream.
* ``langevin``: dθ = −G dt + sqrt(2T) dW, same dt and substeps; stationary law ∝ exp(−L/T).
* ``gd``: θ ← θ − η G (full batch, deterministic).

Chains run in parallel (numba prange); each owns a counter-based random stream
(:mod:`sgdsweep.montecarlo.rng`) keyed by (seed, method, chain), so results are
bit-identical for any thread count and do not depend on the snapshot schedule.
Between snapshots the compiled kernel advances every chain; at each snapshot
histograms, moments, basin counts and the lost count are accumulated serially
in chain order. Trajectories are never stored. In 1-D every method but ``gd`` runs on
kernels that step _LANES chains per SIMD block; they draw the same random numbers
and form the same products and sums as the general kernel, except that Gaussian terms
use a branch-free polynomial exp (relative error ≤ 4e-16) instead of libm's and
``sme2``'s Hessian is summed in another order, so trajectories can differ from the
general kernel in the last bits. ``gd`` always uses the general kernel and reproduces
θ − η·``Landscape.evaluate``(θ)["grad"] exactly.

A chain that becomes non-finite or leaves the grid box [lower, upper] (any axis)
is frozen and counted as lost from the (sub)step it left; it is excluded from
histograms, moments and basin counts, which are still meant to be normalised by
the total number of chains (densities then integrate to 1 − lost fraction).
Chains whose initial position lies outside the grid are lost at step 0.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from sgdsweep.errors import ConfigError
from sgdsweep.landscapes.grid import Grid1D
from sgdsweep.landscapes.landscape import Landscape
from sgdsweep.landscapes.noise import SAMPLINGS, batch_noise_factor
from sgdsweep.methods.registry import Method, get_method
from sgdsweep.montecarlo.kernels import (
    GD,
    KERNEL_PARAMS,
    LANGEVIN,
    MINIBATCH_KERNELS,
    SAMPLING_IDS,
    SVAG,
    Dyn,
    _accumulate,
    general_kernel,
    svag_coefficients,
)
from sgdsweep.montecarlo.lanes import _LANES, _advance_noisy_1d, _advance_sgd_1d, _padded_terms_1d
from sgdsweep.montecarlo.rng import chain_states, stream_key
from sgdsweep.montecarlo.threads import over_blocks
from sgdsweep.validate import integer, real, snapshot_steps


@dataclass
class EnsembleResult:
    """Streamed statistics of one ensemble at the S snapshots.

    ``counts`` are histogram counts on the grid cells; divide by (chains · cell
    volume) for a density that integrates to 1 − lost/chains. ``mean`` and ``var``
    (population variance) are over the chains still inside the grid (NaN if none).
    ``basin_counts`` counts in-grid chains per basin of axis 0 (basin j is
    [edge_{j−1}, edge_j)). ``lost`` is the number of chains lost by each snapshot.
    ``escape_step`` is each chain's first SGD step with θ₀ past the threshold (for
    ``sde`` / ``langevin`` including Brownian-bridge crossings between substeps, so the
    continuous-time passage is not detected O(√dt) late)
    (0 if it starts there, −1 if never, all −1 without a threshold).
    ``lost_step`` is the SGD step at which each chain was lost (−1 if never).
    """

    counts: np.ndarray
    mean: np.ndarray
    var: np.ndarray
    basin_counts: np.ndarray
    lost: np.ndarray
    escape_step: np.ndarray
    chains: int
    lost_step: np.ndarray | None = None


def run_ensemble(
    landscape: Landscape,
    method: str,
    x0: np.ndarray,
    lr: float,
    steps: np.ndarray,
    grids: Sequence[Grid1D],
    *,
    batch_size: int = 1,
    sampling: str = "with_replacement",
    noise_factor: float | None = None,
    substeps: int = 1,
    temperature: float | None = None,
    seed: int = 0,
    basin_edges: Sequence[float] = (),
    escape_threshold: float | None = None,
    escape_direction: int = +1,
    params: Mapping[str, Any] | None = None,
) -> EnsembleResult:
    """Run one ensemble of ``len(x0)`` chains and stream its statistics at ``steps``.

    ``method`` is a registered method with a Monte Carlo kernel (``Method.kernel``).
    ``x0`` (chains, d) are the initial positions; ``steps`` (S,) non-decreasing SGD
    step counts of the snapshots (SDE time t = lr·step; steps[0] may be 0). ``grids``
    holds one :class:`Grid1D` per axis. ``noise_factor`` is Σ_b/Σ for ``sde``
    (default :func:`batch_noise_factor` of n, batch_size, sampling); ``temperature``
    T is required for ``langevin``. ``basin_edges`` are sorted interior basin
    boundaries on axis 0. A first passage is θ₀ > threshold for ``escape_direction``
    +1, θ₀ < threshold for −1. See the module docstring for the methods and the
    lost-chain convention. ``params`` are the method's own parameters, named as the fields
    of its config section (``Method.section``): ``{"l": 4}`` for ``svag`` (SVAG's l),
    ``{"sigma": 0.1}`` for ``sgd_noise`` (the standard deviation of the Gaussian added to
    the minibatch gradient); omitted ones take their defaults (l = 1, σ = 0).
    """
    if not isinstance(landscape, Landscape):
        raise ConfigError("landscape", f"expected a sgdsweep Landscape, got {type(landscape).__name__}")
    rec = mc_method(method)
    d, n = landscape.dim, landscape.n
    try:
        pos = np.array(x0, dtype=np.float64)
    except (TypeError, ValueError):
        raise ConfigError("x0", "expected an array of initial positions (chains, d)") from None
    if pos.ndim == 1 and d == 1:
        pos = pos[:, None]
    if pos.ndim != 2 or pos.shape[1] != d or pos.shape[0] < 1:
        raise ConfigError("x0", f"expected shape (chains, {d}), got {np.shape(x0)}")
    if not np.all(np.isfinite(pos)):
        raise ConfigError("x0", "initial positions must be finite")
    pos = np.ascontiguousarray(pos)
    lr = real(lr, "lr", positive=True)
    st = snapshot_steps(steps)
    grids = tuple(grids)
    if len(grids) != d or not all(isinstance(g, Grid1D) for g in grids):
        raise ConfigError("grids", f"expected {d} Grid1D (one per axis), got {grids!r}")
    if sampling not in SAMPLINGS:
        raise ConfigError("sampling", f"unknown {sampling!r} (known: {', '.join(SAMPLINGS)})")
    batch_size = integer(batch_size, "batch_size", 1)
    if batch_size > n:
        raise ConfigError("batch_size", f"{batch_size} is larger than the dataset (n = {n})")
    if noise_factor is None:
        noise_factor = batch_noise_factor(n, batch_size, sampling)
    noise_factor = real(noise_factor, "noise_factor", nonnegative=True)
    substeps = integer(substeps, "substeps", 1)
    if rec.kernel == LANGEVIN:
        if temperature is None:
            raise ConfigError("temperature", f"required for the {rec.name} method")
        temperature = real(temperature, "temperature", nonnegative=True)
    else:
        temperature = 0.0
    seed = integer(seed, "seed", 0)
    kp = kernel_params(rec, params)
    edges = np.asarray(basin_edges, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(edges)) or np.any(np.diff(edges) <= 0):
        raise ConfigError("basin_edges", f"must be finite and strictly increasing, got {list(edges)}")
    if escape_threshold is not None:
        escape_threshold = real(escape_threshold, "escape_threshold")
    if escape_direction not in (1, -1):
        raise ConfigError("escape_direction", f"must be +1 or -1, got {escape_direction!r}")
    return simulate(landscape, method, pos, lr, st, grids, batch_size=batch_size, sampling=sampling,
                    noise_factor=noise_factor, substeps=substeps, temperature=temperature, seed=seed,
                    basin_edges=edges, escape_threshold=escape_threshold,
                    escape_direction=escape_direction, params=kp)


def mc_method(name: str) -> Method:
    """The registered method ``name``, which must have a Monte Carlo kernel."""
    try:
        rec = get_method(name)
    except ConfigError as err:
        raise ConfigError("method", err.problem) from None
    if rec.kernel is None:
        raise ConfigError("method", f"{name!r} has no Monte Carlo kernel")
    return rec


def kernel_params(method: Method, params: Mapping[str, Any] | None) -> dict[str, Any]:
    """``params`` checked against the parameters of ``method``'s kernel, defaults filled in."""
    known = KERNEL_PARAMS.get(method.kernel, {})
    where = method.section or method.name
    extra = set(params or {}) - set(known)
    if extra:
        raise ConfigError(f"{where}.{sorted(extra)[0]}",
                          f"not a parameter of {method.name} (known: {', '.join(known) or 'none'})")
    out = {**known, **(params or {})}
    for key, default in known.items():
        if isinstance(default, int):
            out[key] = integer(out[key], f"{where}.{key}", default)
        else:
            out[key] = real(out[key], f"{where}.{key}", nonnegative=True)
    return out


def simulate(landscape: Landscape, method: str, pos: np.ndarray, lr: float, steps: np.ndarray,
             grids: Sequence[Grid1D], *, batch_size: int, sampling: str, noise_factor: float,
             substeps: int, temperature: float, seed: int, basin_edges: np.ndarray,
             escape_threshold: float | None, escape_direction: int,
             params: Mapping[str, Any] | None = None) -> EnsembleResult:
    """:func:`run_ensemble` without its checks, for callers whose input is already validated
    (``run_cell``'s parsed cell): ``pos`` (chains, d) float64 and C-contiguous, ``steps``
    int64 non-decreasing, ``temperature`` a float (0.0 unless ``langevin``), ``basin_edges``
    a float64 array, ``escape_direction`` ±1, ``params`` valid kernel parameters (SVAG's
    ``l`` ≥ 1, sgd_noise's ``sigma`` ≥ 0). It is not modified."""
    rec = get_method(method)
    params = params or {}
    d, n = landscape.dim, landscape.n
    chains = pos.shape[0]
    st, edges = steps, basin_edges
    has_esc = escape_threshold is not None
    thr = float(escape_threshold) if has_esc else 0.0
    lower = np.array([g.lower for g in grids], dtype=np.float64)
    upper = np.array([g.upper for g in grids], dtype=np.float64)
    dx = np.array([g.dx for g in grids], dtype=np.float64)
    cells = np.array([g.cells for g in grids], dtype=np.int64)

    # Chains are padded to a multiple of _LANES with frozen dummies (lost at step 0, never counted).
    padded = -(-chains // _LANES) * _LANES
    state = chain_states(stream_key(seed, rec.stream), padded)
    minibatch = rec.kernel in MINIBATCH_KERNELS
    needs_perm = minibatch and sampling != "with_replacement"
    perm = np.tile(np.arange(n, dtype=np.int64), (padded if needs_perm else 0, 1))
    cursor = np.full(padded, n, dtype=np.int64)  # n: the first step starts an epoch
    lost_step = np.full(padded, -1, dtype=np.int64)
    escape_step = np.full(padded, -1, dtype=np.int64)
    outside = np.any((pos < lower) | (pos > upper), axis=1)
    lost_step[:chains][outside] = 0
    lost_step[chains:] = 0
    if has_esc:
        escape_step[:chains][escape_direction * (pos[:, 0] - thr) > 0] = 0
    pos = np.concatenate([pos, np.tile(lower, (padded - chains, 1))])
    terms = _padded_terms_1d(landscape) if rec.kernel != GD else None
    scratch = np.zeros((padded, 3, d)) if terms is None else np.zeros((0, 3, d))
    covs = np.zeros((padded if terms is None else 0, 2, d, d))  # Σ and H per chain

    S = st.size
    ny = cells[1] if d == 2 else 1
    counts = np.zeros((S, cells[0], ny), dtype=np.int64)
    mean = np.empty((S, d))
    var = np.empty((S, d))
    basin_counts = np.zeros((S, edges.size + 1), dtype=np.int64)
    lost = np.empty(S, dtype=np.int64)
    ens = (pos, state, perm, cursor, lost_step, escape_step)
    svag_l = int(params.get("l", 1)) if rec.kernel == SVAG else 1
    a1, a2 = svag_coefficients(svag_l)
    dyn = Dyn(rec.kernel, SAMPLING_IDS[sampling], batch_size, lr, noise_factor, substeps, temperature,
              svag_l, a1, a2, float(params.get("sigma", 0.0)))
    esc = (has_esc, thr, float(escape_direction))
    current = 0
    for k in range(S):
        if st[k] > current:
            if terms is not None:
                kernel = _advance_sgd_1d if minibatch else _advance_noisy_1d
                over_blocks(kernel, padded // _LANES, ens, current, int(st[k]), dyn, (lower[0], upper[0]),
                            esc, (n, *terms))
            else:
                general_kernel(rec.kernel)(ens, current, int(st[k]), dyn, (lower, upper), esc,
                                           tuple(landscape.arrays), (scratch, covs))
            current = int(st[k])
        _accumulate(pos[:chains], lost_step[:chains], lower, dx, cells, edges, counts[k], mean[k], var[k],
                    basin_counts[k])
        lost[k] = np.count_nonzero(lost_step[:chains] >= 0)
    if d == 1:
        counts = counts[:, :, 0]
    return EnsembleResult(counts=counts, mean=mean, var=var, basin_counts=basin_counts, lost=lost,
                          escape_step=escape_step[:chains], chains=chains,
                          lost_step=lost_step[:chains])
