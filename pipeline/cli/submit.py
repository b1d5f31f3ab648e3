"""`python -m pipeline submit [--dry-run] [overrides...]`: run a whole sweep as one SLURM batch job.

The batch job runs `python -m pipeline sweep <the same overrides>` in the directory the command was
given from, so it writes the same store a direct `sweep` would. With `cluster=slurm` the job itself
submits the worker jobs (sbatch must work on the compute node, as on most clusters); with
`cluster=local` the sweep runs on the cores of the job's own allocation.
Job settings: conf/submit/default.yaml, changed with `submit.KEY=VALUE` overrides.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.cli.args import OneLineParser
from pipeline.cluster.jobqueue import jobs_directory
from sgdsweep.cell.config import setting
from sgdsweep.errors import ConfigError


@dataclass
class SubmitConf:
    """The sweep's own batch job (``submit.KEY=VALUE``; not part of the sweep's config)."""

    job_name: str = setting("sgdsweep", help="the job's name")
    partition: str | None = setting(None, help="null: cluster.queue when set, else the default partition")
    account: str | None = setting(None, help="null: cluster.account when set")
    walltime: str = setting("24:00:00", unit="HH:MM:SS", help="the whole sweep must finish within it "
                            "(resubmitting resumes the store)")
    cpus: int = setting(1, unit="cores", help="cores of the sweep job itself (with cluster=local the "
                        "sweep's workers run on them)")
    memory: str = setting("4GiB", unit="bytes", help="memory of the sweep job")
    job_extra_directives: list[str] = setting(factory=list, help="more #SBATCH lines")
    job_script_prologue: list[str] | None = setting(None, help="shell lines before the sweep starts; "
                                                    "null: cluster.job_script_prologue")
    python: str | None = setting(None, help="null: cluster.python, else the python running `submit`")
    directory: str | None = setting(None, help="where the script and its log go; null: <store>.jobs/ "
                                    "beside the store")


#: The defaults of every ``submit.*`` setting (conf/submit/default.yaml may change them site-wide).
SUBMIT_DEFAULTS: dict[str, Any] = dataclasses.asdict(SubmitConf())


def _is_submit_override(override: str) -> bool:
    return override.lstrip("+~").startswith(("submit.", "submit="))


def sweep_overrides(overrides: Sequence[str]) -> list[str]:
    """The overrides that go on to `pipeline sweep`: all but the batch job's own `submit.*` ones."""
    return [o for o in overrides if not _is_submit_override(o)]


def submit_settings(overrides: Sequence[str]) -> dict[str, Any]:
    """The batch job's settings: :class:`SubmitConf`'s defaults, conf/submit/default.yaml, then the
    `submit.KEY=VALUE` overrides.

    They are kept out of the sweep's own config, so that they do not change what the sweep computes
    (nor the store's config check on resume).
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException
    from omegaconf import OmegaConf

    from pipeline.config import CONF_DIR

    settings = OmegaConf.create(SUBMIT_DEFAULTS)
    path = CONF_DIR / "submit" / "default.yaml"
    if path.is_file():
        settings = OmegaConf.merge(settings, OmegaConf.load(path))
    for override in overrides:
        if not _is_submit_override(override):
            continue
        key = override.lstrip("+").partition("=")[0].removeprefix("submit.")
        if key not in SUBMIT_DEFAULTS:
            raise ConfigError(f"{override.partition('=')[0]}: unknown submit setting "
                              f"(known: {', '.join('submit.' + k for k in SUBMIT_DEFAULTS)})")
        # Hydra's override grammar, not YAML: `submit.walltime=1:00:00` must stay a string.
        try:
            value = OverridesParser.create().parse_override(override.lstrip("+")).value()
        except HydraException as err:
            raise ConfigError(f"submit.{key}: {' '.join(str(err).split())[:200]}") from None
        settings[key] = value
    return OmegaConf.to_container(settings, resolve=True)


def compose_config(overrides: Sequence[str], config_name: str | None = None,
                   config_dirs: Sequence[str] = ()) -> dict[str, Any]:
    """The sweep's resolved config (as `pipeline sweep` composes it) plus its `submit` settings."""
    from omegaconf import OmegaConf

    from pipeline.config import compose

    cfg = OmegaConf.to_container(compose(sweep_overrides(overrides), config_name or "config",
                                           config_dirs), resolve=True)
    cfg["submit"] = submit_settings(overrides)
    return cfg


def _sbatch_memory(memory: Any) -> str:
    from dask.utils import parse_bytes
    from dask_jobqueue.slurm import slurm_format_bytes_ceil

    try:
        return slurm_format_bytes_ceil(parse_bytes(str(memory)))
    except (ValueError, TypeError) as err:
        raise ConfigError(f"submit.memory: cannot read {memory!r} as an amount of memory") from err


def batch_script(cfg: Mapping[str, Any], overrides: Sequence[str], workdir: Path, log_path: Path,
                 config_name: str | None = None, config_dirs: Sequence[str] = ()) -> str:
    """The sbatch script that runs the sweep of `cfg` (composed from `overrides`) from `workdir`."""
    sub = {**SUBMIT_DEFAULTS, **(cfg.get("submit") or {})}
    cluster = cfg.get("cluster") or {}
    partition = sub["partition"] or cluster.get("queue")
    account = sub["account"] or cluster.get("account")
    cpus = sub["cpus"]
    if isinstance(cpus, bool) or not isinstance(cpus, int) or cpus < 1:
        raise ConfigError(f"submit.cpus: expected a positive integer, got {cpus!r}")
    prologue = sub["job_script_prologue"]
    if prologue is None:
        prologue = cluster.get("job_script_prologue") or []
    python = sub["python"] or cluster.get("python") or sys.executable

    lines = [
        "#!/usr/bin/env bash",
        f"#SBATCH --job-name={sub['job_name']}",
        f"#SBATCH --output={log_path}",
        "#SBATCH --ntasks=1",
        f"#SBATCH --cpus-per-task={cpus}",
        f"#SBATCH --mem={_sbatch_memory(sub['memory'])}",
        f"#SBATCH --time={sub['walltime']}",
    ]
    if partition:
        lines.append(f"#SBATCH --partition={partition}")
    if account:
        lines.append(f"#SBATCH --account={account}")
    lines += [f"#SBATCH {d}" for d in sub["job_extra_directives"] or []]
    lines += [
        "",
        "set -e",
        *[str(line) for line in prologue],
        f"cd {shlex.quote(str(workdir))}",
        'echo "sgdsweep: sweep job ${SLURM_JOB_ID:-?} on $(hostname) started $(date -Is)"',
        "exec " + shlex.join([str(python), "-m", "pipeline", "sweep",
                              *(["--config-name", config_name] if config_name else []),
                              *[a for d in config_dirs for a in ("--config-dir", str(d))],
                              *sweep_overrides(overrides)]),
        "",
    ]
    return "\n".join(lines)


def _parser() -> OneLineParser:
    parser = OneLineParser(
        prog="python -m pipeline submit",
        hint="submit takes Hydra overrides, -cd DIR, -cn NAME and --dry-run",
        description="Write an sbatch script that runs `python -m pipeline sweep OVERRIDES` as one job "
        "and submit it. Job settings: submit.walltime, submit.cpus, submit.memory, submit.partition, "
        "submit.account, submit.job_extra_directives, submit.job_script_prologue.",
    )
    parser.add_argument("--dry-run", action="store_true", help="print the script, do not submit it")
    parser.add_argument("--config-name", default=None, help="primary config (as for `pipeline sweep`)")
    parser.add_argument("--config-dir", action="append", default=[],
                        help="a user config directory (as for `pipeline sweep`)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, exactly as for `pipeline sweep`")
    return parser


def submit_main(argv: list[str]) -> int:
    """Entry point of `python -m pipeline submit`; returns the exit status (2 for bad input)."""
    try:
        # Intermixed: overrides may come before and after --dry-run, as they may for `sweep`.
        args = _parser().parse_intermixed_args(argv)
        cfg = compose_config(args.overrides, args.config_name, args.config_dir)
        store = cfg.get("store")
        if not store:
            raise ConfigError("store: the config names no store path")
        workdir = Path.cwd()
        directory = Path((cfg.get("submit") or {}).get("directory") or jobs_directory(store))
        directory = directory.expanduser().absolute()
        log_pattern = directory / "sweep-%j.out"
        script = batch_script(cfg, args.overrides, workdir, log_pattern, args.config_name, args.config_dir)
    except ConfigError as err:
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2

    if args.dry_run:
        print(script, end="")
        return 0

    if shutil.which("sbatch") is None:
        print("error: sbatch not found: submit needs a SLURM login node (or SLURM_CONF and the "
              "slurm client tools)", file=sys.stderr)
        return 2
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        print(f"error: submit.directory: cannot create {directory}: {err.strerror}", file=sys.stderr)
        return 2
    script_path = directory / f"sweep-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.sbatch"
    script_path.write_text(script)
    result = subprocess.run(["sbatch", "--parsable", str(script_path)], capture_output=True, text=True,
                            check=False)
    if result.returncode != 0:
        message = (result.stderr or result.stdout).strip().splitlines()
        print(f"error: sbatch refused {script_path}: {message[-1] if message else result.returncode}",
              file=sys.stderr)
        return 1
    job_id = result.stdout.strip().split(";")[0]
    log_path = str(log_pattern).replace("%j", job_id)
    store_path = Path(store).expanduser().absolute()
    print(f"submitted sweep job {job_id} (script {script_path})")
    print(f"  follow:  squeue -j {job_id}")
    print(f"           tail -f {log_path}")
    print(f"  status:  {shlex.quote(sys.executable)} -m pipeline status {shlex.quote(str(store_path))}")
    print(f"  cancel:  scancel {job_id}   (re-submitting the same command resumes the store)")
    return 0


if __name__ == "__main__":
    sys.exit(submit_main(sys.argv[1:]))
