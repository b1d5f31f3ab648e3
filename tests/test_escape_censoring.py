"""The censoring-aware mean passage time (``escape_time_mle``) against exact geometric laws.

SGD that can escape only through one of n samples, each step with probability 1/n, has
passage times exactly Geometric(1/n) (mean n steps). Stopped before most chains escape,
the mean over the escaped chains is far too short; total steps at risk / escapes is the
geometric maximum-likelihood estimate, within a few of its standard errors of n.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from sgdsweep import run_cell
from sgdsweep.cell.schema import MIN_ESCAPES, escape_error_cells, few_escape_cells
from sgdsweep.montecarlo.escapes import censored_escapes


def test_hand_counted_example():
    """Escapes at steps 3 and 5; one chain lost at step 4, one waiting at the last step 10:
    at risk 3 + 4 + 5 + 10 = 22 steps, 2 escapes: 11 ± 11/√2 steps."""
    c = censored_escapes(np.array([3, -1, 5, -1]), 10, np.array([-1, 4, -1, -1]))
    assert (c.steps, c.escapes, c.at_risk) == (11.0, 2, 22.0)
    assert c.se == 11.0 / math.sqrt(2.0)
    assert c.flagged
    none = censored_escapes(np.array([-1, -1]), 7)
    assert math.isnan(none.steps) and math.isnan(none.se) and none.at_risk == 14.0 and none.flagged


def test_without_censoring_it_is_the_plain_mean():
    s = np.random.default_rng(1).geometric(0.1, size=1000)
    c = censored_escapes(s, int(s.max()))
    assert c.steps == pytest.approx(s.mean(), rel=1e-15) and c.escapes == 1000 and not c.flagged


@pytest.mark.parametrize("p", [0.01, 0.2])
def test_censored_geometric_samples(p):
    """Geometric(p) samples censored at S with P(T ≤ S) ≈ 0.4: the estimate is within 4 of its
    standard errors of 1/p (a false failure has probability 6e-5); the naive mean is not."""
    rng = np.random.default_rng(7)
    chains, S = 20_000, math.ceil(math.log(0.6) / math.log(1 - p))
    t = rng.geometric(p, size=chains)
    esc = np.where(t <= S, t, -1)
    c = censored_escapes(esc, S)
    assert abs(c.steps - 1 / p) <= 4 * c.se, (c.steps, c.se)
    q = 1 - (1 - p) ** S  # P(T ≤ S): the expected escaped fraction
    assert c.se == pytest.approx((1 / p) / math.sqrt(q * chains), rel=0.05)
    assert t[t <= S].mean() < 0.6 / p  # the mean over escaped chains only


def test_run_cell_sgd_escape_is_geometric():
    """n = 50 samples, b = 1, η = 0.1, every chain starting at θ = 0: the 49 samples centred at
    0 leave θ = 0 where it is, the one centred at c = 10 kicks it to ηc = 1, past the threshold
    0.5 — passage steps Geometric(1/50), mean 50 steps = 5 t. Run to t = 3 (30 steps,
    1 − 0.98³⁰ = 45.5 % escape): ``escape_time_mle`` within 4 standard errors of 5;
    ``escape_time_mean`` (escaped chains only) reads below 2."""
    n, lr, c = 50, 0.1, 10.0
    land = {"name": "one_kick", "datapoints": [[{"kind": "quadratic", "curvature": 1.0, "centre": c}]]
            + [[{"kind": "quadratic", "curvature": 1.0, "centre": 0.0}]] * (n - 1)}
    cfg = {"landscape": land, "lr": lr, "methods": ["sgd"], "init": {"kind": "point", "mean": 0.0},
           "density_grid": {"lower": -1.0, "upper": 12.0, "cells": 130},
           "time": {"t_end": 3.0, "snapshots": 4}, "mc": {"chains": 4000},
           "escape": {"threshold": 0.5}}
    full = run_cell(cfg)
    assert full.method.values.tolist() == ["sgd"]
    ds = full.isel(method=0)
    frac = float(ds.escaped_fraction)
    assert abs(frac - (1 - 0.98**30)) <= 4 * math.sqrt(0.455 * 0.545 / 4000)
    mle, se, count = float(ds.escape_time_mle), float(ds.escape_time_mle_se), float(ds.escape_count)
    assert count == pytest.approx(frac * 4000, abs=1e-9)
    assert se == pytest.approx(mle / math.sqrt(count), rel=1e-12)
    print(f"escape_time_mle {mle:.3f} ± {se:.3f} (exact 5), "
          f"escape_time_mean {float(ds.escape_time_mean):.3f}")
    assert abs(mle - n * lr) <= 4 * se
    assert float(ds.escape_time_mean) < 2.0
    assert float(ds.lost_fraction.isel(t=-1)) == 0.0
    assert few_escape_cells(ds.expand_dims("method")) == []  # 1,820 escapes ≫ MIN_ESCAPES


def test_few_escapes_are_flagged():
    """escape_count below MIN_ESCAPES is listed per method; NaN (a density method) is not."""
    import xarray as xr

    ds = xr.Dataset({"escape_count": (("lr", "method"), [[3.0, np.nan], [float(MIN_ESCAPES), np.nan]]),
                     "done": (("lr",), [True, True])},
                    coords={"lr": [0.1, 0.2], "method": ["sgd", "fp"]})
    assert few_escape_cells(ds) == [({"lr": 0.1}, "sgd", 3.0)]


def test_flagged_lists_build_only_the_first_entries_and_count_all():
    """``most``: the first entries in C order (what ``status`` shows), ``.total``: all of them,
    done cells only — the same entries as the whole list's head."""
    import xarray as xr

    count = np.full((3, 4, 2), 50.0)
    count[:, :, 0] = [[1, 50, 2, 3], [50, 4, 50, 5], [6, 7, 50, 50]]  # 7 flagged sgd entries
    done = np.ones((3, 4), bool)
    done[2, 1] = False  # its 7 escapes are not flagged
    err = np.where(count[:, :, 0] < 50, 0.5, 0.01)
    ds = xr.Dataset({"escape_count": (("lr", "seed", "method"), count), "done": (("lr", "seed"), done),
                     "escape_time_exact_error": (("lr", "seed"), err)},
                    coords={"lr": [0.1, 0.2, 0.3], "seed": [0, 1, 2, 3], "method": ["sgd", "fp"]})
    every = few_escape_cells(ds)
    assert [c[2] for c in every] == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0] and every.total == 6
    head = few_escape_cells(ds, most=4)
    assert head == every[:4] and head.total == 6
    assert head[3] == ({"lr": 0.2, "seed": 1}, "sgd", 4.0)
    flagged = escape_error_cells(ds, most=2)
    assert flagged == [({"lr": 0.1, "seed": 0}, 0.5), ({"lr": 0.1, "seed": 2}, 0.5)]
    assert flagged.total == 6 and len(escape_error_cells(ds)) == 6
    assert few_escape_cells(ds, most=0) == [] and few_escape_cells(ds, most=0).total == 6
