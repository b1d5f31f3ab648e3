"""Monte Carlo ensembles of SGD and its relatives on models with many parameters.

Chains θ ∈ R^d of a model given by its kernel bundle ``args`` = (kind, loss, hidden, X, y, l2)
(:mod:`sgdsweep.models.kernels`; L(θ) = (1/n) Σ_i l_i(θ), g_i = ∇l_i, G = ∇L). Time is counted in
SGD steps k; the SDE time is t = η·k (η = ``lr``). Methods:

* ``sgd``: θ ← θ − η·(1/b) Σ_{i∈B} g_i(θ). Minibatches ``with_replacement`` (b iid uniform
  indices), ``without_replacement`` (b distinct indices per step) or ``reshuffle`` (a fresh
  per-chain permutation each epoch cut into consecutive batches; ⌊n/b⌋ steps per epoch, the
  last n mod b indices dropped, like ``drop_last``).
* ``gd``: θ ← θ − η G(θ) (full batch, deterministic).
* ``sde``: Itô Euler–Maruyama of dθ = −G dt + sqrt(η Σ_b(θ)) dW with ``substeps`` steps per SGD
  step (dt = η/substeps), Σ_b = (noise_factor/b)·Σ, Σ(θ) = (1/n) Σ_i (g_i − G)(g_i − G)ᵀ. The
  noise is sqrt(η·dt·noise_factor/b)·u with u = (1/√n) Σ_i ξ_i (g_i − G), ξ_i iid N(0, 1), whose
  covariance is exactly Σ(θ): no d×d factorisation. ``noise_factor`` defaults to b times
  :func:`sgdsweep.landscapes.noise.batch_noise_factor`: 1 with replacement, (n − b)/(n − 1)
  without (and for reshuffling, per step marginally).
* ``langevin``: dθ = −G dt + sqrt(2T) dW, same dt; stationary law ∝ exp(−L/T).
* ``svag``: l steps of η/l per SGD step, each with a₁ḡ_{B1} + a₂ḡ_{B2} of two independent
  minibatches, a₁,₂ = (1 ± √(2l − 1))/2; on SGD's stream, so l = 1 is ``sgd`` bit for bit.
* ``sgd_noise``: ``sgd`` plus η σ z (z standard normal per axis, σ = ``grad_noise``), z hashed
  from the stream state and the step without advancing it: σ = 0 is ``sgd`` bit for bit.

Each chain owns a counter-based stream (:mod:`sgdsweep.montecarlo.rng`) keyed by (seed, stream,
chain); ``stream`` defaults to the low-dimensional ensemble's ids (sgd, svag, sgd_noise 0; sde 1;
langevin 2; gd 3). Results are bit-identical for any thread count and snapshot schedule.

A chain whose θ turns non-finite or leaves abs(θ_k) ≤ ``bound`` (any k) is frozen and lost from the
SGD step it left at (``lost_step``; −1 while alive; 0 if θ₀ is already outside).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from sgdsweep.errors import ConfigError
from sgdsweep.landscapes.noise import SAMPLINGS, batch_noise_factor
from sgdsweep.models.kernels import CROSS_ENTROPY, LINEAR, MLP, SQUARED, n_params, work_size
from sgdsweep.montecarlo import model_kernels as mk
from sgdsweep.montecarlo.rng import chain_states, stream_key
from sgdsweep.validate import integer, real

METHOD_IDS = {"sgd": mk.SGD, "sde": mk.SDE, "langevin": mk.LANGEVIN, "gd": mk.GD, "svag": mk.SVAG,
              "sgd_noise": mk.SGD_NOISE}
STREAM_IDS = {"sgd": 0, "sde": 1, "langevin": 2, "gd": 3, "svag": 0, "sgd_noise": 0}
SAMPLING_IDS = {"with_replacement": mk.WITH, "without_replacement": mk.WITHOUT, "reshuffle": mk.RESHUFFLE}
assert set(SAMPLING_IDS) == set(SAMPLINGS)
# Scratch rows per chain: minibatch gradient(s); G, Σ ξ_i g_i and g_i for the SDE.
_SCRATCH_ROWS = {"sgd": 1, "sgd_noise": 1, "svag": 2, "gd": 1, "langevin": 1, "sde": 3}


def check_model_args(args: Any) -> tuple:
    """The kernel bundle (kind, loss, hidden, X, y, l2), checked; arrays made float64 C-contiguous."""
    if not isinstance(args, tuple | list) or len(args) != 6:
        raise ConfigError("args: expected the kernel bundle (kind, loss, hidden, X, y, l2)")
    kind, loss, hidden, X, y, l2 = args
    if kind not in (LINEAR, MLP):
        raise ConfigError(f"args.kind: expected LINEAR ({LINEAR}) or MLP ({MLP}), got {kind!r}")
    if loss not in (SQUARED, CROSS_ENTROPY):
        raise ConfigError(f"args.loss: expected SQUARED ({SQUARED}) or CROSS_ENTROPY ({CROSS_ENTROPY}), "
                          f"got {loss!r}")
    hidden = integer(hidden, "args.hidden", 1 if kind == MLP else 0)
    X = np.ascontiguousarray(X, dtype=np.float64)
    y = np.ascontiguousarray(y, dtype=np.float64)
    if X.ndim != 2 or X.shape[0] < 1 or X.shape[1] < 1:
        raise ConfigError(f"args.X: expected a non-empty (n, p) array, got shape {X.shape}")
    if y.shape != (X.shape[0],):
        raise ConfigError(f"args.y: expected shape ({X.shape[0]},), got {y.shape}")
    if not (np.all(np.isfinite(X)) and np.all(np.isfinite(y))):
        raise ConfigError("args.X: features and targets must be finite")
    l2 = real(l2, "args.l2")
    if l2 < 0:
        raise ConfigError(f"args.l2: must be >= 0, got {l2}")
    return (int(kind), int(loss), hidden, X, y, l2)


def _svag_weights(l: int) -> tuple[float, float]:
    root = math.sqrt(2 * l - 1)
    return 0.5 * (1.0 + root), 0.5 * (1.0 - root)


class ModelEnsemble:
    """``len(theta0)`` chains of one method on one model; see the module docstring.

    ``theta0`` (chains, d) float64 initial parameters; ``lr`` η > 0; ``noise_factor`` b·Σ_b/Σ of
    the ``sde`` (default 1 with replacement, (n − b)/(n − 1) otherwise); ``temperature`` T ≥ 0
    (``langevin`` only, required); ``svag_l`` SVAG's l; ``grad_noise`` σ of ``sgd_noise``;
    ``bound`` the box abs(θ_k) ≤ bound outside which chains are lost. :meth:`advance` moves every
    chain to a later SGD step; ``positions`` (chains, d), ``lost_step`` (chains,) and ``step``
    are the current state (views: copy them to keep a snapshot).
    """

    def __init__(self, args: Any, method: str, theta0: Any, lr: float, *, batch_size: int = 1,
                 sampling: str = "with_replacement", noise_factor: float | None = None,
                 substeps: int = 1, temperature: float | None = None, seed: int = 0,
                 stream: int | None = None, svag_l: int = 1, grad_noise: float = 0.0,
                 bound: float = 1e6) -> None:
        args = check_model_args(args)
        kind, _, hidden, X, _, _ = args
        n, p = X.shape
        d = n_params(kind, p, hidden)
        if method not in METHOD_IDS:
            raise ConfigError(f"method: unknown {method!r} (known: {', '.join(METHOD_IDS)})")
        try:
            pos = np.array(theta0, dtype=np.float64)
        except (TypeError, ValueError):
            raise ConfigError("theta0: expected an array of initial parameters (chains, d)") from None
        if pos.ndim != 2 or pos.shape[1] != d or pos.shape[0] < 1:
            raise ConfigError(f"theta0: expected shape (chains, {d}), got {pos.shape}")
        if not np.all(np.isfinite(pos)):
            raise ConfigError("theta0: initial parameters must be finite")
        lr = real(lr, "lr")
        if lr <= 0:
            raise ConfigError(f"lr: must be > 0, got {lr}")
        if sampling not in SAMPLING_IDS:
            raise ConfigError(f"sampling: unknown {sampling!r} (known: {', '.join(SAMPLING_IDS)})")
        batch_size = integer(batch_size, "batch_size", 1)
        if batch_size > n:
            raise ConfigError(f"batch_size: {batch_size} is larger than the dataset (n = {n})")
        if noise_factor is None:
            noise_factor = batch_size * batch_noise_factor(n, batch_size, sampling)
        noise_factor = real(noise_factor, "noise_factor")
        if noise_factor < 0:
            raise ConfigError(f"noise_factor: must be >= 0, got {noise_factor}")
        substeps = integer(substeps, "substeps", 1)
        if method == "langevin":
            if temperature is None:
                raise ConfigError("temperature: required for the langevin method")
            temperature = real(temperature, "temperature")
            if temperature < 0:
                raise ConfigError(f"temperature: must be >= 0, got {temperature}")
        else:
            temperature = 0.0
        seed = integer(seed, "seed", 0)
        stream = STREAM_IDS[method] if stream is None else integer(stream, "stream", 0)
        svag_l = integer(svag_l, "svag_l", 1)
        grad_noise = real(grad_noise, "grad_noise")
        if grad_noise < 0:
            raise ConfigError(f"grad_noise: must be >= 0, got {grad_noise}")
        bound = real(bound, "bound", positive=True)

        chains = pos.shape[0]
        self.args = args
        self.method = method
        self.chains = chains
        self.d = d
        self._pos = np.ascontiguousarray(pos)
        self._state = chain_states(stream_key(seed, stream), chains)
        needs_perm = method in ("sgd", "svag", "sgd_noise") and sampling != "with_replacement"
        self._perm = np.tile(np.arange(n, dtype=np.int64), (chains if needs_perm else 0, 1))
        self._cursor = np.full(chains, n, dtype=np.int64)  # n: the first step starts an epoch
        self._lost = np.full(chains, -1, dtype=np.int64)
        self._lost[np.any(~(np.abs(pos) <= bound), axis=1)] = 0
        self._scratch = np.zeros((chains, _SCRATCH_ROWS[method], d))
        minibatches = method in ("sgd", "svag", "sgd_noise")
        self._idx = np.zeros((chains if minibatches else 0, batch_size), dtype=np.int64)
        buf = mk.minibatch_buffer_size(kind, p, hidden, batch_size)
        self._buf = np.zeros((chains if minibatches else 0, buf))
        self._work = np.zeros((chains, work_size(hidden)))
        a1, a2 = _svag_weights(svag_l)
        self._dyn = (METHOD_IDS[method], SAMPLING_IDS[sampling], batch_size, lr, noise_factor / batch_size,
                     substeps, temperature, svag_l, a1, a2, grad_noise, bound)
        self._step = 0

    @property
    def positions(self) -> np.ndarray:
        """(chains, d) current parameters (lost chains: where they were frozen)."""
        return self._pos

    @property
    def lost_step(self) -> np.ndarray:
        """(chains,) int64: the SGD step each chain was lost at, −1 if never."""
        return self._lost

    @property
    def step(self) -> int:
        """The SGD step every chain has reached."""
        return self._step

    def advance(self, to_step: int) -> ModelEnsemble:
        """Run every chain on to SGD step ``to_step`` (≥ the current step)."""
        to_step = integer(to_step, "to_step", self._step)
        if to_step > self._step:
            ens = (self._pos, self._state, self._perm, self._cursor, self._lost, self._idx, self._buf)
            mk.advance(self.args, ens, self._step, to_step, self._dyn, self._scratch, self._work)
            self._step = to_step
        return self


def snapshot_stats(args: Any, positions: Any, lost_mask: Any, *, directions: Any, theta_ref: Any,
                   proj_edges: Any, max_cov_dim: int = 64,
                   quantiles: Sequence[float] = (0.05, 0.5, 0.95)) -> dict[str, Any]:
    """Statistics of the live chains (``lost_mask`` False) at one snapshot.

    Returns ``mean`` (d,), ``cov`` (population covariance, d×d when d ≤ ``max_cov_dim``, else
    its diagonal (d,)), ``loss_mean`` and ``loss_quantiles`` of the full-batch loss L(θ_c),
    ``grad_norm_mean`` and ``grad_norm_quantiles`` of ‖G(θ_c)‖, ``proj`` (k, chains) the
    projections (θ_c − θ_ref)·v_k on the rows of ``directions`` (k, d) (NaN for lost chains),
    ``proj_counts`` (k, cells) their histogram on the rows of ``proj_edges`` (k, cells + 1)
    (cell j is [e_j, e_{j+1}), the last one closed; live chains outside the edges are not
    counted), and ``alive``. Sums run in chain order: deterministic for any thread count. With
    no live chain the means and quantiles are NaN.
    """
    args = check_model_args(args)
    kind, _, hidden, X, _, _ = args
    d = n_params(kind, X.shape[1], hidden)
    pos = np.ascontiguousarray(positions, dtype=np.float64)
    if pos.ndim != 2 or pos.shape[1] != d:
        raise ConfigError(f"positions: expected shape (chains, {d}), got {pos.shape}")
    chains = pos.shape[0]
    lost = np.asarray(lost_mask)
    if lost.shape != (chains,) or lost.dtype != np.bool_:
        raise ConfigError(f"lost_mask: expected a boolean array of shape ({chains},)")
    alive = ~lost
    dirs = np.ascontiguousarray(directions, dtype=np.float64)
    if dirs.ndim != 2 or dirs.shape[1] != d:
        raise ConfigError(f"directions: expected shape (k, {d}), got {dirs.shape}")
    ref = np.ascontiguousarray(theta_ref, dtype=np.float64)
    if ref.shape != (d,):
        raise ConfigError(f"theta_ref: expected shape ({d},), got {ref.shape}")
    edges = np.asarray(proj_edges, dtype=np.float64)
    if edges.ndim != 2 or edges.shape[0] != dirs.shape[0] or edges.shape[1] < 2:
        raise ConfigError(f"proj_edges: expected shape ({dirs.shape[0]}, cells + 1), got {edges.shape}")
    if not np.all(np.isfinite(edges)) or np.any(np.diff(edges, axis=1) <= 0):
        raise ConfigError("proj_edges: each row must be finite and strictly increasing")
    max_cov_dim = integer(max_cov_dim, "max_cov_dim", 0)
    q = np.asarray(quantiles, dtype=np.float64)
    if q.ndim != 1 or np.any(~(q >= 0) | ~(q <= 1)):
        raise ConfigError(f"quantiles: expected probabilities in [0, 1], got {list(np.ravel(q))}")

    full = d <= max_cov_dim
    mean = np.empty(d)
    cov = np.empty((d, d) if full else (1, d))
    mk.moments(pos, alive, full, mean, cov)
    loss = np.empty(chains)
    norm = np.empty(chains)
    mk.loss_and_grad_norm(args, pos, alive, np.zeros((chains, d)), np.zeros((chains, work_size(hidden))),
                          loss, norm)
    proj = np.empty((dirs.shape[0], chains))
    mk.projections(pos, alive, dirs, ref, proj)
    cells = edges.shape[1] - 1
    counts = np.zeros((dirs.shape[0], cells), dtype=np.int64)
    for k in range(dirs.shape[0]):
        x = proj[k, alive]
        j = np.searchsorted(edges[k], x, side="right") - 1
        j[x == edges[k, -1]] = cells - 1
        inside = (j >= 0) & (j < cells)
        counts[k] = np.bincount(j[inside], minlength=cells)
    n_alive = int(alive.sum())

    def summary(v: np.ndarray) -> tuple[float, np.ndarray]:
        if n_alive == 0:
            return math.nan, np.full(q.shape, np.nan)
        return float(np.mean(v[alive])), np.quantile(v[alive], q)

    loss_mean, loss_q = summary(loss)
    norm_mean, norm_q = summary(norm)
    return {"mean": mean, "cov": cov if full else cov[0], "loss_mean": loss_mean, "loss_quantiles": loss_q,
            "grad_norm_mean": norm_mean, "grad_norm_quantiles": norm_q, "proj": proj,
            "proj_counts": counts, "alive": n_alive}
