"""Hydra composition and grid expansion (in process, no cluster)."""

from __future__ import annotations

import itertools
import os

import numpy as np
import pytest
from omegaconf import OmegaConf

from pipeline.config import compose, expand
from sgdsweep import parse_cell
from sgdsweep.cell.config import defaults
from sgdsweep.errors import ConfigError


def test_default_config_is_the_seed_model_over_learning_rates(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = compose([])
    plan = expand(cfg)
    assert [a.name for a in plan.axes] == ["lr"]
    assert 3 <= len(plan.cells) <= 4
    assert cfg.store == "results/seed_two_point.zarr"
    assert cfg.landscape.name == "seed_two_point" and cfg.cluster.kind == "local"
    # Hydra neither changed directory nor wrote anything.
    assert os.getcwd() == str(tmp_path) and list(tmp_path.iterdir()) == []


def test_cells_are_run_cell_mappings_in_c_order():
    plan = expand(compose(["grid.lr=[0.01,0.02]", "grid.batch_size=[1,2]"]))
    assert plan.shape == (2, 2)
    assert [(c["lr"], c["batch_size"]) for c in plan.cells] == [(0.01, 1), (0.01, 2), (0.02, 1), (0.02, 2)]
    assert plan.index(3) == (1, 1) and plan.coords(2) == {"lr": 0.02, "batch_size": 1}
    for c in plan.cells:
        assert set(c) == {"landscape", *defaults()}
        # the seed model's own grid (conf/domain/seed_two_point.yaml)
        assert c["density_grid"] == {"lower": -0.8, "upper": 3.2, "cells": 400}
        parse_cell(c)
    # Parsed once, in the same order: what the workers run.
    assert [(p.lr, p.batch_size) for p in plan.parsed] == [(c["lr"], c["batch_size"]) for c in plan.cells]


def test_range_specs():
    plan = expand(compose(["grid.lr={start:0.01,stop:0.04,num:4}",
                           "grid.seed={start:0,stop:2,num:3}"]))
    np.testing.assert_array_equal(plan.axes[0].values, np.linspace(0.01, 0.04, 4))
    assert plan.axes[1].values == (0.0, 1.0, 2.0)
    log = expand(compose(["grid.lr={start:0.001,stop:0.1,num:3,log:true}"])).axes[0].values
    np.testing.assert_allclose(log, [0.001, 0.01, 0.1], rtol=1e-15)


def test_landscape_parameter_by_short_and_full_path():
    short = expand(compose(["landscape=two_basin", "grid.width_left=[0.1,0.3]"]))
    full = expand(compose(["landscape=two_basin", "grid.landscape.width_left=[0.1,0.3]"]))
    assert short.axes[1].name == full.axes[1].name == "width_left"
    assert short.axes[1].path == "landscape.width_left"
    assert short.config_hash == full.config_hash
    # The interpolated term width follows the swept value.
    widths = {c["landscape"]["width_left"]: c["landscape"]["reference"][0]["width"] for c in short.cells}
    assert widths == {0.1: 0.1, 0.3: 0.3}


def test_heavy_tailed_degrees_of_freedom_are_sweepable():
    from sgdsweep import build_landscape

    plan = expand(compose(["landscape=heavy_tailed", "grid.shift_nu=[1.5,30]"]))
    assert plan.axes[-1].path == "landscape.shift_nu"
    spread = {}
    for c in plan.cells:
        assert c["landscape"]["shifts"]["nu"] == c["landscape"]["shift_nu"]
        s = build_landscape(c["landscape"]).centre[::3, 0] + 1.0  # offsets of the first term
        spread[c["landscape"]["shift_nu"]] = np.abs(s).max() / s.std()
    assert spread[1.5] > spread[30] > 1.0  # heavier tails: the farthest sample sits farther out


def test_issue_example_grid():
    plan = expand(compose(["landscape=two_basin", "grid.lr=[0.005,0.01,0.02]", "grid.batch_size=[1,2,4]",
                           "grid.width_left=[0.1,0.2,0.4]"]))
    assert [a.name for a in plan.axes] == ["lr", "batch_size", "width_left"]
    assert plan.shape == (3, 3, 3)


def test_string_axis_and_name_clash():
    overrides = ["grid.sampling=[with_replacement,without_replacement]", "grid.init.mean=[0.4,0.6]"]
    plan = expand(compose(overrides), reserved={"mean"})
    assert [a.name for a in plan.axes] == ["lr", "sampling", "init_mean"]


def test_hash_ignores_runtime_settings_but_not_numbers():
    base = expand(compose([])).config_hash
    assert expand(compose(["store=elsewhere.zarr", "cluster.n_workers=1", "retries=0"])).config_hash == base
    assert expand(compose(["mc.chains=999"])).config_hash != base
    assert expand(compose(["grid.lr=[0.01,0.02]"])).config_hash != base


@pytest.mark.parametrize(("overrides", "message"), [
    (["grid.lr=[0.01,0.01]"], "grid.lr: duplicate value 0.01"),
    (["grid.density_grid.cells=[10,20]"], "grid.density_grid.cells: density_grid.cells cannot be swept"),
    (["grid.lr={start:0.0,stop:0.1,num:3,log:true}"], "grid.lr: log range needs start, stop > 0"),
    (["grid.lr=[[0.1]]"], "grid.lr: expected scalar values"),
    (["grid.lr=[true]"], "grid.lr: expected numbers, got True"),
    (["landscape=two_basin", "grid.n=[8,16]"], "grid.n: ambiguous"),
    (["density_grid.cells=abc"], "density_grid.cells"),
])
def test_bad_grids(overrides, message):
    with pytest.raises(ConfigError, match="^" + message.replace("[", r"\[").replace("]", r"\]")):
        expand(compose(overrides))


def test_cfg_job_prints_the_resolved_config(capsys, tmp_path, monkeypatch):
    import yaml

    from pipeline.cli.main import main

    monkeypatch.chdir(tmp_path)
    assert main(["sweep", "landscape=quadratic", "grid.lr=[0.1,0.2]", "--cfg", "job"]) == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["store"] == "results/quadratic.zarr" and cfg["grid"] == {"lr": [0.1, 0.2]}
    assert cfg["landscape"]["shifts"] == {"n": 8, "std": 1.0}  # interpolations resolved
    assert list(tmp_path.iterdir()) == []  # nothing computed, nothing written


@pytest.mark.parametrize("overrides", [
    ["grid.lr=[0.01,0.02]", "grid.batch_size=[1,2]", "grid.seed=[0,1,2]"],
    ["~grid.lr", "grid.mc.chains=[16,32]", "grid.batch_size=[1,2]"],
    ["landscape=two_basin", "grid.width_left=[0.5,1.0]", "grid.lr=[0.01]"],  # interpolated: slow route
])
def test_fast_planning_gives_the_cells_of_per_cell_resolution(overrides):
    """The plain-dict route of ``expand`` builds exactly the cells of resolving a copy of the
    config per cell (the route taken when the config has interpolations)."""
    from pipeline import config as cfgmod

    cfg = compose(overrides)
    plan = expand(cfg)
    plain = OmegaConf.to_container(cfg, resolve=False)
    plain.pop("grid", None)
    base = OmegaConf.create(plain)
    slow = [cfgmod._cell_of(base, plan.axes, combo)
            for combo in itertools.product(*(a.values for a in plan.axes))]
    assert plan.cells == slow
    assert plan.config_hash == cfgmod.config_hash(plan.axes, slow)


@pytest.mark.parametrize("kind", ["local", "address", "slurm", "pbs"])
def test_cluster_defaults_come_from_the_settings_dataclasses(kind):
    import dataclasses

    from pipeline.cluster.settings import KINDS, parse_cluster

    composed = OmegaConf.to_container(compose([f"cluster={kind}"]).cluster, resolve=True)
    defaults_ = dataclasses.asdict(KINDS[kind]())
    assert composed == defaults_
    assert list(composed) == list(defaults_)  # the key order of `--cfg job` and the stored config
    # A mapping with only its kind takes the same defaults (a user's own cluster config).
    if kind != "address":  # its address is required
        assert dataclasses.asdict(parse_cluster({"kind": kind})) == defaults_


def test_run_settings_defaults_and_checks():
    from pipeline.run.settings import RunConf, parse_run

    cfg = OmegaConf.to_container(compose([]), resolve=True)
    assert parse_run(cfg) == RunConf()
    assert {k: cfg[k] for k in ("cells_per_task", "retries", "shard_cells", "store_writer")} == {
        "cells_per_task": None, "retries": 2, "shard_cells": 1024, "store_writer": "client"}
    with pytest.raises(ConfigError, match=r"^store_writer: must be client or workers, got 'disk'$"):
        parse_run({"store_writer": "disk"})
    assert parse_run({"store_writer": "workers", "cells_per_task": 3}).cells_per_task == 3


@pytest.mark.parametrize(("node", "message"), [
    ({"kind": "local", "n_workers": 0}, "cluster.n_workers: must be an integer >= 1 or null, got 0"),
    ({"kind": "local", "workers": 2}, "cluster.workers: unknown key for cluster kind 'local'"),
    ({"kind": "address", "address": "nohost"}, "cluster.address: missing"),
    ({"kind": "address", "address": "tcp://h:1", "tls": {"ca": "x"}},
     "cluster.tls.ca: unknown key for cluster kind 'address'"),
    ({"kind": "slurm", "cores": 0}, "cluster.cores: expected a positive integer, got 0"),
    ({"kind": "pbs", "cores": 2, "processes": 3}, "cluster.processes: 3 worker processes need"),
    ({"kind": "slurm", "env": ["A=1"]}, "cluster.env: expected a mapping"),
    ({"kind": "slurm", "minimum_jobs": 3, "maximum_jobs": 2}, "cluster.maximum_jobs: must be at least 1"),
    ({"kind": "slurm", "resource_spec": "x"}, "cluster.resource_spec: unknown key for cluster kind 'slurm'"),
    ({"kind": "sge"}, "cluster.kind: unknown 'sge' (known: local, address, slurm, pbs)"),
])
def test_bad_cluster_settings_name_the_field(node, message):
    from pipeline.cluster.settings import parse_cluster

    with pytest.raises(ConfigError) as err:
        parse_cluster(node)
    assert str(err.value).startswith(message), str(err.value)


def test_parsed_cluster_settings_keep_nulls_meaning_defaults():
    from pipeline.cluster.settings import FREE_PORT, PbsClusterConf, parse_cluster

    conf = parse_cluster({"kind": "pbs", "memory": None, "processes": None})
    assert isinstance(conf, PbsClusterConf) and conf.memory == "2GiB" and conf.processes is None
    assert parse_cluster({"kind": "local", "dashboard_address": None}).dashboard_address is None
    assert parse_cluster({"kind": "slurm", "dashboard_address": None}).dashboard_address is None
    from pipeline.cluster.jobqueue import jobqueue_kwargs

    kwargs = jobqueue_kwargs({"kind": "slurm", "dashboard_address": None})
    assert kwargs["scheduler_options"]["dashboard_address"] == FREE_PORT


def test_default_sweep_runs_sgd_op_and_each_landscape_brings_its_domain():
    cfg = compose([])
    assert "sgd_op" in cfg.methods and list(cfg.methods)[:6] == defaults()["methods"]
    assert cfg.operator.relaxation is False  # the experiments that run sgd_op turn it on
    assert compose(["+experiment=seed_validation"]).operator.relaxation is True
    two = compose(["landscape=two_basin"])
    assert dict(two.density_grid) == {"lower": -3.5, "upper": 3.5, "cells": 280}
    assert dict(two.init) == {"kind": "uniform", "mean": 0.5, "std": 0.175, "lower": -2.0, "upper": 2.0}
    tilted = compose(["landscape=tilted_2d"])
    assert list(tilted.density_grid.cells) == [120, 80] and list(tilted.init.mean) == [1.0, 1.0]
    # the default sweep's method list belongs to the seed model; a model landscape keeps its own
    assert list(compose(["landscape=linreg_diabetes"]).methods) == ["sgd", "sde", "langevin", "gd"]
    assert list(two.methods) == defaults()["methods"]
    # The command line and experiments win over the landscape's domain.
    assert compose(["landscape=two_basin", "density_grid.cells=70"]).density_grid.cells == 70
    seed = compose(["+experiment=seed_validation"])
    assert dict(seed.density_grid) == {"lower": -1.0, "upper": 4.0, "cells": 250}
    # A landscape without a domain file keeps the schema's grid.
    assert compose(["landscape=anisotropic_2d"]).density_grid.lower == -1.0


def test_init_block_is_replaced_by_another_kind():
    cfg = compose(["init={kind: uniform, lower: -0.5, upper: 2}"])
    assert dict(cfg.init) == {"kind": "uniform", "lower": -0.5, "upper": 2}
    assert expand(cfg).parsed[0].init.kind == "uniform"
    # a field of another kind, set alone, says how to replace the block
    with pytest.raises(ConfigError, match=r"^init.lower: unknown config key of the current init block; "
                                          r"replace the whole block instead, e.g. init='\{kind: uniform"):
        compose(["init.lower=-0.5"])


def test_grid_warnings_name_the_minima_a_grid_cuts():
    from pipeline.run.sweep import grid_warnings

    assert grid_warnings(expand(compose([]))) == []
    assert grid_warnings(expand(compose(["landscape=two_basin"]))) == []
    cut = grid_warnings(expand(compose(["landscape=two_basin", "density_grid.lower=-1.0",
                                        "density_grid.upper=4.0", "init={kind: uniform, lower: 0, upper: 2}"
                                        ])))
    assert cut == ["density_grid [-1, 4] cuts minima of two_basin at lr = 0.04: θ = -0.99 (the minimum "
                   "itself). Chains that leave the grid are lost; set density_grid.lower/upper (or add "
                   "conf/domain/two_basin.yaml)"]
