"""Chains lost off the grid and too few escapes are said, not hidden: in the sweep's summary
lines, in ``status`` and in the report (a store written in process, no cluster)."""

from __future__ import annotations

import io

import numpy as np
import pytest

import sgdsweep
from pipeline.cli.report import write_report
from pipeline.cli.status import status_main
from pipeline.config import compose, expand
from pipeline.run.sweep import store_warnings, templates
from pipeline.store import store as stores
from pipeline.store.location import parse
from sgdsweep.cell.schema import LOST_FLAG, MIN_ESCAPES
from tests.conftest import TINY

#: The seed model on a grid ending at 1.6, short of the wide minimum at θ = 2 where the
#: chains go: by t = 2 SGD has lost ~16 % of its 64 chains, the SDE 1–2 %; the SDE's few
#: escapes (4) are below MIN_ESCAPES.
LOSSY = [*TINY, "grid.lr=[0.02,0.01]", "time.t_end=2", "density_grid.lower=-0.6", "density_grid.upper=1.6"]


@pytest.fixture(scope="module")
def lossy_store(tmp_path_factory):
    plan = expand(compose(LOSSY))
    cell = templates(plan)
    tmpl = stores.build_template(plan, cell, stores.provenance(plan, cell.attrs, ["sweep", "test"]))
    path = tmp_path_factory.mktemp("lossy") / "s.zarr"
    stores.create(parse(path), tmpl, replace=False)
    writer = stores.CellWriter(parse(path), tmpl, ["lr"])
    results = []
    for i, c in enumerate(plan.cells):
        results.append(sgdsweep.run_cell(c))
        writer.write(plan.index(i), results[-1])
    writer.finish({"runs": "[]"})
    return path, results


def test_lost_and_few_escapes_are_warned(lossy_store, tmp_path):
    path, results = lossy_store
    lost = {(i, m): float(r.lost_fraction.values[list(r.method.values).index(m), -1])
            for i, r in enumerate(results) for m in ("sgd", "sde")}
    worst = max(lost.values())
    assert worst > LOST_FLAG  # the premise: this sweep loses chains
    ds = stores.read_status(parse(path))
    lines = store_warnings(ds)
    lost_line = next(line for line in lines if line.startswith("lost       :"))
    assert f"lost {worst:.1%}" in lost_line and "widen density_grid" in lost_line
    n_lost = sum(v > LOST_FLAG for v in lost.values())
    assert f"{n_lost} method(s) × cell(s) lost more than 1%" in lost_line
    counts = np.asarray(ds.escape_count.values)[..., :2]  # methods sgd, sde (fp: NaN)
    n_few = int((counts < MIN_ESCAPES).sum())
    assert n_few >= 1
    assert any(line.startswith(f"escapes    : {n_few} method(s)") for line in lines)

    out = io.StringIO()
    status_main([str(path)], out=out)
    text = out.getvalue()
    assert text.count("\nlost    : ") == n_lost and "of its chains off the grid (> 1%" in text
    assert text.count("\nescapes : ") == n_few

    page = write_report(parse(path), tmp_path / "report").read_text()
    assert "lost more than 1% of their chains" in page and f"lost {worst:.1%}" in page
    assert f"fewer than {MIN_ESCAPES} escapes" in page
    assert "± SE" in page  # the escape table shows the censoring-aware estimate
