"""sgdsweep: where does SGD's probability mass go, and how well does the SDE /
Fokker–Planck picture predict it? The science library (no Dask, no Hydra)."""

import sgdsweep.analysis.accessor  # noqa: F401  (registers the ds.sgd accessor)
from sgdsweep.analysis.reductions import open_sweep
from sgdsweep.cell.config import CellConfig, CellSchema, parse_cell, register_section
from sgdsweep.cell.run import cell_template, run_cell
from sgdsweep.errors import ConfigError
from sgdsweep.landscapes.grid import Grid1D
from sgdsweep.landscapes.landscape import Landscape, build_landscape
from sgdsweep.methods import Method, Variable, get_method, register_method

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
    if name == "plots":
        import importlib

        return importlib.import_module("sgdsweep.analysis.plots")
    raise AttributeError(f"module 'sgdsweep' has no attribute {name!r}")
