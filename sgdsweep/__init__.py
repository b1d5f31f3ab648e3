"""sgdsweep: where does SGD's probability mass go, and how well does the SDE /
Fokker–Planck picture predict it? The science library (no Dask, no Hydra)."""

import sgdsweep.analysis.accessor  # noqa: F401  (registers the ds.sgd accessor)
from sgdsweep.analysis.reductions import open_sweep
from sgdsweep.errors import ConfigError
from sgdsweep.landscapes.grid import Grid1D
from sgdsweep.landscapes.landscape import Landscape, build_landscape
from sgdsweep.methods import Method, Variable, get_method, register_method

#: Names imported on first use (``sgdsweep.run_cell``, ``from sgdsweep import CellConfig``):
#: the cell's config and runner bring numba and scipy (~0.6 s), which reading a store
#: (``status``, ``report``, ``open_sweep``) does not need.
_LAZY = {"CellConfig": "sgdsweep.cell.config", "CellSchema": "sgdsweep.cell.config",
         "parse_cell": "sgdsweep.cell.config", "register_section": "sgdsweep.cell.config",
         "cell_template": "sgdsweep.cell.run", "run_cell": "sgdsweep.cell.run",
         "plots": None}

__all__ = [
    "CellConfig",
    "CellSchema",
    "ConfigError",
    "Grid1D",
    "Landscape",
    "Method",
    "Variable",
    "build_landscape",
    "cell_template",
    "get_method",
    "open_sweep",
    "parse_cell",
    "register_method",
    "register_section",
    "run_cell",
]
__version__ = "0.1.0"


def __getattr__(name: str):
    # ``from sgdsweep import plots`` (notebooks written before the analysis/ folder): the figures
    # load matplotlib, so they are imported on first use, not with the package.
    if name in _LAZY:
        import importlib

        if name == "plots":
            return importlib.import_module("sgdsweep.analysis.plots")
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'sgdsweep' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
