"""Density methods from one-step operators: SGD's own transfer operator (``sgd_op``, 1-D
and 2-D) and the Gaussian step kernel (``gauss_step``, 1-D).

Each builds its operator once per cell (:mod:`sgdsweep.transfer.transfer1d`, on the
density grid refined ``operator.refine`` times, automatically by default), evolves the
cell's initial law step by step to the snapshot steps (t = η·step), and writes the
density, moments and basin masses like ``fp`` (distances to ``fp`` follow). Per method
it also stores the relaxation time of the chain (−η/ln|λ₂|, t units; with the Itô FP's
own 1/|μ₂| beside it when ``fp`` runs in the cell), the number of closed classes (more
than one: SGD cannot move mass between them and the limit law depends on the initial
law), the exact mean first-passage time over the escape threshold (in t and in SGD
steps, beside the Itô SDE's ``escape_time_exact``), the refinement used and the
measured numerical diffusion (max added variance / minibatch variance η²Σ_b on the
resolved cells; ``operator_diffusion_flag`` when it misses ``operator.diffusion_ratio``).
Stationary kinds: ``sgd`` (SGD's invariant law from the cell's initial law) and
``gauss_step``.

In 2-D, ``sgd_op`` runs :func:`~sgdsweep.transfer.transfer2d.sgd_transfer_2d` on the
density grid itself (no refinement: a refined 2-D grid costs refine² cells, as for the
2-D ``fp``), ``operator.quadrature`` sub-cells per axis; it fills the same variables
(``operator_refine`` 1) except the escape times (2-D cells have no threshold), and the
stationary kind ``sgd`` on the (x, y) grid. Its numerical diffusion (≤ (dx² + dy²)/4 per
step) is measured against η² tr Σ_b and flagged, not refined away.

Refused by ``parse_cell`` before anything runs: ``reshuffle`` sampling for ``sgd_op``
(not a Markov chain in θ alone), more distinct minibatches than
``operator.max_minibatches`` with ``operator.approximate`` off (in 2-D at all: it has no
convolution approximation), a density grid too coarse for the step even after
refinement (1-D), and ``operator.refine`` > 1 in 2-D.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr

from sgdsweep.cell.config import CellConfig, register_section, setting
from sgdsweep.cell.context import CellContext
from sgdsweep.errors import ConfigError
from sgdsweep.fokker_planck.conventions import CONVENTIONS
from sgdsweep.methods.fokker_planck import DENSITY_FILLS, write_density
from sgdsweep.methods.registry import Variable, register_method
from sgdsweep.transfer import markov
from sgdsweep.transfer.minibatches import check_sampling, minibatch_count
from sgdsweep.transfer.operator import OneStepOperator
from sgdsweep.transfer.transfer1d import (
    DIFFUSION_RATIO,
    MAX_MINIBATCHES,
    MAX_REFINE,
    QUADRATURE,
    choose_refine,
    gauss_step,
    sgd_transfer,
)
from sgdsweep.transfer.transfer2d import sgd_transfer_2d
from sgdsweep.validate import integer, real

#: The stationary kind each method provides (its operator's invariant law).
KIND = {"sgd_op": "sgd", "gauss_step": "gauss_step"}


@dataclass
class OperatorConf:
    """The one-step density operators (``sgd_op``, ``gauss_step``)."""

    refine: int | None = setting(None, unit="1", help="operator cells per density-grid cell; null: the "
                                 "smallest power of 2 whose numerical diffusion meets diffusion_ratio")
    quadrature: int = setting(QUADRATURE, unit="1", help="sub-cells per operator cell")
    max_minibatches: int = setting(MAX_MINIBATCHES, unit="1", help="enumerate minibatches up to this "
                                   "many distinct ones; beyond: binned convolution (approximate)")
    approximate: bool = setting(True, help="allow the binned convolution beyond max_minibatches")
    diffusion_ratio: float = setting(DIFFUSION_RATIO, unit="1", help="target numerical / minibatch "
                                     "variance per step (automatic refine; flag when missed)")
    max_refine: int = setting(MAX_REFINE, unit="1", help="cap on the automatic refine")
    relaxation: bool = setting(True, help="compute relaxation times (about 1 s at 4,000 cells)")

    def __post_init__(self) -> None:
        if self.refine is not None:
            self.refine = integer(self.refine, "operator.refine", 1)
        self.quadrature = integer(self.quadrature, "operator.quadrature", 1)
        self.max_minibatches = integer(self.max_minibatches, "operator.max_minibatches", 1)
        self.max_refine = integer(self.max_refine, "operator.max_refine", 1)
        self.diffusion_ratio = real(self.diffusion_ratio, "operator.diffusion_ratio", positive=True)
        for name in ("approximate", "relaxation"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"operator.{name}: expected true or false, got {getattr(self, name)!r}")


register_section("operator", OperatorConf)


def _conf(cell: CellConfig) -> OperatorConf:
    return cell.sections["operator"]


# --------------------------------------------------------------------------- validation


def _check_grid(cell: CellConfig) -> None:
    """ConfigError when the density grid is too coarse for the step even refined."""
    o = _conf(cell)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a missed target is flagged per cell
        try:
            choose_refine(cell.landscape, cell.grids[0], cell.lr, cell.noise_factor, o.refine,
                          diffusion_ratio=o.diffusion_ratio, max_refine=o.max_refine)
        except ConfigError as exc:
            if exc.field != "grid.cells":
                raise
            raise ConfigError("density_grid.cells", exc.problem) from None


def validate_sgd_op(cell: CellConfig) -> None:
    """``sgd_op``: a Markov sampling, a minibatch count it may enumerate, a fine enough grid."""
    check_sampling(cell.sampling)
    o = _conf(cell)
    n, b = cell.landscape.n, cell.batch_size
    K = minibatch_count(n, b, cell.sampling)
    if cell.dim == 2:
        if K > o.max_minibatches:
            raise ConfigError(
                f"operator.max_minibatches: {K} distinct minibatches (n = {n}, b = {b}, {cell.sampling}) "
                f"exceed the limit {o.max_minibatches}; the 2-D operator has no convolution approximation")
        if o.refine not in (None, 1):
            raise ConfigError(f"operator.refine: the 2-D operator works on the density grid itself "
                              f"(refine 1), got {o.refine}; use more density_grid.cells")
        return
    if K > o.max_minibatches and not o.approximate:
        raise ConfigError(
            f"operator.max_minibatches: {K} distinct minibatches (n = {n}, b = {b}, {cell.sampling}) "
            f"exceed the limit {o.max_minibatches} and operator.approximate is false")
    _check_grid(cell)


def validate_gauss_step(cell: CellConfig) -> None:
    _check_grid(cell)


# --------------------------------------------------------------------------- operators


def operator(ctx: CellContext, name: str) -> OneStepOperator:
    """The cell's operator of method ``name`` (``sgd_op`` or ``gauss_step``), built once."""

    def build() -> OneStepOperator:
        c, o = ctx.cell, _conf(ctx.cell)
        if ctx.dim == 2:  # sgd_op only (gauss_step is registered 1-D)
            return sgd_transfer_2d(c.landscape, c.grids, c.lr, c.batch_size, c.sampling,
                                   quadrature=o.quadrature, max_minibatches=o.max_minibatches)
        common = dict(refine=o.refine, quadrature=o.quadrature, diffusion_ratio=o.diffusion_ratio,
                      max_refine=o.max_refine)
        with warnings.catch_warnings():
            # A missed diffusion target is stored per cell (operator_diffusion_flag).
            warnings.simplefilter("ignore", RuntimeWarning)
            if name == "sgd_op":
                return sgd_transfer(c.landscape, c.grids[0], c.lr, c.batch_size, c.sampling,
                                    max_minibatches=o.max_minibatches, approximate=o.approximate,
                                    **common)
            return gauss_step(c.landscape, c.grids[0], c.lr, c.noise_factor, **common)

    return ctx.memo(("transfer", name), build)


def initial_masses(ctx: CellContext, name: str) -> np.ndarray:
    """The cell's initial law as masses on the operator's grid (flat (nx·ny,) in 2-D)."""
    op = operator(ctx, name)
    return ctx.memo(("transfer_m0", op.grids), lambda: op.initial_masses(ctx.cell.init))


def stationary(ctx: CellContext, name: str) -> np.ndarray:
    """The operator's invariant law reached from the cell's initial law, on the density grid
    ((nx, ny) in 2-D, where the operator lives on the density grid itself)."""
    op = operator(ctx, name)
    p = op.stationary(initial_masses(ctx, name))
    return op.coarsen(p)


def stationary_sgd(ctx: CellContext) -> np.ndarray:
    """Stationary kind ``sgd``: the invariant law of ``sgd_op`` (density grid)."""
    return stationary(ctx, "sgd_op")


def stationary_gauss_step(ctx: CellContext) -> np.ndarray:
    """Stationary kind ``gauss_step``: the invariant law of ``gauss_step`` (density grid)."""
    return stationary(ctx, "gauss_step")


def fp_relaxation(ctx: CellContext) -> markov.Relaxation:
    """Relaxation of the cell's FP operator (its convention, on :attr:`CellContext.fine`;
    2-D: on the density grid)."""

    return ctx.memo("fp_relaxation", lambda: ctx.fp_operator(CONVENTIONS[ctx.cell.convention]).relaxation())


# --------------------------------------------------------------------------- fill


def fill_transfer(ctx: CellContext, ds: xr.Dataset, name: str) -> None:
    """Evolve the initial law by method ``name``'s operator; write its statistics into ``ds``."""
    cell, o = ctx.cell, _conf(ctx.cell)
    op = operator(ctx, name)
    m0 = initial_masses(ctx, name)
    write_density(ctx, ds, name, op.evolve(m0, cell.steps), fine=op.grids[0])
    sel = {"method": name}
    ds["operator_refine"].loc[sel] = op.refine
    ds["operator_minibatches"].loc[sel] = op.minibatches
    ds["operator_diffusion_ratio"].loc[sel] = op.diffusion_ratio
    ds["operator_diffusion_flag"].loc[sel] = bool(op.diffusion_ratio > o.diffusion_ratio)
    ds["operator_classes"].loc[sel] = len(markov.closed_classes(op.matrix))
    if o.relaxation:
        ds["relaxation_time"].loc[sel] = op.relaxation().time
        if "fp" in cell.methods:
            ds["relaxation_time"].loc[{"method": "fp"}] = fp_relaxation(ctx).time
    if ctx.escape is not None:
        esc = op.escape(m0, *ctx.escape)
        ds["escape_time_operator"].loc[sel] = esc.time
        ds["escape_steps_operator"].loc[sel] = esc.steps


VARIABLES = {
    "relaxation_time": Variable(
        ("method",), "relaxation time of the method's density operator: −η/ln|λ₂| of the one-step "
        "chain (sgd_op, gauss_step); 1/|μ₂| of the FP generator (fp, filled when a one-step "
        "operator runs in the cell); inf when several closed classes never mix", "t"),
    "operator_classes": Variable(
        ("method",), "closed classes of the one-step chain (> 1: the limit law depends on the "
        "initial law)"),
    "escape_time_operator": Variable(
        ("method",), "mean first-passage time of the one-step chain from the initial law over the "
        "escape threshold (absorbing-chain solve; inf if unreachable)", "t"),
    "escape_steps_operator": Variable(
        ("method",), "escape_time_operator in SGD steps", "SGD steps"),
    "operator_refine": Variable(("method",), "operator cells per density-grid cell"),
    "operator_minibatches": Variable(
        ("method",), "distinct minibatches enumerated (convolution beyond operator.max_minibatches; "
        "0: Gaussian kernel)"),
    "operator_diffusion_ratio": Variable(
        ("method",), "measured numerical variance added per step / minibatch variance η²Σ_b, max "
        "over the resolved cells"),
    "operator_diffusion_flag": Variable(
        ("method",), "operator_diffusion_ratio above operator.diffusion_ratio (refine the grid)",
        fill=False),
}

_COMMON: dict[str, Any] = dict(kind="density", fill=fill_transfer, fills=DENSITY_FILLS,
                               variables=VARIABLES, time="t = η·step")

register_method(
    name="sgd_op", label="SGD (transfer operator)", color="vermillion", linestyle="--",
    reads=("lr", "batch_size", "sampling", "operator"), dims=(1, 2),
    stationary={"sgd": stationary_sgd}, validate=validate_sgd_op,
    summary="SGD's own transfer operator: each cell's mass carried to θ − η·ḡ_B(θ) for every "
            "minibatch B with its probability (binned b-fold convolution beyond "
            "`operator.max_minibatches`), conservative sub-cell split on a grid `operator.refine` "
            "times finer (automatic); 2-D: bilinear split on the density grid, enumerated "
            "minibatches only; stationary kind `sgd`, relaxation and (1-D) exact escape times; "
            "not for `reshuffle`", **_COMMON)
register_method(
    name="gauss_step", label="Gaussian step (EM at dt = η)", color="blue", linestyle="-.",
    reads=("lr", "batch_size", "sampling", "operator"), dims=(1,),
    stationary={"gauss_step": stationary_gauss_step},
    validate=validate_gauss_step,
    summary="the same with one Gaussian step N(θ − ηG, η²Σ_b): Euler–Maruyama of the Itô SDE "
            "at dt = η (the seed's step model); stationary kind `gauss_step`", **_COMMON)

