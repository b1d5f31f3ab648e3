"""How many cells one sweep store may hold, checked before any cell is planned.

Planning validates every cell (``parse_cell``); without interpolations in the
cells' config that costs about 0.3–0.7 ms a cell (2.2 ms with them), and a
sharded store holds ~0.03 files per cell (benchmarks/README.md). Above
:data:`MAX_CELLS` a single client and store stop being reasonable (minutes of
planning, a client holding every parsed cell), so a larger grid is refused up
front with the limit, instead of running for hours with no output. Split such a
grid over several stores.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from sgdsweep.errors import ConfigError

MAX_CELLS = 100_000


def check_cell_count(axes: Sequence[Any]) -> None:
    """Raise ConfigError when the grid of ``axes`` (each with ``.values``) exceeds MAX_CELLS."""
    n = math.prod(len(a.values) for a in axes)
    if n > MAX_CELLS:
        shape = " x ".join(f"{a.name}[{len(a.values)}]" for a in axes)
        raise ConfigError(f"grid: {n} cells ({shape}) exceeds the limit of {MAX_CELLS} cells per store; "
                          "split the sweep over several stores")
