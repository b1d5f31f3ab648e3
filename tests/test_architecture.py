"""The house rules that can be checked mechanically: no import circles among the project's
modules, ``sgdsweep`` never imports ``pipeline``, and ``import sgdsweep`` loads no Dask
distributed, Hydra or pipeline (the science package is usable without the orchestration)."""

from __future__ import annotations

import ast
import graphlib
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("sgdsweep", "pipeline")


def _modules() -> dict[str, Path]:
    mods = {}
    for pkg in PACKAGES:
        for f in (ROOT / pkg).rglob("*.py"):
            rel = f.relative_to(ROOT).with_suffix("")
            mods[".".join(rel.parts[:-1] if rel.parts[-1] == "__init__" else rel.parts)] = f
    return mods


def _imports(name: str, path: Path, mods: dict[str, Path]) -> set[str]:
    """The project modules ``name`` imports (inside functions too: they still tie the modules
    together). An import of a package's ``__init__`` is a re-export and is not counted; the
    submodule it names is."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = [target, *(f"{target}.{a.name}" for a in node.names)]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        out |= {n for n in names if n in mods and n != name and mods[n].name != "__init__.py"}
    return out


def test_no_import_circles_and_science_never_imports_orchestration():
    mods = _modules()
    graph = {name: _imports(name, path, mods) for name, path in mods.items()}
    assert len(graph) > 100  # the walk found the packages
    try:
        tuple(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as exc:
        raise AssertionError(f"import circle: {' -> '.join(exc.args[1])}") from None
    upward = sorted((m, t) for m, ts in graph.items() if m.startswith("sgdsweep") for t in ts
                    if t.startswith("pipeline"))
    assert upward == []


def test_import_sgdsweep_loads_no_orchestration():
    code = ("import sys, sgdsweep, xarray as xr; xr.Dataset().sgd; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('distributed', 'hydra', 'omegaconf', 'pipeline', 'dask_jobqueue')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
