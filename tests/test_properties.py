"""Properties over random inputs (hypothesis): configurations and landscapes.

* parsing and validating a random cell config either accepts it or raises ConfigError
  (one line) — never another exception, and never allocating on a huge grid first;
* the memory estimate counts the layout's elements exactly;
* SGD's transfer operator (and the Gaussian step kernel) is column-stochastic;
* the Fokker–Planck solver conserves mass;
* ``run_cell`` on any accepted small config returns finite densities.

Example counts are small (CI time): each property runs 20–30 random cases.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from sgdsweep import build_landscape, cell_template, parse_cell, run_cell
from sgdsweep.cell.layout import cell_memory, check_memory
from sgdsweep.errors import ConfigError
from sgdsweep.fokker_planck.fp1d import FokkerPlanck1D
from sgdsweep.landscapes.grid import Grid1D
from sgdsweep.landscapes.noise import batch_noise_factor

FAST = settings(max_examples=25, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# --------------------------------------------------------------------------- strategies

finite = st.floats(-3.0, 3.0, allow_nan=False)
junk = st.one_of(st.none(), st.booleans(), st.text(max_size=3), st.floats(allow_nan=True),
                 st.integers(-3, 10**12), st.lists(st.integers(-2, 50), max_size=3),
                 st.dictionaries(st.text(max_size=2), st.integers(), max_size=1))


def maybe(good: st.SearchStrategy) -> st.SearchStrategy:
    """Mostly valid values, sometimes anything at all."""
    return st.one_of(good, good, good, junk)


@st.composite
def terms(draw, dim: int):
    kind = draw(st.sampled_from(["gaussian", "quadratic", "gaussian", "cubic"]))
    centre = draw(finite) if dim == 1 else draw(st.lists(finite, min_size=2, max_size=2))
    term = {"kind": kind, "centre": draw(maybe(st.just(centre))),
            "amplitude": draw(maybe(st.floats(-2.0, 2.0, allow_nan=False)))}
    if kind == "gaussian":
        term[draw(st.sampled_from(["width", "sharpness"]))] = draw(maybe(st.floats(0.1, 2.0)))
    else:
        term["curvature"] = draw(maybe(st.floats(0.05, 3.0)))
    return term


@st.composite
def landscapes(draw, dim: int | None = None, valid: bool = False):
    dim = draw(st.sampled_from([1, 1, 2])) if dim is None else dim
    n = draw(st.integers(1, 4))
    if valid:
        samples = [[{"kind": "quadratic", "curvature": draw(st.floats(0.2, 2.0)),
                     "centre": draw(finite) if dim == 1 else [draw(finite), draw(finite)]}]
                   + ([{"kind": "gaussian", "amplitude": draw(st.floats(-1.0, 1.0)),
                        "width": draw(st.floats(0.3, 1.5)), "centre": draw(finite)}]
                      if dim == 1 and draw(st.booleans()) else [])
                   for _ in range(n)]
    else:
        samples = [draw(st.lists(terms(dim), min_size=0, max_size=2)) for _ in range(n)]
    return {"name": "random", "dim": draw(maybe(st.just(dim))) if not valid else dim, "datapoints": samples}


@st.composite
def configs(draw):
    cfg = {"landscape": draw(landscapes())}
    pick = draw(st.sets(st.sampled_from(["lr", "batch_size", "sampling", "methods", "seed", "init",
                                         "density_grid", "time", "mc", "escape", "fp", "bogus"])))
    values = {
        "lr": maybe(st.floats(1e-3, 0.5)),
        "batch_size": maybe(st.integers(1, 5)),
        "sampling": maybe(st.sampled_from(["with_replacement", "without_replacement", "reshuffle"])),
        "methods": maybe(st.lists(st.sampled_from(["sgd", "sde", "fp", "fp_drift", "gd", "langevin",
                                                   "sgd_op", "gauss_step", "nope"]),
                                  min_size=1, max_size=3)),
        "seed": maybe(st.integers(0, 10)),
        "init": maybe(st.fixed_dictionaries({"kind": maybe(st.sampled_from(["normal", "uniform", "point"])),
                                             "mean": maybe(finite), "std": maybe(st.floats(0.01, 0.5)),
                                             "lower": maybe(finite), "upper": maybe(finite)})),
        "density_grid": maybe(st.fixed_dictionaries({
            "lower": maybe(st.one_of(st.floats(-6.0, -3.0), st.lists(st.floats(-6.0, -3.0), min_size=1,
                                                                       max_size=3))),
            "upper": maybe(st.one_of(st.floats(3.0, 6.0), st.lists(st.floats(3.0, 6.0), min_size=1,
                                                                     max_size=3))),
            "cells": maybe(st.one_of(st.integers(3, 80), st.sampled_from([10**9, 10**12]),
                                     st.lists(st.integers(3, 40), min_size=1, max_size=3)))})),
        "time": maybe(st.fixed_dictionaries({"t_end": maybe(st.floats(1e-3, 2.0)),
                                             "snapshots": maybe(st.integers(1, 5))})),
        "mc": maybe(st.fixed_dictionaries({"chains": maybe(st.one_of(st.integers(0, 64),
                                                                     st.just(10**12)))})),
        "escape": maybe(st.fixed_dictionaries({"threshold": maybe(st.one_of(st.none(), finite))})),
        "fp": maybe(st.fixed_dictionaries({"refine": maybe(st.integers(0, 4)),
                                           "convention": maybe(st.sampled_from(["ito", "stratonovich",
                                                                                "x"]))})),
        "bogus": junk,
    }
    for key in sorted(pick):
        cfg[key] = draw(values[key])
    return cfg


# --------------------------------------------------------------------------- parsing


@FAST
@given(configs())
def test_parse_accepts_or_raises_config_error(cfg):
    """Anything else (TypeError, ValueError, MemoryError, a NumPy broadcast error) is a bug."""
    try:
        cell = parse_cell(cfg)
    except ConfigError as exc:
        assert str(exc) and "\n" not in str(exc), str(exc)
        return
    # Accepted cells fit in this machine's memory (checked before anything was allocated).
    check_memory(cell)


@FAST
@given(landscapes())
def test_landscape_builds_or_raises_config_error(spec):
    try:
        land = build_landscape(spec)
    except ConfigError as exc:
        assert "\n" not in str(exc)
        return
    out = land.evaluate(np.zeros((3, land.dim)))
    assert out["loss"].shape == (3,)


@settings(max_examples=20, deadline=None, derandomize=True)
@given(landscapes(valid=True), st.integers(3, 30), st.integers(3, 30), st.integers(1, 4),
       st.lists(st.sampled_from(["sgd", "sde", "fp", "fp_drift", "gauss_step", "sgd_op"]), min_size=1,
                max_size=3, unique=True))
def test_cell_memory_counts_the_layout(spec, nx, ny, snapshots, methods):
    """The estimate's result part is exactly the number of elements of ``cell_template``'s
    variables (2 basins where found from the loss: the template's own count is used when
    it differs), and its landscape part those of ``Landscape.evaluate`` on the grid."""
    dim = spec["dim"]
    cfg = {"landscape": spec, "methods": methods, "init": {"kind": "normal", "mean": 0.0, "std": 0.3},
           "density_grid": {"lower": -3.0, "upper": 3.0, "cells": nx if dim == 1 else [nx, ny]},
           "time": {"t_end": 0.2, "snapshots": snapshots + 1}}
    try:
        cell = parse_cell(cfg)
    except ConfigError:
        assume(False)
    mem = cell_memory(cell)
    tmpl = cell_template(cell)
    elements = sum(v.size for v in tmpl.data_vars.values())
    basins = tmpl.sizes.get("basin", 2)
    per_basin = len(cell.methods) * len(cell.times)  # basin_mass (method, t, basin)
    assert mem.result + (basins - 2) * per_basin * (dim == 1) == elements
    points = np.zeros((math.prod(g.cells for g in cell.grids), dim))
    ev = cell.landscape.evaluate(points)
    assert mem.landscape == sum(a.size for a in ev.values())


ONE_QUADRATIC = {"datapoints": [[{"kind": "quadratic", "curvature": 1.0, "centre": 0.0}]]}


def test_check_memory_names_the_field_and_the_limit():
    cell = parse_cell({"landscape": ONE_QUADRATIC,
                       "density_grid": {"lower": -3, "upper": 3, "cells": 1000},
                       "init": {"kind": "normal", "mean": 0.0, "std": 0.3}})
    need = cell_memory(cell).bytes
    check_memory(cell, need, "exactly enough")  # not refused at the limit itself
    with pytest.raises(ConfigError, match=r"^density_grid.cells: a cell needs at least .* more than "
                                          r"1\.00 MiB \(a worker's share\); use fewer") as exc:
        check_memory(cell, 2**20, "a worker's share")
    assert need > 2**20 and "\n" not in str(exc.value)
    chains = parse_cell({"landscape": ONE_QUADRATIC,
                         "density_grid": {"lower": -3, "upper": 3, "cells": 10},
                         "init": {"kind": "normal", "mean": 0.0, "std": 0.3}, "mc": {"chains": 10**7}})
    with pytest.raises(ConfigError, match=r"^mc.chains: "):
        check_memory(chains, 2**20, "a worker's share")


# --------------------------------------------------------------------------- numerics


@settings(max_examples=20, deadline=None, derandomize=True)
@given(landscapes(dim=1, valid=True), st.floats(0.01, 0.4), st.integers(20, 60),
       st.sampled_from(["with_replacement", "without_replacement"]), st.integers(1, 3),
       st.sampled_from(["sgd", "gauss"]))
def test_transfer_operator_is_column_stochastic(spec, lr, cells, sampling, b, kind):
    """Every column of P sums to 1 (to 1e-12) and no entry is negative."""
    from sgdsweep.transfer.transfer1d import gauss_step, sgd_transfer

    land = build_landscape(spec)
    assume(b <= land.n)
    grid = Grid1D(-4.0, 4.0, cells)
    try:
        if kind == "sgd":
            op = sgd_transfer(land, grid, lr, b, sampling, refine=2)
        else:
            op = gauss_step(land, grid, lr, batch_noise_factor(land.n, b, sampling), refine=2)
    except ConfigError:
        assume(False)  # e.g. a grid too coarse for the step: refused, not wrong
    P = op.matrix
    assert P.data.min() >= 0.0
    np.testing.assert_allclose(np.asarray(P.sum(axis=0)).ravel(), 1.0, rtol=0, atol=1e-12)


@settings(max_examples=25, deadline=None, derandomize=True)
@given(landscapes(dim=1, valid=True), st.floats(0.01, 0.4), st.integers(20, 200),
       st.floats(0.05, 1.0), st.floats(-1.0, 1.0), st.booleans())
def test_fokker_planck_conserves_mass(spec, lr, cells, t_end, mean, drift_only):
    """Implicit Euler with zero-flux faces: Σ p·dx stays 1 (to 1e-12) at every snapshot."""
    land = build_landscape(spec)
    grid = Grid1D(-4.0, 4.0, cells)
    fp = FokkerPlanck1D.from_landscape(land, grid, lr, 1.0, drift_only=drift_only)
    x = grid.centres
    p0 = np.exp(-0.5 * ((x - mean) / 0.4) ** 2)
    p0 /= p0.sum() * grid.dx
    p = fp.evolve(p0, np.linspace(0.0, t_end, 4), dt=lr / 4)
    assert np.all(np.isfinite(p)) and p.min() >= -1e-14
    np.testing.assert_allclose(p.sum(axis=1) * grid.dx, 1.0, rtol=0, atol=1e-12)


@st.composite
def small_configs(draw):
    """Small cells, mostly valid: 1-D or 2-D, any methods the dimension allows, any sampling,
    initial law and threshold (≤ 24 cells per axis, 32 chains, ≤ 50 steps)."""
    spec = draw(landscapes(valid=True))
    dim = spec["dim"]
    one_d = ["sgd", "sde", "langevin", "gd", "fp", "fp_drift", "sgd_op", "gauss_step", "svag", "sme2",
             "sgd_noise", "fp_sme2"]
    two_d = ["sgd", "sde", "langevin", "gd", "fp", "fp_drift", "svag", "sgd_noise"]
    methods = draw(st.lists(st.sampled_from(one_d if dim == 1 else two_d), min_size=1, max_size=3,
                            unique=True))
    n = len(spec["datapoints"])
    cells = draw(st.integers(8, 24))
    init = draw(st.sampled_from([{"kind": "normal", "mean": draw(st.floats(-1.0, 1.0)),
                                  "std": draw(st.floats(0.05, 0.5))},
                                 {"kind": "uniform", "lower": -0.5, "upper": draw(st.floats(-0.4, 1.0))},
                                 {"kind": "point", "mean": draw(st.floats(-1.0, 1.0))}]))
    cfg = {"landscape": spec, "methods": methods, "lr": draw(st.floats(0.01, 0.3)),
           "batch_size": draw(st.integers(1, n)),
           "sampling": draw(st.sampled_from(["with_replacement", "without_replacement"])),
           "seed": draw(st.integers(0, 3)), "init": init,
           "density_grid": {"lower": -4.0, "upper": 4.0, "cells": cells if dim == 1 else [cells, cells]},
           "time": {"t_end": draw(st.floats(0.05, 0.5)), "snapshots": draw(st.integers(2, 4))},
           "mc": {"chains": 32}, "fp": {"refine": draw(st.integers(1, 3))},
           "escape": {"threshold": draw(st.one_of(st.none(), st.floats(-2.0, 2.0)))}}
    return cfg


@settings(max_examples=20, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(small_configs())
def test_run_cell_on_any_accepted_small_config_is_finite(cfg):
    """Every density ``run_cell`` writes is finite and non-negative. The one refusal left
    to run time is a ConfigError too: a method that needs a temperature (``langevin``,
    ``sgd_noise`` matched to it) without an explicit one where the gradient noise vanishes
    (its default temperature is computed from the landscape on the grid when the cell runs)."""
    try:
        cell = parse_cell(cfg)
    except ConfigError:
        assume(False)
    assume(cell.steps[-1] <= 50)
    try:
        ds = run_cell(cell)
    except ConfigError as exc:
        assert str(exc).startswith("langevin.temperature: "), str(exc)
        assert any(m.needs_temperature for m in cell.method_specs), (str(exc), cell.methods)
        assert "\n" not in str(exc)
        return
    dens = ds["density"].values
    bad = [m for i, m in enumerate(cell.methods) if not np.isfinite(dens[i]).all()]
    assert not bad, bad
    assert np.isfinite(ds["lost_fraction"].values).all()
    # Non-negative, except the 2-D FP where its cross-diffusion stencil cannot be monotone
    # (|D_xy| too large: counted in fp_monotone_violation, the documented limit).
    for i, m in enumerate(cell.methods):
        if dens[i].min() < -1e-12:
            assert cell.dim == 2 and m.startswith("fp") and float(ds["fp_monotone_violation"]) > 0, m
