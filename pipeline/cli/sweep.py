"""``python -m pipeline sweep``: compose the config, run the sweep."""

from __future__ import annotations

import signal
import sys
from collections.abc import Sequence

from pipeline.cli.args import hydra_flags
from pipeline.cli.help import help_text
from sgdsweep.errors import ConfigError


def sweep_main(argv: Sequence[str]) -> int:
    from omegaconf import OmegaConf

    from pipeline.config import compose

    show = None
    overrides = []
    args, config_name, config_dirs = hydra_flags(argv)
    if any(a in ("-h", "--help") for a in args):
        sys.stdout.write(help_text(args, config_dirs))
        return 0
    if "--help-keys" in args:
        from pipeline.keys import keys_text

        sys.stdout.write(keys_text() + "\n")
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
                              "--cfg job and --help-keys)")
        else:
            overrides.append(a)
    cfg = compose(overrides, config_name or "config", config_dirs)
    if show:
        sys.stdout.write(OmegaConf.to_yaml(cfg, resolve=True))
        return 0
    from pipeline.run.sweep import run_sweep
    from pipeline.store import lock

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
