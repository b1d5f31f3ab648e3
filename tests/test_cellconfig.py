"""Cell validation: every bad field gives one line that names it."""

import pytest
import yaml

from sgdsweep import ConfigError, parse_cell
from tests.conftest import REPO


@pytest.fixture
def seed():
    with open(REPO / "conf" / "landscape" / "seed_two_point.yaml") as f:
        return yaml.safe_load(f)


@pytest.mark.parametrize(("override", "field"), [
    ({"lr": 0.0}, "lr"),
    ({"lr": -0.1}, "lr"),
    ({"lr": "fast"}, "lr"),
    ({"batch_size": 3}, "batch_size"),
    ({"batch_size": 0}, "batch_size"),
    ({"sampling": "stratified"}, "sampling"),
    ({"methods": ["sgd", "adam"]}, "methods"),
    ({"density_grid": {"lower": 0.8, "upper": 4.0, "cells": 100}}, "density_grid"),
    ({"density_grid": {"lower": 4.0, "upper": -1.0, "cells": 100}}, "density_grid.lower"),
    ({"density_grid": {"lower": -1.0, "upper": 4.0, "cells": 2.5}}, "density_grid.cells"),
    ({"init": {"kind": "cauchy"}}, "init.kind"),
    ({"init": {"kind": "normal", "std": 0.0}}, "init.std"),
    ({"time": {"t_end": -1.0}}, "time.t_end"),
    ({"mc": {"chains": 0}}, "mc.chains"),
    ({"fp": {"convention": "klimontovich"}}, "fp.convention"),
    ({"langevin": {"temperature": 0.0}}, "langevin.temperature"),
    ({"learning_rate": 0.1}, "learning_rate"),
    ({"mc": {"walkers": 3}}, "mc.walkers"),
])
def test_bad_cell_field_is_named(seed, override, field):
    with pytest.raises(ConfigError) as err:
        parse_cell({"landscape": seed, **override})
    msg = str(err.value)
    assert msg.split(":")[0] == field, msg
    assert "\n" not in msg


def test_snapshot_steps_follow_sde_time(seed):
    cell = parse_cell({"landscape": seed, "lr": 0.02, "time": {"t_end": 2.0, "snapshots": 11}})
    assert list(cell.steps) == list(range(0, 101, 10))  # every 10 SGD steps, as in the seed post
    assert cell.noise_factor == 1.0
    cell = parse_cell({"landscape": seed, "batch_size": 2, "sampling": "without_replacement"})
    assert cell.noise_factor == 0.0  # full batch without replacement has no noise
