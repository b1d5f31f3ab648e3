"""Threads for the Monte Carlo kernels: chain blocks dealt to Numba's thread count.

The kernels are serial loops over blocks of chains that release the GIL (``nogil``);
every chain's arithmetic is the same whichever thread runs its block, so results do not
depend on the thread count. The count is Numba's (``numba.set_num_threads``,
``NUMBA_NUM_THREADS``): a sweep's workers run one thread each.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numba


def over_blocks(kernel: Callable[..., Any], blocks: int, *args: Any) -> None:
    """Run ``kernel(*args, b0, b1)`` over contiguous ranges [b0, b1) that cover
    ``range(blocks)``, one range per thread (``numba.get_num_threads()``, at most ``blocks``)."""
    threads = max(1, min(numba.get_num_threads(), blocks))
    if threads == 1:
        kernel(*args, 0, blocks)
        return
    cuts = [blocks * k // threads for k in range(threads + 1)]
    with ThreadPoolExecutor(threads) as pool:
        for fut in [pool.submit(kernel, *args, cuts[k], cuts[k + 1]) for k in range(threads)]:
            fut.result()
