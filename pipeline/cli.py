"""The command line: ``python -m pipeline {sweep,status,report,submit} …``.

Bad input of any kind — Hydra overrides, config values, grids, store paths —
ends as one line ``error: <field>: <problem>`` on stderr with exit status 2,
before any store is created or changed.
"""

from __future__ import annotations

import importlib
import importlib.util
import signal
import sys
from collections.abc import Sequence

from pipeline.faults import StoreWriteError
from sgdsweep.errors import ConfigError

USAGE = """\
usage: python -m pipeline sweep [OVERRIDE ...] [--cfg job]
       python -m pipeline status STORE [--verify]
       python -m pipeline report STORE [...]
       python -m pipeline submit [OVERRIDE ...] [--dry-run]

sweep   run the grid of cells described by conf/config.yaml plus Hydra overrides
        (e.g. landscape=two_basin grid.lr='[0.005,0.01]' grid.width_left='[0.1,0.2]'
        cluster=address cluster.address=tcp://host:8786); rerunning the same
        command resumes an interrupted store. --cfg job prints the resolved config.
status  cells done/total, failures with messages, and the config of a store;
        --verify reads every chunk and lists the cells whose data is corrupt
report  figures and tables from a store
submit  run the sweep as a batch job on a cluster (SLURM)

exit status: 0 success, 1 some cells failed, 2 bad input, 3 the store could not be
             written (no space, read-only, I/O error), 130 interrupted
"""


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        sys.stdout.write(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    try:
        if command == "sweep":
            return sweep_main(rest)
        if command == "status":
            from pipeline.status import status_main

            return status_main(rest)
        if command in ("report", "submit"):
            module = f"pipeline.{command}"
            if importlib.util.find_spec(module) is None:
                raise ConfigError(f"{command}: not available in this installation")
            mod = importlib.import_module(module)
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


def sweep_main(argv: Sequence[str]) -> int:
    from omegaconf import OmegaConf

    from pipeline.config import compose

    show = None
    overrides = []
    args = list(argv)
    while args:
        a = args.pop(0)
        if a in ("-h", "--help"):
            sys.stdout.write(USAGE)
            return 0
        if a in ("--cfg", "-c"):
            if not args or args[0] not in ("job", "all"):
                raise ConfigError("--cfg: expected 'job'")
            show = args.pop(0)
        elif a.startswith("--cfg="):
            show = a.split("=", 1)[1]
        elif a.startswith("-"):
            raise ConfigError(f"{a}: unknown option (sweep takes Hydra overrides and --cfg job)")
        else:
            overrides.append(a)
    cfg = compose(overrides)
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
