"""Sphinx configuration of the sgdsweep documentation (see docs/README.md for why these tools)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
# The checkout is documented, not whatever copy of the packages happens to be installed;
# the notebook kernel inherits PYTHONPATH, so it imports the same code.
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(DOCS / "_ext"))
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))

project = "sgdsweep"
author = "the sgdsweep authors"
copyright = "2026, the sgdsweep authors"

extensions = [
    "myst_nb",  # MyST Markdown pages and executed notebooks
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "clihelp",  # the CLI reference, from the commands' own --help text
    "configkeys",  # the config-key reference, from the schemas
]

exclude_patterns = ["_build", "README.md", "Thumbs.db", ".DS_Store", "**.ipynb_checkpoints",
                    "tutorial_results"]
# .rst first: autosummary writes its generated API pages (reST) with the first suffix.
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}

myst_enable_extensions = ["dollarmath", "colon_fence", "deflist"]
myst_heading_anchors = 3

# The tutorial runs once per build (~40 s); any cell error fails the build.
nb_execution_mode = "force"
nb_execution_raise_on_error = True
nb_execution_show_tb = True  # the failing cell's traceback in the build log
nb_execution_timeout = 600
nb_execution_in_temp = True  # its store goes to a temporary directory, not into docs/
nb_merge_streams = True

autosummary_generate = True
autodoc_default_options = {"members": True, "show-inheritance": False}
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_format = "short"
napoleon_google_docstring = False
napoleon_numpy_docstring = True
add_module_names = False

html_theme = "furo"
html_title = "sgdsweep"
html_static_path = ["_static"]

# Links outside the site are not followed in CI (no network); internal references are
# checked by the build itself (-W -n).
linkcheck_ignore = [r"https?://.*"]
