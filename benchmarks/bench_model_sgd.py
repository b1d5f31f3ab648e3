"""Chain-steps per second of minibatch SGD on models with d parameters, one thread, float64:
the compiled ensemble (sgdsweep.montecarlo.models) vs NumPy (vectorised over chains), JAX
(jit + vmap over chains, lax.fori_loop over steps) and PyTorch (hand-batched bmm).

Same work everywhere: SGD with replacement, b = 8, every chain its own minibatches.
Problems: linear regression on diabetes (d = 11, n = 442); a one-hidden-layer tanh MLP with the
binary cross-entropy on wine (class 0 vs the rest, hidden 7: d = 106, n = 178) and on digits
(digit < 5, hidden 15: d = 991, n = 1797). Before timing, the four are checked to compute the same
thing: 30 full-batch steps (every index once, i.e. GD) from the same start agree to 1e-10.

Run: python benchmarks/bench_model_sgd.py [--quick]   (needs `pip install -e ".[bench]"`)
"""

from __future__ import annotations

import os

# One thread everywhere; set before the libraries load.
os.environ["NUMBA_NUM_THREADS"] = "1"
os.environ["OMP_NUM_THREADS"] = "1"
os.environ["XLA_FLAGS"] = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"

import argparse
import platform
import time

import numpy as np
from sklearn.datasets import load_diabetes, load_digits, load_wine

from sgdsweep.models.kernels import CROSS_ENTROPY, LINEAR, MLP, SQUARED, n_params
from sgdsweep.montecarlo.models import ModelEnsemble

B = 8


def standardise(X):
    s = X.std(0)
    return (X - X.mean(0)) / np.where(s > 0, s, 1.0)


def problems():
    X, y = load_diabetes(return_X_y=True)
    X = np.hstack([standardise(X), np.ones((X.shape[0], 1))])
    lin = (LINEAR, SQUARED, 0, np.ascontiguousarray(X), (y - y.mean()) / y.std(), 0.0)
    yield "linear diabetes", lin, 0.02
    X, y = load_wine(return_X_y=True)
    wine = (MLP, CROSS_ENTROPY, 7, np.ascontiguousarray(standardise(X)), (y == 0).astype(float), 0.0)
    yield "MLP wine", wine, 0.1
    X, y = load_digits(return_X_y=True)
    yield "MLP digits", (MLP, CROSS_ENTROPY, 15, np.ascontiguousarray(standardise(X)), (y < 5).astype(float),
                         0.0), 0.1


# ---------------------------------------------------------------- NumPy (vectorised over chains)
def numpy_grad(args, th, idx):
    """(C, d) minibatch-mean gradients for index array idx (C, b)."""
    kind, loss, h, X, y, _ = args
    Xb, yb = X[idx], y[idx]  # (C, b, p), (C, b)
    b = idx.shape[1]
    if kind == LINEAR:
        r = np.einsum("cbp,cp->cb", Xb, th) - yb
        return np.einsum("cb,cbp->cp", r, Xb) / b
    C, p = th.shape[0], X.shape[1]
    W = th[:, : h * p].reshape(C, h, p)
    c = th[:, h * p : h * p + h]
    a = th[:, h * p + h : h * p + 2 * h]
    H = np.tanh(np.matmul(Xb, W.transpose(0, 2, 1)) + c[:, None, :])  # (C, b, h)
    f = np.einsum("cbh,ch->cb", H, a) + th[:, -1:]
    r = (f - yb if loss == SQUARED else 1.0 / (1.0 + np.exp(-f)) - yb) / b
    dZ = r[:, :, None] * a[:, None, :] * (1.0 - H * H)
    return np.concatenate([np.matmul(dZ.transpose(0, 2, 1), Xb).reshape(C, h * p), dZ.sum(1),
                           np.einsum("cb,cbh->ch", r, H), r.sum(1, keepdims=True)], axis=1)


def numpy_run(args, th, lr, steps, rng, idx=None):
    th = th.copy()
    n = args[3].shape[0]
    for _ in range(steps):
        ix = rng.integers(0, n, (th.shape[0], B)) if idx is None else idx
        th -= lr * numpy_grad(args, th, ix)
    return th


# ---------------------------------------------------------------- JAX (jit + vmap, fori_loop)
def jax_runner(args):
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)
    kind, loss, h, X, y, _ = args
    X, y = jnp.asarray(X), jnp.asarray(y)
    n, p = X.shape

    def chain_loss(th, idx):
        Xb, yb = X[idx], y[idx]
        if kind == LINEAR:
            f = Xb @ th
        else:
            W = th[: h * p].reshape(h, p)
            H = jnp.tanh(Xb @ W.T + th[h * p : h * p + h])
            f = H @ th[h * p + h : h * p + 2 * h] + th[-1]
        return jnp.mean(0.5 * (f - yb) ** 2 if loss == SQUARED else jax.nn.softplus(f) - yb * f)

    grad = jax.vmap(jax.grad(chain_loss))

    @jax.jit
    def run(th, lr, steps, key):
        def body(_, carry):
            th, key = carry
            key, sub = jax.random.split(key)
            idx = jax.random.randint(sub, (th.shape[0], B), 0, n)
            return th - lr * grad(th, idx), key
        return jax.lax.fori_loop(0, steps, body, (th, key))[0]

    @jax.jit
    def run_full(th, lr, steps, idx):
        return jax.lax.fori_loop(0, steps, lambda _, t: t - lr * grad(t, idx), th)

    return (lambda th, lr, steps, seed: np.asarray(run(jnp.asarray(th), lr, steps, jax.random.key(seed)))), \
        (lambda th, lr, steps, idx: np.asarray(run_full(jnp.asarray(th), lr, steps, jnp.asarray(idx))))


# ---------------------------------------------------------------- PyTorch (hand-batched bmm)
def torch_runner(args):
    import torch

    torch.set_num_threads(1)
    kind, loss, h, X, y, _ = args
    X = torch.from_numpy(X)
    y = torch.from_numpy(y)
    n, p = X.shape

    def grad(th, idx):
        Xb, yb = X[idx], y[idx]
        b = idx.shape[1]
        if kind == LINEAR:
            r = torch.bmm(Xb, th.unsqueeze(2)).squeeze(2) - yb
            return torch.bmm(r.unsqueeze(1), Xb).squeeze(1) / b
        C = th.shape[0]
        W = th[:, : h * p].reshape(C, h, p)
        a = th[:, h * p + h : h * p + 2 * h]
        H = torch.tanh(torch.baddbmm(th[:, h * p : h * p + h].unsqueeze(1), Xb, W.transpose(1, 2)))
        f = torch.bmm(H, a.unsqueeze(2)).squeeze(2) + th[:, -1:]
        r = (f - yb if loss == SQUARED else torch.sigmoid(f) - yb) / b
        dZ = r.unsqueeze(2) * a.unsqueeze(1) * (1.0 - H * H)
        return torch.cat([torch.bmm(dZ.transpose(1, 2), Xb).reshape(C, h * p), dZ.sum(1),
                          torch.bmm(r.unsqueeze(1), H).squeeze(1), r.sum(1, keepdim=True)], dim=1)

    def run(th, lr, steps, seed, idx=None):
        gen = torch.Generator().manual_seed(seed)
        t = torch.from_numpy(th.copy())
        with torch.no_grad():
            for _ in range(steps):
                ix = torch.randint(0, n, (t.shape[0], B), generator=gen) if idx is None else idx
                t -= lr * grad(t, ix)
        return t.numpy()

    return run, (lambda th, lr, steps, idx: run(th, lr, steps, 0, torch.from_numpy(idx)))


def timed(f):
    """(CPU seconds of this process, result): on a shared machine CPU time, not wall time, is
    the cost; every library runs on one thread, so the two agree on a quiet machine."""
    t = time.process_time()
    out = f()
    return time.process_time() - t, out


def measure(args, th, lr, steps, jrun, trun):
    """(seconds, final positions) of each implementation, same start, independent streams."""
    ours = ModelEnsemble(args, "sgd", th, lr, batch_size=B, seed=1)
    return {"ours": timed(lambda: ours.advance(steps).positions),
            "numpy": timed(lambda: numpy_run(args, th, lr, steps, np.random.default_rng(1))),
            "jax": timed(lambda: jrun(th, lr, steps, 1)),
            "torch": timed(lambda: trun(th, lr, steps, 1))}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer steps (smoke run)")
    ap.add_argument("--only", default="", help="run only problems whose name contains this")
    opt = ap.parse_args()
    import jax
    import torch

    print(f"machine: {platform.processor() or platform.machine()}, load {os.getloadavg()}, "
          f"numpy {np.__version__}, jax {jax.__version__}, torch {torch.__version__}")
    print("chain-steps per CPU second (one thread, float64); ratio = ours / other")
    for name, args, lr in problems():
        if opt.only not in name:
            continue
        kind, _, h, X, _, _ = args
        n, p = X.shape
        d = n_params(kind, p, h)
        jrun, jfull = jax_runner(args)
        trun, tfull = torch_runner(args)
        # Same thing: 30 full-batch steps (idx = every sample once) from one start.
        th0 = 0.3 * np.random.default_rng(0).standard_normal((4, d))
        full = np.tile(np.arange(n), (4, 1))
        ref = ModelEnsemble(args, "gd", th0, lr).advance(30).positions
        errs = {"numpy": numpy_run(args, th0, lr, 30, None, full), "jax": jfull(th0, lr, 30, full),
                "torch": tfull(th0, lr, 30, full)}
        err = {k: float(np.max(np.abs(v - ref))) for k, v in errs.items()}
        assert max(err.values()) < 1e-10, err
        print(f"\n{name}: d = {d}, n = {n}, b = {B}; GD check max |Δθ| vs ours: "
              + ", ".join(f"{k} {v:.1e}" for k, v in err.items()))
        for chains in (1000, 10000):
            # d ≈ 1,000 runs fewer steps to fit the shared machine's time (rates are per chain-step).
            steps = 1000 if d < 500 else 200
            if chains == 10000 and d > 500:
                steps = 50
            if opt.quick:
                steps = max(steps // 20, 5)
            th = 0.1 * np.random.default_rng(1).standard_normal((chains, d))
            ModelEnsemble(args, "sgd", th[:2], lr, batch_size=B).advance(2)  # compile (cached)
            jrun(th, lr, 2, 0)  # compile at these shapes
            res = measure(args, th, lr, steps, jrun, trun)
            rate = {k: chains * steps / v[0] for k, v in res.items()}
            # Same law: mean over chains of |θ|² agrees within Monte Carlo error (independent streams).
            q = {k: np.sum(v[1] ** 2, axis=1) for k, v in res.items()}
            se = np.sqrt(2) * q["ours"].std() / np.sqrt(chains)
            zs = {k: (q[k].mean() - q["ours"].mean()) / se for k in q if k != "ours"}
            print(f"  {chains:>6} chains × {steps} steps: "
                  + ", ".join(f"{k} {rate[k]:.3g}/s" for k in rate)
                  + " | ours/numpy {:.2f}, ours/jax {:.2f}, ours/torch {:.2f}".format(
                      rate["ours"] / rate["numpy"], rate["ours"] / rate["jax"], rate["ours"] / rate["torch"])
                  + " | mean|θ|² z vs ours: " + ", ".join(f"{k} {v:+.1f}" for k, v in zs.items()))


if __name__ == "__main__":
    main()
