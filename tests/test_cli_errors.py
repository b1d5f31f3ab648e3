"""Bad input: one line ``error: <field>: <problem>`` on stderr, exit status 2, no
traceback, and an existing store left exactly as it was (bytes and mtimes)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pipeline.cli.main import main
from tests.conftest import TINY, run_pipeline, snapshot


@pytest.fixture(scope="module")
def existing_store(tmp_path_factory) -> Path:
    """A finished one-cell store (real sweep, one worker)."""
    cwd = tmp_path_factory.mktemp("existing")
    res = run_pipeline("sweep", *TINY, "grid.lr=[0.02]", "cluster.n_workers=1", "store=s.zarr", cwd=cwd)
    assert res.returncode == 0, res.stdout + res.stderr
    return cwd / "s.zarr"


BAD = [
    (["grid.lr=[]"], "grid.lr: empty list of values"),
    (["~grid.lr"], "grid: empty"),
    (["grid.lr=[0.01,fast]"], "grid.lr: expected numbers, got 'fast'"),
    (["grid.batch_size=[1,two]"], "grid.batch_size: expected numbers, got 'two'"),
    (["landscape=no_such_landscape"], "landscape: unknown option 'no_such_landscape'"),
    (["no_such_key=1"], "no_such_key: unknown config key"),
    (["mc.no_such_key=1"], "mc.no_such_key: unknown config key"),
    (["grid.no_such_key=[1,2]"], "grid.no_such_key: no such config key"),
    (["grid.lr=[0.01,0.0]"], "lr: must be > 0, got 0.0"),
    (["grid.lr=[-0.01]"], "lr: must be > 0, got -0.01"),
    (["~grid.lr", "grid.batch_size=[1]", "lr=-1"], "lr: must be > 0, got -1.0"),
    (["grid.batch_size=[1,3]"], "batch_size: 3 is larger than the dataset"),
    (["lr=fast"], "lr: Value 'fast'"),
    (["grid.time.t_end=[1,2]"], "grid.time.t_end: time.t_end cannot be swept"),
    (["grid.lr={start:0.01,stop:0.1}"], "grid.lr: range spec needs 'num'"),
    (["cluster=address"], "cluster.address: missing"),
    # The three the first user trial found, and more settings known to fail before computing.
    # (the default sweep's grid: conf/domain/seed_two_point.yaml)
    (["escape.threshold=100"], "escape.threshold: 100 lies outside the density grid [-0.8, 3.2]; it must "
                               "lie within [-0.79"),
    (["escape.threshold=-3"], "escape.threshold: -3 lies outside the density grid [-0.8, 3.2]"),
    (["+landscape._target_=subprocess.getoutput"],
     "landscape._target_: subprocess.getoutput: TypeError: getoutput() got an unexpected keyword argument"),
    (["+landscape._target_=builtins.dict"], "landscape._target_: 'builtins.dict' returned dict, expected "
                                            "sgdsweep.Landscape"),
    (["+landscape._target_=no.such.module"], "landscape._target_: cannot import 'no.such.module'"),
    (["grid.lr={start: 0.001, stop: 0.1, num: 10000000}"],
     "grid: 10000000 cells (lr[10000000]) exceeds the limit of 100000 cells per store"),
    (["grid.lr={start: 0.001, stop: 0.1, num: 1000}", "grid.seed={start: 0, stop: 999, num: 1000}"],
     "grid: 1000000 cells (lr[1000] x seed[1000]) exceeds the limit of 100000 cells per store"),
    (["cells_per_task=0"], "cells_per_task: must be >= 1, got 0"),
    (["retries=-1"], "retries: must be >= 0, got -1"),
    (["shard_cells=0"], "shard_cells: must be >= 1, got 0"),
    (["store_writer=disk"], "store_writer: must be client or workers, got 'disk'"),
    (["density_grid.cells=2"], "density_grid.cells: must be >= 3, got 2"),
    (["time.snapshots=1"], "time.snapshots: must be >= 2, got 1"),
    (["mc.chains=0"], "mc.chains: must be >= 1, got 0"),
    (["fp.convention=foo"], "fp.convention: unknown 'foo'"),
    (["sampling=foo"], "sampling: unknown 'foo'"),
    (["methods=[foo]"], "methods: unknown method 'foo'"),
    (["time.t_end=1e9"], "time.t_end: 1000000000.0 / lr 0.005 = 200000000000 SGD steps exceeds "
                          "mc.max_steps"),
    (["fp.refine=0"], "fp.refine: must be >= 1, got 0"),
    (["langevin.temperature=-1"], "langevin.temperature: must be > 0, got -1.0"),
    (["grid.lr={start:0.01,stop:0.1,num:0}"], "grid.lr: range num must be an integer >= 1, got 0"),
    (["grid.lr={start:-0.01,stop:0.1,num:3,log:true}"], "grid.lr: log range needs start, stop > 0"),
    (["grid.lr=[0.01,0.01]"], "grid.lr: duplicate value 0.01"),
    (["density_grid.lower=1"], "density_grid: [1.0, 3.2] does not cover the initial distribution"),
    (["grid.seed=[0,1.5]"], "seed: expected an integer, got 1.5"),
    (["cluster.n_workers=0"], "cluster.n_workers: must be an integer >= 1 or null, got 0"),
    (["cluster.n_workers=two"], "cluster.n_workers: Value 'two'"),
    (["+cluster.threads=2"], "cluster.threads: unknown key for cluster kind 'local'"),
    # Batch-job settings are checked before the store is touched (not when the cluster starts).
    (["cluster=slurm", "cluster.cores=0"], "cluster.cores: expected a positive integer, got 0"),
    (["cluster=pbs", "cluster.processes=4"], "cluster.processes: 4 worker processes need at least as many"),
    (["cluster=slurm", "cluster.maximum_jobs=0"], "cluster.maximum_jobs: must be at least 1"),
    (["cluster=slurm", "cluster.memory=null"], "cluster.memory: field 'cluster.memory' is not Optional"),
    (["grid.store=[a,b]"], "grid.store: store cannot be swept"),
    (["init.std=-1"], "init.std: must be > 0 for a normal initial law"),
    (["overwrite=maybe"], "overwrite: Value 'maybe' is not a valid bool"),
    (["methods=[sgd,svag]", "svag.l=0"], "svag.l: must be >= 1, got 0"),
    (["methods=[sgd,svag]", "grid.svag.l=[2,0]"], "svag.l: must be >= 1, got 0"),
    (["methods=[sgd_noise]", "sgd_noise.sigma=-1"], "sgd_noise.sigma: must be >= 0, got -1.0"),
    (["landscape=heavy_tailed", "landscape.shift_nu=0"], "landscape.shifts.nu: must be > 0, got 0"),
    (["landscape=anisotropic_2d", "methods=[sgd,gauss_step]"],
     "methods: gauss_step supports 1-D landscapes only, this one is 2-D"),
    (["methods=[sgd,sgd_op]", "sampling=reshuffle"],
     "sampling: 'reshuffle' is not a Markov chain in θ alone"),
    (["methods=[sgd_op]", "batch_size=2", "operator.max_minibatches=2", "operator.approximate=false"],
     "operator.max_minibatches: 3 distinct minibatches (n = 2, b = 2, with_replacement) exceed the limit 2"),
    (["methods=[gauss_step]", "density_grid.cells=10", "operator.refine=1"],
     "density_grid.cells: 10 cells × refine 1"),
    (["operator.quadrature=0"], "operator.quadrature: must be >= 1, got 0"),
    # Refused before computing: a cell that cannot fit in a worker's memory (was: OOM kill, exit −9)
    # (the estimate itself: tests/test_properties.py::test_cell_memory_counts_the_layout)
    (["density_grid.cells=1000000000"], "density_grid.cells: a cell needs at least "),
    (["mc.chains=100000000000"], "mc.chains: a cell needs at least "),
    (["cluster.memory_limit=100MiB", "density_grid.cells=1000000"],
     "density_grid.cells: a cell needs at least "),
    # The grid's dimension against the landscape's (was: a NumPy broadcast traceback)
    (["density_grid.lower=[-1,-1]", "density_grid.upper=[1,1]", "density_grid.cells=[10,10]"],
     "density_grid.lower: [-1, -1] gives 2 values for a 1-D landscape; give one number (in the cell lr="),
    (["landscape=anisotropic_2d", "density_grid.cells=[10,20,30]"],
     "density_grid.cells: [10, 20, 30] gives 3 values for a 2-D landscape; give one number, or 2 (one per "
     "axis) (in the cell lr="),
    (["landscape=anisotropic_2d", "density_grid.lower=[-1]"],
     "density_grid.lower: [-1] gives 1 value for a 2-D landscape; give one number, or 2 (one per axis)"),
]


def _run(capsys, args: list[str]) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(("overrides", "message"), BAD, ids=[" ".join(o) for o, _ in BAD])
def test_bad_input_is_one_line_and_store_untouched(capsys, tmp_path, existing_store, overrides, message):
    assert len(BAD) >= 30
    store = tmp_path / "s.zarr"
    shutil.copytree(existing_store, store)
    before = snapshot(store)
    code, _, err = _run(capsys, ["sweep", *TINY, f"store={store}", *overrides])
    assert code == 2
    assert err.startswith(f"error: {message}"), err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert snapshot(store) == before


def test_unwritable_store_path(capsys, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    code, _, err = _run(capsys, ["sweep", *TINY, f"store={blocker}/sub/s.zarr"])
    assert code == 2
    assert err == f"error: store: cannot create {blocker}/sub/s.zarr: {blocker} is not a directory\n"
    assert blocker.read_text() == "not a directory"


def test_existing_store_of_another_sweep_is_refused(capsys, tmp_path, existing_store):
    store = tmp_path / "s.zarr"
    shutil.copytree(existing_store, store)
    before = snapshot(store)
    code, _, err = _run(capsys, ["sweep", *TINY, f"store={store}", "grid.lr=[0.03]"])
    assert code == 2
    assert err.startswith(f"error: store: {store} holds a different sweep (config hash ")
    assert "overwrite=true" in err and err.count("\n") == 1
    assert snapshot(store) == before


def test_not_a_store_is_refused(capsys, tmp_path):
    store = tmp_path / "s.zarr"
    store.mkdir()
    (store / "notes.txt").write_text("mine")
    before = snapshot(store)
    code, _, err = _run(capsys, ["sweep", *TINY, f"store={store}"])
    assert code == 2 and "is not a sweep store" in err
    assert snapshot(store) == before


def test_status_of_missing_store(capsys, tmp_path):
    code, _, err = _run(capsys, ["status", str(tmp_path / "nothing.zarr")])
    assert code == 2 and err == f"error: store: {tmp_path / 'nothing.zarr'} does not exist\n"


@pytest.mark.integration
def test_errors_through_a_real_process(tmp_path, existing_store):
    """The same contract as seen by a shell: exit status and stderr of the process."""
    store = tmp_path / "s.zarr"
    shutil.copytree(existing_store, store)
    before = snapshot(store)
    for overrides, message in [(["no_such_key=1"], "no_such_key: unknown config key"),
                               (["grid.lr=[0.05]"], f"store: {store} holds a different sweep"),
                               (["landscape=nope"], "landscape: unknown option 'nope'")]:
        res = run_pipeline("sweep", *TINY, f"store={store}", *overrides, cwd=tmp_path)
        assert res.returncode == 2
        assert res.stderr.startswith(f"error: {message}") and res.stderr.count("\n") == 1, res.stderr
        assert res.stdout == ""
    assert snapshot(store) == before


# The commands' own flags (argparse) follow the same contract: no usage dump, one line naming the option.
BAD_FLAGS = [
    (["submit", "--bogus"], "error: --bogus: unknown option (submit takes Hydra overrides, -cd DIR, -cn NAME "
                            "and --dry-run)\n"),
    (["submit", "--dry-run=yes"], "error: --dry-run: ignored explicit argument 'yes'\n"),
    (["submit", "--dry-run", "mc.chains=5", "--bogus=1"],
     "error: --bogus=1: unknown option (submit takes Hydra overrides, -cd DIR, -cn NAME and --dry-run)\n"),
    (["submit", "--dry-run", "-cn"], "error: --config-name: expected a config name\n"),
    (["status", "s.zarr", "--bogus"], "error: --bogus: unknown option\n"),
    (["status"], "error: store: missing (usage: python -m pipeline status [-h] [--verify] [--repair] "
                "[--store-options JSON] store)\n"),
    (["status", "s.zarr", "--repair"],
     "error: --repair: use it with --verify (status STORE --verify --repair)\n"),
    (["report", "s.zarr", "--out"], "error: --out: expected one argument\n"),
]


@pytest.mark.parametrize(("args", "message"), BAD_FLAGS, ids=[" ".join(a) for a, _ in BAD_FLAGS])
def test_bad_flags_of_submit_status_report_are_one_line(capsys, args, message):
    code, out, err = _run(capsys, args)
    assert (code, out, err) == (2, "", message)


@pytest.mark.integration
def test_submit_bad_option_through_a_real_process(tmp_path):
    res = run_pipeline("submit", "--bogus", cwd=tmp_path)
    assert res.returncode == 2
    assert res.stderr == ("error: --bogus: unknown option (submit takes Hydra overrides, -cd DIR, -cn NAME "
                          "and --dry-run)\n"), res.stderr
    assert res.stdout == "" and list(tmp_path.iterdir()) == []


#: ``python -m pipeline ARGS`` as with an editable install: the project is found by a finder
#: placed after Python's path finder (as setuptools' editable finder is), not on sys.path, so a
#: folder ``sgdsweep/`` in the current directory wins the top-level import while the project's
#: submodules still load — the situation of a user in the parent directory of a checkout.
_EDITABLE_LAUNCHER = """
import importlib.machinery, pathlib, sys
REPO = pathlib.Path({repo!r})
class EditableFinder:
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        parts = name.split(".")
        if parts[0] not in ("sgdsweep", "pipeline"):
            return None
        return importlib.machinery.PathFinder.find_spec(name, [str(REPO.joinpath(*parts[:-1]))])
# right after the path finder: ahead of the installed package's own editable finder, if any
sys.meta_path.insert(sys.meta_path.index(importlib.machinery.PathFinder) + 1, EditableFinder)
sys.argv = ["pipeline", *sys.argv[1:]]
import runpy
runpy.run_module("pipeline", run_name="__main__", alter_sys=True)
"""


def test_folder_named_sgdsweep_in_the_working_directory(tmp_path):
    """Run from the parent of a checkout named ``sgdsweep/``: one ``error:`` line naming the
    folder, exit 2, before anything is composed or created (was: AttributeError: module
    'sgdsweep' has no attribute 'cell_template')."""
    import subprocess
    import sys

    from tests.conftest import ENV, REPO

    (tmp_path / "sgdsweep").mkdir()
    env = {k: v for k, v in ENV.items() if k != "PYTHONPATH"}
    res = subprocess.run([sys.executable, "-c", _EDITABLE_LAUNCHER.format(repo=str(REPO)), "sweep",
                          *TINY, "store=s.zarr"], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 2, res.stderr
    assert res.stderr == (f"error: sgdsweep: the folder {tmp_path / 'sgdsweep'} shadows the installed "
                          "sgdsweep package (Python imports from the current directory first); run from "
                          "another directory or rename the folder\n"), res.stderr
    assert res.stdout == "" and [p.name for p in tmp_path.iterdir()] == ["sgdsweep"]
