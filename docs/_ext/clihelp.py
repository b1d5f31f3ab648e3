"""``{cli-help} COMMAND``: the ``--help`` text of ``python -m pipeline COMMAND`` as a literal
block, so the CLI reference is the parsers' own text and cannot drift from them.
``{cli-help} usage`` is the top-level usage (``pipeline.cli.help.USAGE``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective

ROOT = Path(__file__).resolve().parents[2]


class CliHelp(SphinxDirective):
    required_arguments = 1

    def run(self) -> list[nodes.Node]:
        command = self.arguments[0]
        argv = ["--help"] if command == "usage" else [command, "--help"]
        env = {**os.environ, "COLUMNS": "100"}
        run = subprocess.run([sys.executable, "-m", "pipeline", *argv], capture_output=True, text=True,
                             env=env, timeout=120)
        if run.returncode != 0 or not run.stdout.strip():
            raise self.error(f"python -m pipeline {' '.join(argv)} failed ({run.returncode}): {run.stderr}")
        # The search path printed by the usage is this machine's; show it relative to the checkout.
        text = run.stdout.rstrip().replace(str(ROOT), "<checkout>")
        block = nodes.literal_block(text, text)
        block["language"] = "text"
        return [block]


def setup(app: Sphinx) -> dict[str, object]:
    app.add_directive("cli-help", CliHelp)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
