"""The config-key reference (``--help-keys``, the docs page), the kernel warm-up before a
sweep fans out, and the coverage check of a density grid: fast unit tests."""

from __future__ import annotations

import dataclasses

import numpy as np

from pipeline.cli.main import main
from pipeline.config import compose, expand
from pipeline.keys import INIT_FIELDS, config_keys, keys_markdown
from sgdsweep.cell import warmup
from sgdsweep.cell.config import CellSchema
from sgdsweep.landscapes import coverage
from sgdsweep.landscapes.grid import Grid1D
from sgdsweep.landscapes.landscape import _evaluate_points


def test_help_keys_lists_every_schema_key_with_type_default_and_unit(capsys):
    assert main(["sweep", "--help-keys"]) == 0
    out = capsys.readouterr().out
    assert "  lr: float = 0.02  [1]\n      learning rate η (SDE time t = η · step)\n" in out
    assert "  density_grid.cells: number | list = 250  [1]\n" in out
    assert "  fp.refine: int = 8  [1]\n      FP cells per density-grid cell\n" in out
    assert "  operator.diffusion_ratio: float = 0.01  [1]\n" in out  # a method's section
    assert "  cluster.walltime: str = 01:00:00  [HH:MM:SS]\n" in out  # a cluster kind's
    assert "init='{kind: uniform, lower: -2, upper: 2}'" in out
    paths = {k.path for keys in config_keys().values() for k in keys}
    for f in dataclasses.fields(CellSchema):
        assert f.name in paths or any(p.startswith(f.name + ".") for p in paths), f.name
    for kind, fields in INIT_FIELDS.items():
        assert all(f"init.{name}" in paths for name, _ in fields), kind
    table = keys_markdown()
    assert "| `mc.chains` | int | `1000` | 1 | chains per ensemble |" in table
    assert "## cluster=slurm" in table


def test_warmup_cells_deal_the_methods_over_the_workers_and_keep_the_types():
    cell = expand(compose([])).parsed[0]
    parts = warmup.warmup_cells(cell, 2)
    # families that share kernels stay together: sde, langevin and gd step with one kernel
    assert [p.methods for p in parts] == [("sgd", "fp", "sgd_op"), ("sde", "langevin", "gd", "fp_drift")]
    for p in parts:
        assert p.chains == warmup.WARMUP_CHAINS and list(p.steps) == [0, warmup.WARMUP_STEPS]
        assert p.grids == cell.grids and type(p.landscape) is type(cell.landscape)
        assert p.landscape.arrays == cell.landscape.arrays
        assert [m.name for m in p.method_specs] == list(p.methods)
    assert len(warmup.warmup_cells(cell, 64)) == 5  # sgd | sde, langevin, gd | fp | fp_drift | sgd_op


def test_warmup_marker_tells_a_cold_cache_from_a_warm_one(tmp_path, monkeypatch):
    monkeypatch.setattr(_evaluate_points._cache, "_cache_path", str(tmp_path / "cache"))
    cell = expand(compose([])).parsed[0]
    assert not warmup.kernels_cached(cell)
    warmup.mark_cached(cell)
    assert warmup.kernels_cached(cell)
    other = dataclasses.replace(cell, methods=("sgd",), method_specs=cell.method_specs[:1])
    assert not warmup.kernels_cached(other)  # another set of methods: other kernels


def test_uncovered_minima_and_stationary_spread():
    two = expand(compose(["landscape=two_basin"])).parsed[0].landscape
    found = coverage.uncovered(two, [Grid1D(-1.0, 4.0, 250)], 0.02, 1.0)
    assert len(found) == 1 and abs(found[0][0][0] + 0.99) < 0.01 and found[0][1] == "the minimum itself"
    assert coverage.uncovered(two, [Grid1D(-3.5, 3.5, 280)], 0.02, 1.0) == []
    tilted = expand(compose(["landscape=tilted_2d", "methods=[sgd,fp]"])).parsed[0].landscape
    grids = [Grid1D(-1.0, 4.0, 50)] * 2
    assert coverage.uncovered(tilted, grids, 0.005, 1.0) == []  # a narrow law around the origin
    (point, why), = coverage.uncovered(tilted, grids, 0.04, 1.0)  # its spread crosses θ = −1
    np.testing.assert_allclose(point, [0.0, 0.0], atol=0.05)
    assert why.startswith("its stationary spread ±(")


class _Future:
    def __init__(self, fn, *args):
        self._value = fn(*args)

    def result(self):
        return self._value

    def release(self):
        pass


class _InlineClient:
    """Runs what is submitted at once, in this process (two one-thread "workers")."""

    def __init__(self):
        self.submitted = []

    def submit(self, fn, *args, pure=True):
        self.submitted.append(fn.__name__)
        return _Future(fn, *args)

    def gather(self, futures):
        return [f.result() for f in futures]

    def nthreads(self):
        return {"w0": 1, "w1": 1}


def test_warm_up_compiles_once_on_a_cold_cache_and_says_so(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from pipeline.run.sweep import warm_up

    monkeypatch.setattr(_evaluate_points._cache, "_cache_path", str(tmp_path / "cache"))
    plan = expand(compose(["methods=[gd,fp]", "mc.chains=8", "density_grid.cells=40", "grid.lr=[0.1,0.2]"]))
    prep = SimpleNamespace(plan=plan, todo=[0, 1])
    said: list[str] = []
    client = _InlineClient()
    assert warm_up(client, prep, said.append) > 0
    assert said[0] == ("compiling kernels (first run; cached for the next): 2 warm-up task(s) on "
                       "2 worker(s) ...")
    assert said[1].startswith("kernels compiled in ")
    # one check of the cache, one warm-up cell per worker (gd | fp), then the marker
    assert client.submitted == ["kernels_cached", "run_cell", "run_cell", "mark_cached"]
    said.clear()
    assert warm_up(_InlineClient(), prep, said.append) == 0.0 and said == []  # warm: nothing to do
