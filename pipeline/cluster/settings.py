"""The ``cluster`` settings: one dataclass per ``cluster.kind``, each setting defined once.

Every field has its type, default, unit and meaning (``setting(...)``, as the cell
schema). Hydra gets them as the structured configs ``cluster/<kind>_schema``, which
``conf/cluster/<kind>.yaml`` extends (those files hold no defaults of their own);
:func:`parse_cluster` turns a resolved ``cluster`` node (or any mapping: a user's own
cluster config, a dict typed in a test) into the dataclass of its kind, missing keys
taking the defaults, and checks it: a bad value is a
:class:`~sgdsweep.errors.ConfigError` ``cluster.<field>: …``.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sgdsweep.cell.config import setting
from sgdsweep.errors import ConfigError

#: A dashboard on loopback, on any free port (printed when the cluster starts).
FREE_PORT = "127.0.0.1:0"


def _positive(value: Any, key: str) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ConfigError(f"cluster.{key}: expected a positive integer, got {value!r}")


def _strings(value: Any, key: str) -> None:
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise ConfigError(f"cluster.{key}: expected a list of strings, got {value!r}")


@dataclass
class LocalClusterConf:
    """An embedded Dask LocalCluster: one single-threaded worker process per core."""

    kind: str = setting("local", help="the cluster kind")
    n_workers: int | None = setting(None, unit="processes", help="null: the cores available to this process")
    threads_per_worker: int = setting(1, unit="threads", help="threads of each worker process")
    memory_limit: str = setting("auto", unit="bytes", help="per worker process (a dask memory spec)")
    dashboard_address: str | None = setting("127.0.0.1:8787", help="another free port is taken if this one "
                                            f"is busy; null: any free port, {FREE_PORT}")

    def check(self) -> None:
        n = self.n_workers
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
            raise ConfigError(f"cluster.n_workers: must be an integer >= 1 or null, got {n!r}")


@dataclass
class TlsConf:
    """TLS of a ``tls://`` scheduler address: paths to PEM files."""

    ca_file: str | None = setting(None, help="the certificate authority's certificate")
    client_cert: str | None = setting(None, help="this client's certificate")
    client_key: str | None = setting(None, help="this client's private key")
    require_encryption: bool = setting(False, help="refuse unencrypted connections")


@dataclass
class AddressClusterConf:
    """An existing Dask scheduler (e.g. started with ``dask scheduler`` + ``dask worker``)."""

    kind: str = setting("address", help="the cluster kind")
    address: str = setting("???", help="e.g. tcp://scheduler-host:8786 or tls://...")
    timeout: int = setting(30, unit="s", help="time to wait for the scheduler")
    tls: TlsConf = setting(factory=TlsConf, help="for tls:// addresses")

    def check(self) -> None:
        addr = self.address
        if not isinstance(addr, str) or ("://" not in addr and ":" not in addr):
            raise ConfigError("cluster.address: missing; give e.g. cluster.address=tcp://host:8786")


# The jobqueue kinds share their settings; ``PbsClusterConf`` adds ``resource_spec`` in the
# middle (dataclass fields follow the bases in reverse MRO order: head, [pbs], tail).


@dataclass
class _JobqueueHead:
    kind: str = setting("slurm", help="the cluster kind")
    queue: str | None = setting(None, help="partition / queue (-p / -q); null: the default one")
    account: str | None = setting(None, help="account (-A); null: none")
    cores: int = setting(1, unit="cores", help="cores per job")
    processes: int | None = setting(None, unit="processes", help="worker processes per job; null: one "
                                    "single-threaded process per core")
    memory: str = setting("2GiB", unit="bytes", help="per job, shared by its worker processes")
    walltime: str = setting("01:00:00", unit="HH:MM:SS", help="per job")
    job_name: str = setting("sgdsweep-worker", help="name of the worker jobs")
    job_extra_directives: list[str] = setting(factory=list, help="more #SBATCH / #PBS lines, e.g. "
                                              "['--qos=short']")
    job_script_prologue: list[str] = setting(factory=list, help="shell lines run before the worker "
                                             "starts, e.g. ['module load python']")
    python: str | None = setting(None, help="python on the compute nodes; null: the one running the sweep")
    env: dict[str, Any] = setting(factory=dict, help="extra environment variables for the workers")
    numba_cache_dir: str | None = setting(None, help="compiled-kernel cache all workers share; null: "
                                          ".sgdsweep-numba-cache beside the store")
    # Workers retire before the walltime so no cell is killed half-way; adaptive scaling replaces them.
    lifetime: str | None = setting("55m", unit="time", help="a worker retires after this")
    lifetime_stagger: str | None = setting("4m", unit="time", help="± spread of the lifetimes")
    lifetime_restart: bool = setting(False, help="restart the worker inside the same job (only useful "
                                     "without a walltime)")
    worker_extra_args: list[str] = setting(factory=list, help="more `dask worker` arguments")
    death_timeout: int = setting(60, unit="s", help="a worker waits this long for an unreachable "
                                 "scheduler before exiting")


@dataclass
class _PbsSpec:
    resource_spec: str | None = setting(None, help="#PBS -l select=...; null: derived from cores and memory")


@dataclass
class _JobqueueTail:
    # Scaling: a fixed number of jobs, or (jobs: null) adaptive between minimum_jobs and maximum_jobs.
    jobs: int | None = setting(None, unit="jobs", help="a fixed number of jobs; null: adaptive")
    minimum_jobs: int = setting(1, unit="jobs", help="adaptive scaling's least number of jobs")
    maximum_jobs: int = setting(2, unit="jobs", help="adaptive scaling's largest number of jobs")
    # Networking: where the scheduler listens; workers must reach it from the compute nodes.
    scheduler_host: str | None = setting(None, help="e.g. 127.0.0.1 for a single-machine batch system; "
                                         "null: all interfaces")
    interface: str | None = setting(None, help="e.g. ib0: the network interface for scheduler and workers")
    dashboard_address: str | None = setting(FREE_PORT, help="loopback, a free port (printed at start); "
                                            "null: the same")
    local_directory: str | None = setting(None, help="node-local scratch for worker spill files")
    log_directory: str | None = setting(None, help="batch logs of worker jobs; null: <store>.jobs/ "
                                        "beside the store")

    def check(self) -> None:
        """Checks that hold for every jobqueue kind (types first: a mapping may hold anything)."""
        for key in ("cores", "processes", "jobs"):
            _positive(getattr(self, key), key)
        cores = self.cores
        processes = self.processes or cores
        if processes > cores:
            raise ConfigError(f"cluster.processes: {processes} worker processes need at least as many cores "
                              f"(cluster.cores={cores})")
        for key in ("job_extra_directives", "job_script_prologue", "worker_extra_args"):
            _strings(getattr(self, key), key)
        if not isinstance(self.env, Mapping):
            raise ConfigError(f"cluster.env: expected a mapping of variable names to values, "
                              f"got {self.env!r}")
        lo, hi = self.minimum_jobs, self.maximum_jobs
        for key, value in (("minimum_jobs", lo), ("maximum_jobs", hi)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"cluster.{key}: expected a non-negative integer, got {value!r}")
        if hi < max(lo, 1):
            raise ConfigError(f"cluster.maximum_jobs: must be at least 1 and at least minimum_jobs={lo}, "
                              f"got {hi}")


@dataclass
class SlurmClusterConf(_JobqueueTail, _JobqueueHead):
    """Dask workers as SLURM jobs (dask-jobqueue SLURMCluster); the scheduler runs in the sweep's process."""

    kind: str = setting("slurm", help="the cluster kind")


@dataclass
class PbsClusterConf(_JobqueueTail, _PbsSpec, _JobqueueHead):
    """Dask workers as PBS jobs (dask-jobqueue PBSCluster); the scheduler runs in the sweep's process."""

    kind: str = setting("pbs", help="the cluster kind")


JobqueueClusterConf = SlurmClusterConf | PbsClusterConf
ClusterConf = LocalClusterConf | AddressClusterConf | SlurmClusterConf | PbsClusterConf

#: ``cluster.kind`` -> its settings.
KINDS: dict[str, type] = {"local": LocalClusterConf, "address": AddressClusterConf,
                          "slurm": SlurmClusterConf, "pbs": PbsClusterConf}


def register(store: Any) -> None:
    """Put the settings into Hydra's ConfigStore as ``cluster/<kind>_schema`` (what the
    ``conf/cluster/<kind>.yaml`` files extend)."""
    for kind, schema in KINDS.items():
        store.store(group="cluster", name=f"{kind}_schema", node=schema)


def _optional(hint: Any) -> bool:
    return type(None) in typing.get_args(hint)


def _build(schema: type, node: Mapping[str, Any], prefix: str, kind: str) -> Any:
    """``schema`` from ``node``: unknown keys refused, missing keys (and nulls of settings that
    cannot be null) take the defaults, nested settings built from their mappings."""
    if not isinstance(node, Mapping):
        raise ConfigError(f"{prefix.rstrip('.')}: expected a mapping, got {node!r}")
    fields = {f.name: f for f in dataclasses.fields(schema)}
    unknown = sorted(set(node) - set(fields))
    if unknown:
        raise ConfigError(f"{prefix}{unknown[0]}: unknown key for cluster kind {kind!r}")
    hints = typing.get_type_hints(schema)
    values = {}
    for name, value in node.items():
        if value is None and not _optional(hints[name]):
            continue  # the default
        if dataclasses.is_dataclass(hints[name]):
            value = _build(hints[name], value, f"{prefix}{name}.", kind)
        values[name] = value
    return schema(**values)


def parse_cluster(node: Mapping[str, Any]) -> ClusterConf:
    """The checked settings of a ``cluster`` node (raises ConfigError ``cluster.<field>: …``)."""
    if isinstance(node, tuple(KINDS.values())):
        node.check()
        return node
    kind = node.get("kind") if isinstance(node, Mapping) else None
    if kind not in KINDS:
        raise ConfigError(f"cluster.kind: unknown {kind!r} (known: {', '.join(KINDS)})")
    conf = _build(KINDS[kind], node, "cluster.", kind)
    conf.check()
    return conf
