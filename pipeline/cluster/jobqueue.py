"""Dask workers as batch jobs (SLURM, PBS) through dask-jobqueue, built from a `cluster` config node.

A job holds `cores` cores and `memory`; it runs `processes` Dask worker processes, by default one
single-threaded process per core (the cells are single-threaded compiled loops, and processes
sidestep the GIL). Workers retire themselves after `lifetime` (± `lifetime_stagger`) so that the
batch system's walltime never kills a worker in the middle of a cell; adaptive scaling then
submits a fresh job in its place.
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sgdsweep.errors import ConfigError

#: kind -> dask-jobqueue class name
KINDS = {"slurm": "SLURMCluster", "pbs": "PBSCluster"}

_KNOWN_KEYS = {
    "kind", "queue", "account", "cores", "processes", "memory", "walltime", "job_extra_directives",
    "job_script_prologue", "python", "interface", "scheduler_host", "dashboard_address",
    "local_directory", "log_directory", "death_timeout", "lifetime", "lifetime_stagger",
    "lifetime_restart", "worker_extra_args", "numba_cache_dir", "env", "jobs", "minimum_jobs",
    "maximum_jobs", "job_name", "resource_spec", "submit",
}


def jobs_directory(store: str | os.PathLike | None) -> Path:
    """Where job scripts and batch logs of the sweep writing `store` go: `<store>.jobs/` beside it."""
    if store is None:
        return Path.cwd() / "sgdsweep.jobs"
    store = Path(store).expanduser().absolute()
    return store.parent / f"{store.stem}.jobs"


def default_numba_cache_dir(store: str | os.PathLike | None) -> Path:
    """A Numba cache every worker host can reach: beside the store (sweeps write stores on shared
    file systems), else under the home directory."""
    if store is not None:
        return Path(store).expanduser().absolute().parent / ".sgdsweep-numba-cache"
    return Path.home() / ".cache" / "sgdsweep" / "numba"


def _get(cfg: Mapping, key: str, default: Any = None) -> Any:
    value = cfg.get(key, default)
    return default if value is None else value


def _positive_int(cfg: Mapping, key: str, default: int | None) -> int | None:
    value = cfg.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"cluster.{key}: expected a positive integer, got {value!r}")
    return value


def _string_list(cfg: Mapping, key: str) -> list[str]:
    value = cfg.get(key) or []
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise ConfigError(f"cluster.{key}: expected a list of strings, got {value!r}")
    return [str(v) for v in value]


def worker_environment(cfg: Mapping, store: str | os.PathLike | None = None) -> dict[str, str]:
    """Environment variables every worker process gets: thread counts pinned to the threads of one
    worker process (so that Numba and BLAS do not oversubscribe the job's cores) and a shared Numba
    cache (so that a kernel is compiled once per sweep, not once per job)."""
    cores = _positive_int(cfg, "cores", 1)
    processes = _positive_int(cfg, "processes", None) or cores
    threads = max(cores // processes, 1)
    numba_cache = cfg.get("numba_cache_dir") or default_numba_cache_dir(store)
    env = {
        "NUMBA_CACHE_DIR": str(Path(str(numba_cache)).expanduser()),
        "NUMBA_NUM_THREADS": str(threads),
        "OMP_NUM_THREADS": str(threads),
        "OPENBLAS_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
    }
    extra = cfg.get("env") or {}
    if not isinstance(extra, Mapping):
        raise ConfigError(f"cluster.env: expected a mapping of variable names to values, got {extra!r}")
    env.update({str(k): str(v) for k, v in extra.items()})
    return env


def jobqueue_kwargs(cfg: Mapping, store: str | os.PathLike | None = None) -> dict[str, Any]:
    """Keyword arguments for the dask-jobqueue cluster class of `cfg.kind` (validated)."""
    kind = cfg.get("kind")
    if kind not in KINDS:
        raise ConfigError(f"cluster.kind: expected one of {sorted(KINDS)}, got {kind!r}")
    unknown = sorted(set(cfg) - _KNOWN_KEYS)
    if unknown:
        raise ConfigError(f"cluster.{unknown[0]}: unknown key for cluster kind {kind!r}")

    cores = _positive_int(cfg, "cores", 1)
    processes = _positive_int(cfg, "processes", None) or cores
    if processes > cores:
        raise ConfigError(f"cluster.processes: {processes} worker processes need at least as many cores "
                          f"(cluster.cores={cores})")
    memory = str(_get(cfg, "memory", "2GiB"))

    worker_args = ["--lifetime", str(cfg["lifetime"])] if cfg.get("lifetime") else []
    if worker_args and cfg.get("lifetime_stagger"):
        worker_args += ["--lifetime-stagger", str(cfg["lifetime_stagger"])]
    if worker_args and cfg.get("lifetime_restart"):
        worker_args += ["--lifetime-restart"]
    worker_args += _string_list(cfg, "worker_extra_args")

    env = worker_environment(cfg, store)
    prologue = [f"export {k}={shlex.quote(v)}" for k, v in env.items()]
    prologue.append(f"mkdir -p {shlex.quote(env['NUMBA_CACHE_DIR'])}")
    prologue += _string_list(cfg, "job_script_prologue")

    log_directory = cfg.get("log_directory") or jobs_directory(store)
    scheduler_options: dict[str, Any] = {
        "dashboard_address": str(_get(cfg, "dashboard_address", "127.0.0.1:0")),
    }
    if cfg.get("scheduler_host"):
        scheduler_options["host"] = str(cfg["scheduler_host"])

    kwargs: dict[str, Any] = {
        "cores": cores,
        "processes": processes,
        "memory": memory,
        "walltime": str(_get(cfg, "walltime", "01:00:00")),
        "queue": cfg.get("queue") or None,
        "account": cfg.get("account") or None,
        "job_name": str(_get(cfg, "job_name", "sgdsweep-worker")),
        "job_extra_directives": _string_list(cfg, "job_extra_directives"),
        "job_script_prologue": prologue,
        "python": str(cfg.get("python") or sys.executable),
        "worker_extra_args": worker_args,
        "local_directory": cfg.get("local_directory") or None,
        "log_directory": str(Path(str(log_directory)).expanduser()),
        "death_timeout": _get(cfg, "death_timeout", 60),
        "interface": cfg.get("interface") or None,
        "scheduler_options": scheduler_options,
    }
    if kind == "pbs" and cfg.get("resource_spec"):
        kwargs["resource_spec"] = str(cfg["resource_spec"])
    return kwargs


def _scaling(cfg: Mapping) -> tuple[int | None, int, int]:
    jobs = _positive_int(cfg, "jobs", None)
    lo = cfg.get("minimum_jobs", 1)
    hi = cfg.get("maximum_jobs", 2)
    for key, value in (("minimum_jobs", lo), ("maximum_jobs", hi)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f"cluster.{key}: expected a non-negative integer, got {value!r}")
    if hi < max(lo, 1):
        raise ConfigError(f"cluster.maximum_jobs: must be at least 1 and at least minimum_jobs={lo}, "
                          f"got {hi}")
    return jobs, lo, hi


def _cluster_node(cfg: Mapping, store: str | os.PathLike | None) -> tuple[dict, str | os.PathLike | None]:
    """The `cluster` node as plain containers, from either that node or the whole sweep config."""
    if hasattr(cfg, "_metadata"):  # an OmegaConf node
        from omegaconf import OmegaConf

        cfg = OmegaConf.to_container(cfg, resolve=True)
    if "kind" not in cfg and isinstance(cfg.get("cluster"), Mapping):
        store = cfg.get("store") if store is None else store
        cfg = cfg["cluster"]
    return dict(cfg), store


def make_jobqueue_cluster(cfg: Mapping, store: str | os.PathLike | None = None):
    """Start a dask-jobqueue cluster (its scheduler runs in this process) and request its jobs.

    `cfg` is the `cluster` config node (`kind: slurm` or `kind: pbs`), or the whole sweep config (its
    `cluster` and `store`); `store` is the sweep's store path, used for the default log and Numba
    cache directories. A fixed `jobs` scales to that many
    jobs; otherwise the cluster adapts between `minimum_jobs` and `maximum_jobs`, which also
    replaces jobs lost to walltime, `scancel` or node failure.

    Returns `(cluster, description)`; the caller owns the cluster and must close it.
    """
    import dask_jobqueue

    cfg, store = _cluster_node(cfg, store)
    kwargs = jobqueue_kwargs(cfg, store)
    jobs, lo, hi = _scaling(cfg)
    Path(kwargs["log_directory"]).mkdir(parents=True, exist_ok=True)
    cls = getattr(dask_jobqueue, KINDS[cfg["kind"]])
    cluster = cls(**kwargs)
    try:
        if jobs is not None:
            cluster.scale(jobs=jobs)
            scaling = f"{jobs} job{'s' if jobs != 1 else ''}"
        else:
            cluster.adapt(minimum_jobs=lo, maximum_jobs=hi)
            scaling = f"adaptive {lo}-{hi} jobs"
    except BaseException:
        cluster.close()
        raise
    where = " ".join(
        f"{name} {kwargs[key]}" for name, key in (("queue", "queue"), ("account", "account")) if kwargs[key]
    )
    threads = kwargs["cores"] // kwargs["processes"]
    description = (
        f"{KINDS[cfg['kind']]} at {cluster.scheduler_address}: {scaling} "
        f"of {kwargs['processes']} worker process(es) x {threads} thread(s), {kwargs['memory']}, "
        f"walltime {kwargs['walltime']}{' on ' + where if where else ''}; "
        f"job logs in {kwargs['log_directory']}"
    )
    return cluster, description
