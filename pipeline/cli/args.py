"""Argument parsing shared by the commands: a parser whose errors are one line, and
Hydra's ``-cd/-cn`` flags taken out of an argument list."""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from pathlib import Path

from sgdsweep.errors import ConfigError


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
