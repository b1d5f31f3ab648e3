"""Counter-based random streams for the Monte Carlo kernels.

Every chain owns one splitmix64 stream: its 64-bit state starts at a hash of
(master seed, method id, chain index) and advances by a fixed odd increment per
draw; each draw is the splitmix64 finaliser of the state. A draw therefore
depends only on (seed, method, chain, draw number) — never on which thread or
process advanced the chain — which makes ensembles bit-identical for any thread
count. Streams of different chains start at hashed, effectively random points of
the 2^64 cycle, so overlaps within realistic run lengths have probability
~ chains² · draws / 2^64.

Kernels keep the state in a local ``uint64`` and thread it through the draw
helpers, which return ``(new_state, value)``.
"""

from __future__ import annotations

import numba as nb
import numpy as np

_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S11 = np.uint64(11)
_S27 = np.uint64(27)
_S30 = np.uint64(30)
_S31 = np.uint64(31)
_S32 = np.uint64(32)
_ONE = np.uint64(1)
_TWO_M53 = 1.0 / 9007199254740992.0  # 2^-53
_TWO_PI = 2.0 * np.pi
_MASK64 = (1 << 64) - 1


@nb.njit(cache=True, inline="always")
def mix64(z):
    """splitmix64 finaliser: a bijective avalanche hash of a uint64."""
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    return z ^ (z >> _S31)


def _mix64_int(z: int) -> int:
    z &= _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def stream_key(seed: int, stream: int) -> np.uint64:
    """Key of one family of chain streams (e.g. one Monte Carlo method) under a master seed."""
    return np.uint64(_mix64_int(_mix64_int(int(seed)) ^ _mix64_int(int(stream) + 0x5EED)))


@nb.njit(cache=True)
def chain_states(key, chains):
    """Initial stream state of every chain, shape (chains,) uint64."""
    out = np.empty(chains, dtype=np.uint64)
    for c in range(chains):
        out[c] = mix64(key ^ mix64(np.uint64(c) + _ONE))
    return out


@nb.njit(cache=True, inline="always")
def next_u64(st):
    st = st + _GAMMA
    return st, mix64(st)


@nb.njit(cache=True, inline="always")
def next_uniform(st):
    """Uniform double on [0, 1) with 53 random bits."""
    st, x = next_u64(st)
    return st, float(x >> _S11) * _TWO_M53


@nb.njit(cache=True, inline="always")
def side_uniform(st, salt):
    """A uniform on [0, 1) hashed from a stream state without advancing it.

    For occasional extra decisions (e.g. a Brownian-bridge crossing test) that must
    not shift the stream, so that positions stay identical with or without them.
    """
    return float(mix64(st ^ salt) >> _S11) * _TWO_M53


_SIDE_PAIR = np.uint64(0x6A09E667F3BCC909)


@nb.njit(cache=True, inline="always")
def side_normal_pair(st, salt):
    """Two independent standard normals (Box–Muller) hashed from a stream state with
    :func:`side_uniform`, without advancing it; ``salt`` must differ per use (e.g. mix the
    step number in) so that a state that does not move between uses gives fresh values."""
    u1 = side_uniform(st, salt)
    u2 = side_uniform(st, salt ^ _SIDE_PAIR)
    rad = np.sqrt(-2.0 * np.log(1.0 - u1))
    ang = _TWO_PI * u2
    return rad * np.cos(ang), rad * np.sin(ang)


@nb.njit(cache=True, inline="always")
def next_below(st, n):
    """Integer in [0, n) by Lemire's multiply-shift on 32 random bits (bias ≤ n / 2^32)."""
    st, x = next_u64(st)
    return st, np.int64(((x >> _S32) * np.uint64(n)) >> _S32)


@nb.njit(cache=True, inline="always")
def next_normal_pair(st):
    """Two independent standard normals (Box–Muller)."""
    st, u1 = next_uniform(st)
    st, u2 = next_uniform(st)
    rad = np.sqrt(-2.0 * np.log(1.0 - u1))  # 1 − u1 ∈ (0, 1]: log stays finite
    ang = _TWO_PI * u2
    return st, rad * np.cos(ang), rad * np.sin(ang)
