"""The command line: ``python -m pipeline {sweep,status,report,submit} …``.

Bad input of any kind — Hydra overrides, config values, grids, store paths —
ends as one line ``error: <field>: <problem>`` on stderr with exit status 2,
before any store is created or changed.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Sequence

from pipeline.cli.args import hydra_flags
from pipeline.cli.help import help_text
from pipeline.run.faults import StoreWriteError
from sgdsweep.errors import ConfigError

#: command -> (module, function): each command's module is imported only when it runs
#: (``status`` must not pay for Hydra, ``sweep`` not for matplotlib).
COMMANDS: dict[str, tuple[str, str]] = {
    "sweep": ("pipeline.cli.sweep", "sweep_main"),
    "status": ("pipeline.cli.status", "status_main"),
    "report": ("pipeline.cli.report", "report_main"),
    "submit": ("pipeline.cli.submit", "submit_main"),
}


def command(name: str) -> Callable[[list[str]], int]:
    """The entry function of command ``name``."""
    if name not in COMMANDS:
        raise ConfigError(f"command: unknown {name!r} (known: {', '.join(COMMANDS)})")
    module, function = COMMANDS[name]
    return getattr(importlib.import_module(module), function)


def check_not_shadowed() -> None:
    """ConfigError naming the folder when ``sgdsweep`` was imported from a bare folder (a
    namespace package, no ``__init__.py``) — e.g. run from the parent directory of a checkout
    named ``sgdsweep/``: Python looks in the current directory first, and with an editable
    install the submodules still load while the package's own names are missing."""
    package = importlib.import_module("sgdsweep")
    if getattr(package, "__file__", None) is None:
        folder = next(iter(getattr(package, "__path__", [])), "?")
        raise ConfigError(f"sgdsweep: the folder {folder} shadows the installed sgdsweep package "
                          "(Python imports from the current directory first); run from another "
                          "directory or rename the folder")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        sys.stdout.write(help_text([]))
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    try:
        check_not_shadowed()
        if name == "submit":  # its own parser takes the long forms, with absolute paths
            rest, config_name, config_dirs = hydra_flags(rest)
            flags = [a for d in config_dirs for a in ("--config-dir", d)]
            rest = [*(["--config-name", config_name] if config_name else []), *flags, *rest]
        return command(name)(rest)
    except ConfigError as exc:
        sys.stderr.write(f"error: {' '.join(str(exc).split())}\n")
        return 2
    except StoreWriteError as exc:
        sys.stderr.write(f"error: {' '.join(str(exc).split())}\n")
        return 3
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130
