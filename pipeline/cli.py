"""The command line: ``python -m pipeline {sweep,status,report,submit} …``.

Bad input of any kind — Hydra overrides, config values, grids, store paths —
ends as one line ``error: <field>: <problem>`` on stderr with exit status 2,
before any store is created or changed.
"""

from __future__ import annotations

import argparse
import importlib
import re
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from pipeline.faults import StoreWriteError
from sgdsweep.errors import ConfigError

USAGE = """\
usage: python -m pipeline sweep [-cd DIR] [-cn NAME] [OVERRIDE ...] [--cfg job]
       python -m pipeline status STORE [--verify] [--store-options JSON]
       python -m pipeline report STORE [--out DIR] [--store-options JSON]
       python -m pipeline submit [-cd DIR] [-cn NAME] [OVERRIDE ...] [--dry-run]

sweep   run the grid of cells described by conf/config.yaml plus Hydra overrides
        (e.g. landscape=two_basin grid.lr='[0.005,0.01]' grid.width_left='[0.1,0.2]'
        cluster=address cluster.address=tcp://host:8786); rerunning the same
        command resumes an interrupted store. --cfg job prints the resolved config.
status  cells done/total, failures with messages, and the config of a store;
        --verify reads every chunk and lists the cells whose data is corrupt
report  figures and tables from a store
STORE   a path, or a URL such as s3://bucket/sweep.zarr (credentials and endpoint: the
        AWS environment, or --store-options / store_options with fsspec storage options)
submit  run the sweep as a batch job on a cluster (SLURM)

your own configs (as in any Hydra application):
  -cd, --config-dir DIR    add DIR to the config search path (after the package's
                           own tree), so DIR/landscape/NAME.yaml is landscape=NAME and
                           DIR/experiment/NAME.yaml is +experiment=NAME
  -cn, --config-name NAME  the primary config NAME.yaml instead of config.yaml (e.g. one
                           in DIR that starts with `defaults: [config, _self_]`)
  hydra.searchpath=[file:///abs/dir,pkg://module]   the same as an override

exit status: 0 success, 1 some cells failed, 2 bad input, 3 the store could not be
             written (no space, read-only, I/O error), 130 interrupted
"""


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        sys.stdout.write(help_text([]))
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    try:
        if command == "sweep":
            return sweep_main(rest)
        if command == "submit":  # its own parser takes the long forms, with absolute paths
            rest, config_name, config_dirs = hydra_flags(rest)
            flags = [a for d in config_dirs for a in ("--config-dir", d)]
            rest = [*(["--config-name", config_name] if config_name else []), *flags, *rest]
        if command == "status":
            from pipeline.status import status_main

            return status_main(rest)
        if command in ("report", "submit"):
            mod = importlib.import_module(f"pipeline.{command}")
            return getattr(mod, f"{command}_main")(rest)
        raise ConfigError(f"command: unknown {command!r} (known: sweep, status, report, submit)")
    except ConfigError as exc:
        sys.stderr.write(f"error: {' '.join(str(exc).split())}\n")
        return 2
    except StoreWriteError as exc:
        sys.stderr.write(f"error: {' '.join(str(exc).split())}\n")
        return 3
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130


class OneLineParser(argparse.ArgumentParser):
    """An argparse parser for the commands' own flags whose errors follow the CLI's contract:
    a :class:`ConfigError` ``<option>: <problem>`` (printed as one line, exit 2), never the
    usage dump and ``SystemExit`` of plain argparse. ``hint`` ends the message of an unknown
    option (what the command takes instead)."""

    def __init__(self, *args, hint: str = "", **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.hint = hint

    def error(self, message: str) -> None:  # type: ignore[override]
        if message.startswith("unrecognized arguments: "):
            first = message.removeprefix("unrecognized arguments: ").split()[0]
            raise ConfigError(f"{first}: unknown option" + (f" ({self.hint})" if self.hint else ""))
        if message.startswith("the following arguments are required: "):
            names = message.removeprefix("the following arguments are required: ")
            raise ConfigError(f"{names}: missing (usage: {self.format_usage().split(':', 1)[1].strip()})")
        named = re.match(r"argument ([^:]+): (.*)", message, re.DOTALL)
        if named:  # "argument --out: expected one argument"
            raise ConfigError(f"{named.group(1)}: {named.group(2)}")
        raise ConfigError(f"{self.prog.split()[-1]}: {message}")


def _flag_value(flag: str, a: str, args: list[str]) -> str:
    if "=" in a:
        return a.split("=", 1)[1]
    if not args or args[0].startswith("-"):
        raise ConfigError(f"{flag}: expected a {'directory' if flag == '--config-dir' else 'config name'}")
    return args.pop(0)


def hydra_flags(argv: Sequence[str]) -> tuple[list[str], str | None, list[str]]:
    """Take Hydra's ``-cd/--config-dir DIR`` and ``-cn/--config-name NAME`` out of ``argv``.

    Returns the remaining arguments, the config name (None: ``config``) and the config
    directories as absolute paths (so a ``submit`` batch job started elsewhere finds them).
    """
    rest, name, dirs = [], None, []
    args = list(argv)
    while args:
        a = args.pop(0)
        flag = a.split("=", 1)[0]
        flag = {"-cd": "--config-dir", "-cn": "--config-name"}.get(flag, flag)
        if flag == "--config-dir":
            path = Path(_flag_value(flag, a, args)).expanduser().absolute()
            if not path.is_dir():
                raise ConfigError(f"--config-dir: {path} is not a directory")
            dirs.append(str(path))
        elif flag == "--config-name":
            name = _flag_value(flag, a, args).removesuffix(".yaml")
        else:
            rest.append(a)
    return rest, name, dirs


def search_dirs(overrides: Sequence[str], config_dirs: Sequence[str] = ()) -> list[Path]:
    """The directories of the config search path: the package's tree, the config dirs,
    then the ``hydra.searchpath`` entries."""
    from importlib.resources import files

    from hydra.core.override_parser.overrides_parser import OverridesParser

    from pipeline.config import CONF_DIR

    out = [CONF_DIR, *(Path(d) for d in config_dirs)]
    for o in overrides:
        if o.startswith("hydra.searchpath="):
            for entry in OverridesParser.create().parse_override(o).value():
                if entry.startswith("pkg://"):
                    try:
                        out.append(Path(str(files(entry.removeprefix("pkg://").replace("/", ".")))))
                    except (ImportError, TypeError):
                        pass
                else:
                    out.append(Path(entry.removeprefix("file://")))
    return out


def config_groups(dirs: Sequence[Path]) -> dict[str, list[str]]:
    """Config group -> its options (YAML files), over the search-path directories."""
    groups: dict[str, set[str]] = {}
    for d in dirs:
        for f in sorted(Path(d).glob("*/*.yaml")):
            groups.setdefault(f.parent.name, set()).add(f.stem)
    return {g: sorted(o) for g, o in sorted(groups.items())}


def help_text(overrides: Sequence[str], config_dirs: Sequence[str] = ()) -> str:
    """USAGE, then the config groups and their options along the search path."""
    import yaml

    from pipeline.config import CONF_DIR

    try:
        dirs = search_dirs(overrides, config_dirs)
        defaults = yaml.safe_load((CONF_DIR / "config.yaml").read_text()).get("defaults", [])
    except Exception:  # help must print even where the config tree is broken
        dirs, defaults = [CONF_DIR], []
    chosen = {k: v for d in defaults if isinstance(d, dict) for k, v in d.items()}
    lines = ["", "config groups (GROUP=OPTION; experiments: +experiment=NAME; * = default):"]
    for group, options in config_groups(dirs).items():
        opts = ", ".join(o + ("*" if chosen.get(group) == o else "") for o in options)
        lines.append(f"  {group:<11} {opts}")
    lines.append("config search path: " + ", ".join(str(d) for d in dirs))
    return USAGE + "\n".join(lines) + "\n"


def sweep_main(argv: Sequence[str]) -> int:
    from omegaconf import OmegaConf

    from pipeline.config import compose

    show = None
    overrides = []
    args, config_name, config_dirs = hydra_flags(argv)
    if any(a in ("-h", "--help") for a in args):
        sys.stdout.write(help_text(args, config_dirs))
        return 0
    while args:
        a = args.pop(0)
        if a in ("--cfg", "-c"):
            if not args or args[0] not in ("job", "all"):
                raise ConfigError("--cfg: expected 'job'")
            show = args.pop(0)
        elif a.startswith("--cfg="):
            show = a.split("=", 1)[1]
        elif a.startswith("-"):
            raise ConfigError(f"{a}: unknown option (sweep takes Hydra overrides, -cd DIR, -cn NAME "
                              "and --cfg job)")
        else:
            overrides.append(a)
    cfg = compose(overrides, config_name or "config", config_dirs)
    if show:
        sys.stdout.write(OmegaConf.to_yaml(cfg, resolve=True))
        return 0
    from pipeline import lock
    from pipeline.sweep import run_sweep

    # SIGTERM (scancel, a batch time limit) stops the sweep like Ctrl-C: the cells written
    # are kept, the run is recorded and the store's lock released for the next job.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        return run_sweep(cfg, ["sweep", *argv])
    finally:
        lock.release_all()  # the store's lock, taken by run_sweep once the input is valid
        signal.signal(signal.SIGTERM, previous)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
