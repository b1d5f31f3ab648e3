"""Your own configs, the Hydra way: ``-cd/--config-dir`` adds a directory to the search
path (landscapes, experiments, a primary config), ``-cn/--config-name`` picks the primary
config, ``hydra.searchpath`` does the same for config groups, ``--help`` lists the groups
and their options; bad flags give one ``error:`` line and exit status 2."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipeline.cli.main import main
from pipeline.config import compose, expand

LANDSCAPE_DIR = Path(__file__).resolve().parents[1] / "conf" / "landscape"

WELLS = """\
name: my_wells
dim: 1
width_left: 0.3
n: 8
reference:
  - {kind: gaussian, amplitude: -1.0, centre: -1.0, width: "${...width_left}"}
  - {kind: gaussian, amplitude: -1.0, centre: 1.0, width: 0.5}
  - {kind: quadratic, curvature: 0.2, centre: 0.0}
shifts: {n: "${..n}", std: 0.1}
"""
EXPERIMENT = """\
# @package _global_
defaults:
  - override /landscape: my_wells
store: results/my_experiment.zarr
grid:
  lr: [0.01, 0.03]
  width_left: [0.2, 0.4]
mc: {chains: 321}
"""
PRIMARY = """\
defaults:
  - config
  - override landscape: my_wells
  - _self_
store: mine.zarr
grid: {batch_size: [1, 2]}
"""
MODULE = '''\
from sgdsweep import Landscape, build_landscape


def two_quadratics(distance: float, n: int) -> Landscape:
    """n samples of a quadratic with centres spread over ±distance/2."""
    return build_landscape({"name": "two_quadratics", "reference": [
        {"kind": "quadratic", "curvature": 1.0, "centre": 0.0}], "shifts": {"n": n, "std": distance / 2}})
'''


@pytest.fixture
def user_dir(tmp_path) -> Path:
    d = tmp_path / "my_conf"
    (d / "landscape").mkdir(parents=True)
    (d / "experiment").mkdir()
    (d / "landscape" / "my_wells.yaml").write_text(WELLS)
    (d / "landscape" / "py_quadratics.yaml").write_text(
        "_target_: my_landscapes.two_quadratics\nname: py_quadratics\ndistance: 2.0\nn: 6\n")
    (d / "experiment" / "my_experiment.yaml").write_text(EXPERIMENT)
    (d / "mine.yaml").write_text(PRIMARY)
    (tmp_path / "my_landscapes.py").write_text(MODULE)
    return d


def _job(capsys, *args: str) -> dict:
    assert main(["sweep", *args, "--cfg", "job"]) == 0
    return yaml.safe_load(capsys.readouterr().out)


def test_config_dir_brings_landscapes_and_experiments(capsys, user_dir):
    cfg = _job(capsys, "-cd", str(user_dir), "landscape=my_wells")
    assert cfg["landscape"]["name"] == "my_wells" and cfg["store"] == "results/my_wells.zarr"
    assert cfg["landscape"]["reference"][0]["width"] == 0.3  # the interpolation resolved
    cfg = _job(capsys, f"--config-dir={user_dir}", "+experiment=my_experiment")
    assert cfg["landscape"]["name"] == "my_wells" and cfg["mc"]["chains"] == 321
    plan = expand(compose(["+experiment=my_experiment"], config_dirs=[user_dir]))
    assert [(a.name, a.path, a.values) for a in plan.axes] == [
        ("lr", "lr", (0.01, 0.03)), ("width_left", "landscape.width_left", (0.2, 0.4))]
    widths = [c["landscape"]["reference"][0]["width"] for c in plan.cells]
    assert widths == [0.2, 0.4, 0.2, 0.4]  # swept values flow through the user's interpolation


def test_config_name_picks_a_primary_config_in_the_user_dir(capsys, user_dir):
    cfg = _job(capsys, "-cd", str(user_dir), "-cn", "mine")
    assert cfg["store"] == "mine.zarr" and cfg["landscape"]["name"] == "my_wells"
    assert cfg["grid"] == {"lr": [0.005, 0.01, 0.02, 0.04], "batch_size": [1, 2]}  # merged into config's
    cfg = _job(capsys, f"--config-dir={user_dir}", "--config-name=mine.yaml", "store=other.zarr")
    assert cfg["store"] == "other.zarr"


def test_hydra_searchpath_adds_config_groups(capsys, user_dir):
    cfg = _job(capsys, f"hydra.searchpath=[file://{user_dir}]", "landscape=my_wells")
    assert cfg["landscape"]["name"] == "my_wells"


def test_python_target_landscape_from_a_user_module(user_dir, monkeypatch):
    monkeypatch.syspath_prepend(str(user_dir.parent))
    plan = expand(compose(["landscape=py_quadratics", "grid.lr=[0.1]", "grid.distance=[1.0,2.0]"],
                          config_dirs=[user_dir]))
    assert plan.axes[1].path == "landscape.distance"
    assert [c["landscape"]["distance"] for c in plan.cells] == [1.0, 2.0]
    from sgdsweep import build_landscape

    land = build_landscape(plan.cells[1]["landscape"])
    assert land.name == "two_quadratics" and land.n == 6


def test_help_lists_config_groups_and_options(capsys, user_dir):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    groups = {line.split()[0]: line.split(None, 1)[1] for line in out.splitlines()
              if line.startswith("  ") and line.split()[0] in ("landscape", "cluster", "experiment")}
    # every shipped landscape file, sorted, the default starred
    shipped = sorted(p.stem for p in LANDSCAPE_DIR.glob("*.yaml"))
    assert groups["landscape"] == ", ".join(n + "*" if n == "seed_two_point" else n for n in shipped)
    assert groups["cluster"] == "address, local*, pbs, slurm"
    assert "ou_variance" in groups["experiment"] and "--config-dir" in out and "hydra.searchpath" in out
    assert main(["sweep", "-cd", str(user_dir), "--help"]) == 0
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if ln.startswith("  landscape "))
    assert "my_wells" in line and "py_quadratics" in line and "seed_two_point*" in line
    assert "my_experiment" in next(ln for ln in out.splitlines() if ln.startswith("  experiment "))
    assert str(user_dir) in out


BAD = [
    (["-cd", "/no/such/dir"], "--config-dir: /no/such/dir is not a directory"),
    (["--config-dir"], "--config-dir: expected a directory"),
    (["-cn"], "--config-name: expected a config name"),
    (["-cn", "nope"], "--config-name: no nope.yaml in the config search path"),
    (["--bogus"], "--bogus: unknown option"),
    (["-cd", "{user_dir}", "landscape=nope"],
     "landscape: unknown option 'nope' (available: " + ", ".join(
         sorted([p.stem for p in LANDSCAPE_DIR.glob("*.yaml")] + ["my_wells", "py_quadratics"])) + ")"),
]


@pytest.mark.parametrize(("args", "message"), BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_flags_are_one_line(capsys, user_dir, args, message):
    args = [a.format(user_dir=user_dir) for a in args]
    assert main(["sweep", *args]) == 2
    out, err = capsys.readouterr()
    assert err.startswith(f"error: {message}") and err.count("\n") == 1, err
    assert out == ""


def test_submit_passes_config_dir_and_name_to_the_job(capsys, user_dir, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "more").mkdir()
    args = ["--dry-run", "-cd", str(user_dir), "-cn", "mine", "-cd", "more", "mc.chains=50"]
    assert main(["submit", *args]) == 0
    script = capsys.readouterr().out
    last = script.strip().splitlines()[-1]
    assert last.endswith(f"sweep --config-name mine --config-dir {user_dir} --config-dir {tmp_path / 'more'} "
                         "mc.chains=50"), last
    assert last.startswith("exec ")
