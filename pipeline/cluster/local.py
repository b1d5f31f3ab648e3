"""Dask clusters for a sweep, chosen by ``cluster.kind``.

* ``local``: an embedded LocalCluster, one single-threaded worker process per
  core, with Numba/OpenMP threads pinned to 1 in the workers (parallelism is
  across cells, not inside them);
* ``address``: an existing scheduler (``dask scheduler`` + ``dask worker``),
  optionally over TLS;
* ``slurm`` / ``pbs``: dask-jobqueue clusters, built by ``pipeline.cluster.jobqueue``.

Their settings, checked before anything starts: ``pipeline.cluster.settings``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import warnings
from collections.abc import Iterator
from typing import Any

import dask
from distributed import Client, LocalCluster, WorkerPlugin

from pipeline.cluster.settings import FREE_PORT, AddressClusterConf, ClusterConf, LocalClusterConf, TlsConf
from pipeline.run.faults import StoreWriteError
from sgdsweep.errors import ConfigError

#: Environment of local worker processes, set before they start so Numba sees it.
WORKER_ENV = {"NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
              "OPENBLAS_NUM_THREADS": "1"}


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@contextlib.contextmanager
def open_client(cluster: ClusterConf, store: str | None = None, say: Any = print) -> Iterator[Client]:
    """A connected Client for the ``cluster`` settings (:func:`pipeline.cluster.settings.parse_cluster`);
    closes what it started on exit. Jobqueue clusters also use the ``store`` path (for their
    logs and the workers' Numba cache).
    """
    # distributed keeps the last 1000 messages (< 1 MB each) of every batched stream for
    # debugging: task specs of many cells each, client -> scheduler -> workers. The client
    # (and the scheduler it starts) grew by ~12 KB per cell over a 10⁵-cell sweep.
    with dask.config.set({"distributed.admin.low-level-log-length": LOG_MESSAGES}):
        yield from _open_client(cluster, store, say)


#: Messages kept per stream by distributed's debugging log (its default is 1000).
LOG_MESSAGES = 16


@contextlib.contextmanager
def worker_environ() -> Iterator[None]:
    """WORKER_ENV as distributed's pre-spawn environment, and this process's own values of
    those variables put back afterwards: the nanny sets them in the spawning process (to
    reach the worker before it imports NumPy and Numba) and leaves them there. Left, a
    client that compiles afterwards — a notebook, a test session — would meet Numba's
    refusal to change NUMBA_NUM_THREADS once its threads run."""
    saved = {k: os.environ.get(k) for k in WORKER_ENV}
    try:
        with dask.config.set({"distributed.nanny.pre-spawn-environ": {
                **dask.config.get("distributed.nanny.pre-spawn-environ", {}), **WORKER_ENV}}):
            yield
    finally:
        restore_environ(saved)


def restore_environ(saved: dict[str, str | None]) -> None:
    """Put back ``saved`` (None: the variable was unset)."""
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def _open_client(cluster: ClusterConf, store: str | None, say: Any) -> Iterator[Client]:
    if isinstance(cluster, LocalClusterConf):
        n = cluster.n_workers or available_cores()
        saved = {k: os.environ.get(k) for k in WORKER_ENV}
        with worker_environ(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*Port .* is already in use.*")
            lc = LocalCluster(n_workers=n, threads_per_worker=int(cluster.threads_per_worker),
                              processes=True, host="127.0.0.1",
                              dashboard_address=cluster.dashboard_address or FREE_PORT,
                              memory_limit=cluster.memory_limit, env=dict(WORKER_ENV))
        try:
            client = Client(lc)
            try:
                client.register_plugin(QuietHeartbeat())
                say(f"cluster: LocalCluster, {n} worker process(es) x 1 thread; "
                    f"dashboard {_dashboard(client)}")
                try:
                    yield from _guarded(client)
                except StoreWriteError:
                    # The sweep ends on its one-line error: close our workers first, so that
                    # they do not log heartbeat tracebacks while the scheduler closes.
                    _stop_workers(client, lc)
                    raise
            finally:
                client.close()
        finally:
            with _quiet_nanny():
                lc.close()
            restore_environ(saved)  # a nanny that restarted a worker set them again
    elif isinstance(cluster, AddressClusterConf):
        security = _security(cluster.tls)
        try:
            client = Client(cluster.address, security=security, timeout=cluster.timeout)
        except (OSError, TimeoutError) as exc:
            raise ConfigError(f"cluster.address: cannot connect to {cluster.address}: "
                              f"{' '.join(str(exc).split())[:200]}") from None
        try:
            n = len(client.scheduler_info().get("workers", {}))
            say(f"cluster: scheduler {cluster.address}, {n} worker(s) now; dashboard {_dashboard(client)}")
            yield from _guarded(client)
        finally:
            client.close()
    else:
        from pipeline.cluster.jobqueue import make_jobqueue_cluster  # written for kind slurm/pbs

        jq, description = make_jobqueue_cluster(cluster, store=store)
        try:
            client = Client(jq)
            try:
                say(f"cluster: {description}; dashboard {_dashboard(client)}")
                yield from _guarded(client)
            finally:
                client.close()
        finally:
            jq.close()


def _guarded(client: Client) -> Iterator[Client]:
    """Yield the client; on Ctrl-C the workers die with the terminal's process group, and
    on a store write error the sweep ends with its own one-line error: the cluster's
    shutdown complaints about either are noise, not news."""
    try:
        yield client
    except (KeyboardInterrupt, StoreWriteError):
        logging.getLogger("distributed").setLevel(logging.CRITICAL)
        raise


@contextlib.contextmanager
def _quiet_nanny() -> Iterator[None]:
    """Closing our own LocalCluster: a worker process slow to exit on a loaded machine is
    killed after 4 s with a nanny WARNING ("Worker process still alive …"), after every
    cell was written; noise at the end of a finished sweep, so not shown."""
    log = logging.getLogger("distributed.nanny")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


class _HeartbeatFilter(logging.Filter):
    """Drops distributed's "Failed to communicate with scheduler during heartbeat" record: on
    our own LocalCluster it only appears while the scheduler closes (a CommClosedError
    traceback after the sweep's one-line error); a worker that really loses its scheduler is
    reported by the sweep itself (the cell is retried or recorded as failed)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Failed to communicate with scheduler during heartbeat")


class QuietHeartbeat(WorkerPlugin):
    """Installs :class:`_HeartbeatFilter` in each worker process (restarted ones too)."""

    name = "sgdsweep-quiet-heartbeat"

    def setup(self, worker: Any) -> None:
        log = logging.getLogger("distributed.worker")
        if not any(isinstance(f, _HeartbeatFilter) for f in log.filters):
            log.addFilter(_HeartbeatFilter())


def _mute_worker_log() -> None:
    """Run on a worker about to be closed: nothing it logs at ERROR while the scheduler goes
    matters after the sweep's own one-line error."""
    logging.getLogger("distributed.worker").setLevel(logging.CRITICAL)


def _stop_workers(client: Client, lc: LocalCluster, timeout: float = 10.0) -> None:
    """Close the LocalCluster's workers (``scale(0)``) and wait until the scheduler has none."""
    with contextlib.suppress(Exception):
        client.run(_mute_worker_log)
        lc.scale(0)
        deadline = time.monotonic() + timeout
        while client.scheduler_info().get("workers") and time.monotonic() < deadline:
            time.sleep(0.1)


def _dashboard(client: Client) -> str:
    try:
        import bokeh  # noqa: F401  (the dashboard needs it)
    except ImportError:
        return "unavailable (pip install bokeh to enable it)"
    return client.dashboard_link


def _security(tls: TlsConf) -> Any:
    if not (tls.ca_file or tls.client_cert or tls.client_key):
        return None
    from distributed.security import Security

    return Security(tls_ca_file=tls.ca_file, tls_client_cert=tls.client_cert, tls_client_key=tls.client_key,
                    require_encryption=bool(tls.require_encryption))
