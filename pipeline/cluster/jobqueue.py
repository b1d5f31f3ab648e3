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
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline.cluster.settings import FREE_PORT, JobqueueClusterConf, PbsClusterConf, parse_cluster
from sgdsweep.errors import ConfigError

#: kind -> dask-jobqueue class name
KINDS = {"slurm": "SLURMCluster", "pbs": "PBSCluster"}


def _settings(cfg: Mapping | JobqueueClusterConf) -> JobqueueClusterConf:
    """The checked settings of a jobqueue kind (a ``cluster`` mapping is parsed)."""
    kind = cfg.kind if not isinstance(cfg, Mapping) else cfg.get("kind")
    if kind not in KINDS:
        raise ConfigError(f"cluster.kind: expected one of {sorted(KINDS)}, got {kind!r}")
    return parse_cluster(cfg)


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


def worker_environment(cfg: Mapping | JobqueueClusterConf,
                       store: str | os.PathLike | None = None) -> dict[str, str]:
    """Environment variables every worker process gets: thread counts pinned to the threads of one
    worker process (so that Numba and BLAS do not oversubscribe the job's cores) and a shared Numba
    cache (so that a kernel is compiled once per sweep, not once per job)."""
    conf = _settings(cfg)
    threads = max(conf.cores // (conf.processes or conf.cores), 1)
    numba_cache = conf.numba_cache_dir or default_numba_cache_dir(store)
    env = {
        "NUMBA_CACHE_DIR": str(Path(str(numba_cache)).expanduser()),
        "NUMBA_NUM_THREADS": str(threads),
        "OMP_NUM_THREADS": str(threads),
        "OPENBLAS_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
    }
    env.update({str(k): str(v) for k, v in conf.env.items()})
    return env


def jobqueue_kwargs(cfg: Mapping | JobqueueClusterConf,
                    store: str | os.PathLike | None = None) -> dict[str, Any]:
    """Keyword arguments for the dask-jobqueue cluster class of ``cfg.kind`` (checked)."""
    conf = _settings(cfg)
    processes = conf.processes or conf.cores

    worker_args = ["--lifetime", str(conf.lifetime)] if conf.lifetime else []
    if worker_args and conf.lifetime_stagger:
        worker_args += ["--lifetime-stagger", str(conf.lifetime_stagger)]
    if worker_args and conf.lifetime_restart:
        worker_args += ["--lifetime-restart"]
    worker_args += [str(a) for a in conf.worker_extra_args]

    env = worker_environment(conf, store)
    prologue = [f"export {k}={shlex.quote(v)}" for k, v in env.items()]
    prologue.append(f"mkdir -p {shlex.quote(env['NUMBA_CACHE_DIR'])}")
    prologue += [str(line) for line in conf.job_script_prologue]

    log_directory = conf.log_directory or jobs_directory(store)
    scheduler_options: dict[str, Any] = {"dashboard_address": str(conf.dashboard_address or FREE_PORT)}
    if conf.scheduler_host:
        scheduler_options["host"] = str(conf.scheduler_host)

    kwargs: dict[str, Any] = {
        "cores": conf.cores,
        "processes": processes,
        "memory": str(conf.memory),
        "walltime": str(conf.walltime),
        "queue": conf.queue or None,
        "account": conf.account or None,
        "job_name": str(conf.job_name),
        "job_extra_directives": [str(d) for d in conf.job_extra_directives],
        "job_script_prologue": prologue,
        "python": str(conf.python or sys.executable),
        "worker_extra_args": worker_args,
        "local_directory": conf.local_directory or None,
        "log_directory": str(Path(str(log_directory)).expanduser()),
        "death_timeout": conf.death_timeout,
        "interface": conf.interface or None,
        "scheduler_options": scheduler_options,
    }
    if isinstance(conf, PbsClusterConf) and conf.resource_spec:
        kwargs["resource_spec"] = str(conf.resource_spec)
    return kwargs


def _cluster_node(cfg: Mapping | JobqueueClusterConf, store: str | os.PathLike | None,
                  ) -> tuple[Mapping | JobqueueClusterConf, str | os.PathLike | None]:
    """The `cluster` settings, from that node, the whole sweep config or the parsed settings."""
    if not isinstance(cfg, Mapping):
        return cfg, store
    if hasattr(cfg, "_metadata"):  # an OmegaConf node
        from omegaconf import OmegaConf

        cfg = OmegaConf.to_container(cfg, resolve=True)
    if "kind" not in cfg and isinstance(cfg.get("cluster"), Mapping):
        store = cfg.get("store") if store is None else store
        cfg = cfg["cluster"]
    return dict(cfg), store


def make_jobqueue_cluster(cfg: Mapping | JobqueueClusterConf, store: str | os.PathLike | None = None):
    """Start a dask-jobqueue cluster (its scheduler runs in this process) and request its jobs.

    `cfg` is the `cluster` settings (`kind: slurm` or `kind: pbs`; parsed, or a mapping), or the whole
    sweep config (its `cluster` and `store`); `store` is the sweep's store path, used for the default
    log and Numba cache directories. A fixed `jobs` scales to that many jobs; otherwise the cluster
    adapts between `minimum_jobs` and `maximum_jobs`, which also replaces jobs lost to walltime,
    `scancel` or node failure.

    Returns `(cluster, description)`; the caller owns the cluster and must close it.
    """
    import dask_jobqueue

    node, store = _cluster_node(cfg, store)
    conf = _settings(node)
    kwargs = jobqueue_kwargs(conf, store)
    jobs, lo, hi = conf.jobs, conf.minimum_jobs, conf.maximum_jobs
    Path(kwargs["log_directory"]).mkdir(parents=True, exist_ok=True)
    cls = getattr(dask_jobqueue, KINDS[conf.kind])
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
        f"{KINDS[conf.kind]} at {cluster.scheduler_address}: {scaling} "
        f"of {kwargs['processes']} worker process(es) x {threads} thread(s), {kwargs['memory']}, "
        f"walltime {kwargs['walltime']}{' on ' + where if where else ''}; "
        f"job logs in {kwargs['log_directory']}"
    )
    return cluster, description
