"""The cell's layout without computing it: the dims of every variable, the stationary kinds,
and the memory a cell needs (:func:`cell_memory`, checked by :func:`check_memory` when a cell
is parsed, before anything is allocated).

:func:`~sgdsweep.cell.run.cell_template` builds its Dataset from :func:`layout_dims`.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

from sgdsweep.cell.schema import RUNTIME
from sgdsweep.errors import ConfigError
from sgdsweep.fokker_planck.conventions import CONVENTIONS

#: A parsed cell (:class:`sgdsweep.cell.config.CellConfig`, which imports this module).
CellConfig = Any

#: The exact shape of the minibatch gradient noise on the grid (per axis).
NOISE_SHAPE_VARS = ("noise_skewness", "noise_kurtosis")

#: Stationary references of every cell: the FP null vector per convention, and Gibbs.
STATIONARY_KINDS = (*CONVENTIONS, "gibbs")
#: Per-cell numbers of the FP stationary state of the cell's convention (see ATTRS).
STATIONARY_SUMMARY = ("stationary_mean_abs_current", "stationary_circulation", "stationary_kl_gibbs",
                      "stationary_min_density", "fp_monotone_violation", "fp_negative_offdiag",
                      "fp_degenerate")


def stationary_kinds(cell: CellConfig) -> list[str]:
    """Stationary kinds: the built-in ones, then those the cell's methods provide."""
    kinds = list(STATIONARY_KINDS)
    for m in cell.method_specs:
        kinds += [k for k in m.stationary if k not in kinds]
    return kinds


def layout_dims(cell: CellConfig) -> dict[str, tuple[str, ...]]:
    """The dims of every variable of the cell's own layout (the methods' variables aside)."""
    if cell.dim == 1:
        space: tuple[str, ...] = ("x",)
        moment = ("method", "t")
        landscape_vars = {k: ("x",) for k in ("loss", "grad_mean", "grad_var", "diffusion",
                                              *NOISE_SHAPE_VARS, "noise_to_signal")}
        vector: tuple[str, ...] = ()
        extra: dict[str, tuple[str, ...]] = {
            "basin_mass": ("method", "t", "basin"),
            "escape_time_exact": (),
            "escape_threshold": (),
        }
    else:
        space = ("x", "y")
        vector = ("axis",)
        moment = ("method", "t", "axis")
        landscape_vars = {"loss": ("x", "y"), "grad_mean": ("x", "y", "axis"),
                          "grad_var": ("x", "y", "axis"), "noise_to_signal": ("x", "y"),
                          **{k: ("x", "y", "axis") for k in NOISE_SHAPE_VARS}}
        extra = {}
    extra.update({
        "stationary": ("kind", *space),
        # The probability current J at cell centres (NaN for methods and kinds without one).
        "current": ("method", "t", *space, *vector),
        "stationary_current": ("kind", *space, *vector),
        **{name: () for name in STATIONARY_SUMMARY},
    })
    dims = {
        "density": ("method", "t", *space),
        "mean": moment, "std": moment,
        "lost_fraction": ("method", "t"),
        "tv": ("method", "t"), "kl": ("method", "t"), "w1": ("method", "t"),
        "escape_time_mean": ("method",),
        "escaped_fraction": ("method",),
        "escape_time_mle": ("method",),
        "escape_time_mle_se": ("method",),
        "escape_count": ("method",),
        **landscape_vars,
        **extra,
        "temperature": (),
        RUNTIME: (),
    }
    if cell.dim == 1:
        dims["escape_time_exact_error"] = ()
    return dims


@dataclass(frozen=True)
class CellMemory:
    """:func:`cell_memory`'s estimate, in elements of 8 bytes, by part."""

    result: int  # every variable of the cell's Dataset
    landscape: int  # Landscape.evaluate on the density grid
    fp: int  # Fokker–Planck densities on the refined grid and the stationary references
    chains: int  # the Monte Carlo chains' state

    @property
    def bytes(self) -> int:
        return 8 * (self.result + self.landscape + self.fp + self.chains)


def cell_memory(cell: CellConfig) -> CellMemory:
    """An estimate of ``run_cell``'s peak memory from the cell's layout alone (nothing is
    computed or allocated): a lower bound (measured peaks are ~2× it; a method's own
    operator, such as a transfer matrix, comes on top).

    The result (every variable of the layout, the methods' own included, 8 bytes an
    element; basins: those named by the landscape, else 2), the landscape evaluated on the
    density grid (loss, gradient, covariance, Hessian and the n per-sample gradients at
    each point), the Fokker–Planck densities on the refined grid (1-D: snapshots × cells ×
    ``fp.refine`` per density method, and one per stationary kind), and the chains' state
    (position and bookkeeping, 6 words a chain and axis).
    """
    if not hasattr(cell, "grids"):  # a model cell
        return _model_cell_memory(cell)
    cells = [g.cells for g in cell.grids]
    points = math.prod(cells)
    density = sum(1 for m in cell.method_specs if m.kind == "density")
    basins = len(cell.landscape.basins) if cell.landscape.basins else 2
    sizes = {"x": cells[0], "y": cells[-1], "t": len(cell.times), "method": len(cell.methods),
             "kind": len(stationary_kinds(cell)), "basin": basins, "axis": 2}
    dims = [*layout_dims(cell).values(), *(v.dims for m in cell.method_specs for v in m.variables.values())]
    d = cell.dim
    fine = points * (cell.fp_refine if d == 1 else 1)
    return CellMemory(result=sum(math.prod(sizes[k] for k in dd) for dd in dims),
                      landscape=points * (1 + d + 2 * d * d + cell.landscape.n * d),
                      fp=fine * (len(cell.times) * density + sizes["kind"]),
                      chains=6 * cell.chains * d)


def _model_cell_memory(cell: CellConfig) -> CellMemory:
    """:func:`cell_memory` of a cell on a model (:class:`~sgdsweep.cell.model_config.ModelCellConfig`):
    the result (every variable of :func:`~sgdsweep.cell.model_schema.variables`, the full
    covariance per method and snapshot up to ``models.max_cov_dim``); as "landscape" the data,
    the per-sample gradients at θ* (n × d), the dense Hessian and noise covariance with their
    inverse and eigenvectors (4 d², where they are formed: d ≤ 2000) and, for least squares, the
    dense d² × d² moment operator up to :data:`~sgdsweep.models.moments.DENSE_MAX`; the chains'
    state (position, one scratch row and the snapshot's gradients: 3 words a chain and parameter;
    the batch's indices, the projections, loss, gradient norm and bookkeeping: b + k + 4 a chain).
    Measured peaks are ~3× it (``benchmarks/README.md``)."""
    from sgdsweep.cell.model_schema import MODEL_KINDS, QUANTILES, variables
    from sgdsweep.models.moments import DENSE_MAX

    d, n = cell.model.d, cell.model.n
    full = d <= cell.models.max_cov_dim
    sizes = {"method": len(cell.methods), "t": len(cell.times), "x": cell.grid.cells,
             "direction": cell.models.directions + len(cell.models.project_on),
             "rank": cell.models.directions, "param": d,
             "param2": d, "kind": len(MODEL_KINDS), "quantile": len(QUANTILES)}
    dims = [*variables(full).values(), *(v.dims for m in cell.method_specs for v in m.variables.values())]
    dense = 4 * d * d if d <= 2000 else 0
    moments = d**4 if cell.model.kind == "linear_regression" and d <= DENSE_MAX else 0
    return CellMemory(result=sum(math.prod(sizes.get(k, 1) for k in dd) for dd in dims),
                      landscape=n * (cell.model.data.p + 1 + d) + dense + moments, fp=0,
                      chains=cell.chains * (3 * d + cell.batch_size + sizes["direction"] + 4))


def machine_memory() -> int:
    """This machine's physical memory in bytes (0 where the OS does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


def check_memory(cell: CellConfig, limit: int | None = None, where: str | None = None) -> None:
    """ConfigError naming the field when :func:`cell_memory` (a lower bound) exceeds ``limit``
    bytes (default: this machine's memory, which no process can exceed); ``where`` says
    whose memory the limit is. The field is ``mc.chains`` when the chains dominate, else
    ``density_grid.cells``."""
    need = cell_memory(cell)
    if limit is None:
        limit, where = machine_memory(), "this machine's memory"
    if limit <= 0 or need.bytes <= limit:
        return
    raise ConfigError(f"{_memory_field(cell, need, limit)}: a cell needs at least {_size(need.bytes)} of "
                      f"memory ({_KNOBS[hasattr(cell, 'grids')]}), more than {_size(limit)} ({where}); "
                      "use fewer of them")


#: What sizes a cell's memory, for term cells (True) and model cells (False).
_KNOBS = {True: "density_grid.cells, time.snapshots, methods and mc.chains",
          False: "the model's parameters and data, time.snapshots, models.max_cov_dim, methods and mc.chains"}


def _memory_field(cell: CellConfig, need: CellMemory, limit: int) -> str:
    """The field to change: for a model cell, the model itself when its own part cannot fit
    whatever the chains; else the part of ``need`` that dominates."""
    model = not hasattr(cell, "grids")
    if model and 8 * need.landscape > limit:
        return "landscape"
    if 2 * need.chains > need.bytes / 8:
        return "mc.chains"
    if not model:
        return "density_grid.cells"
    if 2 * need.result > need.bytes / 8:
        return "models.max_cov_dim" if cell.model.d <= cell.models.max_cov_dim else "time.snapshots"
    return "landscape"


def _size(n: int) -> str:
    """Bytes in binary units, as Dask writes them (``4.66 TiB``)."""
    for unit, scale in (("PiB", 2**50), ("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("kiB", 2**10)):
        if n >= 0.9 * scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n} B"
