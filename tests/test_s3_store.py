"""Stores on object storage: sweeps into ``s3://`` URLs on a real S3-compatible HTTP server
(moto's server, a separate process on a free port), through the CLI with LocalCluster
workers (real processes), compared bit for bit with the same sweep in a local directory."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import xarray as xr

from pipeline.run.faults import KILL_AFTER_WRITE_ENV
from pipeline.store.lock import LOCK_NAME
from sgdsweep.errors import ConfigError
from tests.conftest import (
    ENV,
    FAIL_ON_WORKERS_ENV,
    REPO,
    SMALL_GRID,
    TINY,
    assert_same_numbers,
    free_port,
    pipeline_session,
    run_main,
    run_pipeline,
    same_bytes,
    store_files,
)
from tests.test_faults import _run

pytestmark = pytest.mark.integration

if os.environ.get("CI") == "true":  # CI installs the dev extra: these must run there
    import moto.server  # noqa: F401
    import s3fs
else:
    s3fs = pytest.importorskip("s3fs", reason="pip install s3fs (the s3 extra)")
    pytest.importorskip("moto.server", reason="pip install 'moto[server]' (in the dev extra)")

BUCKET = "sweeps"
ARGS = ["sweep", *TINY, *SMALL_GRID, "cluster.n_workers=2", "cluster.dashboard_address=null"]
#: Credentials the server accepts (moto takes any); secret-looking so a leak is findable.
KEY, SECRET = "test-key-id", "test-secret-must-not-leak"


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A moto S3 server on a free port with one bucket; yields the environment that reaches it
    (the standard AWS variables, nothing else: no profile, no instance metadata)."""
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "server.log"
    with open(log, "w") as f:
        server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                  stdout=f, stderr=subprocess.STDOUT)
    env = {**ENV, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": KEY,
           "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_SHARED_CREDENTIALS_FILE": os.devnull, "AWS_CONFIG_FILE": os.devnull,
           "AWS_EC2_METADATA_DISABLED": "true"}
    fs = s3fs.S3FileSystem(key=KEY, secret=SECRET, skip_instance_cache=True,
                           client_kwargs={"endpoint_url": env["AWS_ENDPOINT_URL"],
                                          "region_name": "us-east-1"})
    deadline = time.monotonic() + 60
    while True:
        try:
            fs.call_s3("create_bucket", Bucket=BUCKET)
            break
        except Exception:
            if time.monotonic() > deadline or server.poll() is not None:
                server.kill()
                raise RuntimeError(f"moto server did not start: {log.read_text()[-2000:]}") from None
            time.sleep(0.2)
    try:
        yield env, fs
    finally:
        server.kill()
        server.wait()


def _open(url: str, env: dict) -> xr.Dataset:
    """Plain xarray, as a user would open the store (endpoint and credentials as options)."""
    opts = {"key": env["AWS_ACCESS_KEY_ID"], "secret": env["AWS_SECRET_ACCESS_KEY"],
            "client_kwargs": {"endpoint_url": env["AWS_ENDPOINT_URL"], "region_name": "us-east-1"}}
    return xr.open_zarr(url, storage_options=opts).load()


def _objects(fs, prefix: str) -> dict[str, tuple[str, str]]:
    """Every object under ``prefix``: its ETag (content) and LastModified (one-second resolution)."""
    fs.invalidate_cache()
    return {k: (fs.info(k)["ETag"], str(fs.info(k)["LastModified"])) for k in fs.find(prefix)}


def _files(fs, prefix: str) -> dict[str, bytes]:
    """Every object of the store under ``prefix`` by its key inside the store: the bytes (as
    :func:`tests.conftest.store_files`)."""
    fs.invalidate_cache()
    return {k.removeprefix(f"{prefix}/"): fs.cat_file(k) for k in fs.find(prefix)}


def _chunks(files: dict[str, bytes]) -> dict[str, bytes]:
    """The chunk (shard) files of the cell variables, wall-time ``runtime`` left out."""
    return {k: v for k, v in files.items() if "/c/" in k and not k.startswith("runtime/")}


@pytest.fixture(scope="module")
def client_store(s3, tmp_path_factory):
    """SMALL_GRID swept into s3://sweeps/client.zarr, the client writing."""
    env, _ = s3
    res = run_pipeline(*ARGS, f"store=s3://{BUCKET}/client.zarr", cwd=tmp_path_factory.mktemp("c"), env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    return f"s3://{BUCKET}/client.zarr"


def test_client_writes_the_same_bytes_as_a_local_sweep(s3, client_store, reference_store):
    env, fs = s3
    assert_same_numbers(_open(client_store, env), xr.open_zarr(str(reference_store)).load())
    local = {str(p.relative_to(reference_store)): p.read_bytes()
             for p in reference_store.rglob("*") if p.is_file()}
    remote = {k.removeprefix(f"{BUCKET}/client.zarr/"): fs.cat_file(k)
              for k in fs.find(f"{BUCKET}/client.zarr")}
    assert _chunks(remote) == _chunks(local) and len(_chunks(local)) > 10  # every shard, byte for byte
    assert LOCK_NAME not in remote and "zarr.json" in remote  # released; consolidated metadata


def test_workers_write_their_shards_with_store_options(s3, reference_store, tmp_path):
    """store_writer=workers: every task opens the store itself, with the endpoint and the
    credentials given as store_options (no AWS variables at all); secrets are not recorded."""
    env, _ = s3
    bare = {k: v for k, v in env.items() if not k.startswith(("AWS_ENDPOINT", "AWS_ACCESS", "AWS_SECRET"))}
    url = f"s3://{BUCKET}/workers.zarr"
    res = run_pipeline(*ARGS, f"store={url}", "store_writer=workers", "shard_cells=2",
                       f"+store_options.key={KEY}", f"+store_options.secret={SECRET}",
                       f"+store_options.client_kwargs.endpoint_url={env['AWS_ENDPOINT_URL']}",
                       cwd=tmp_path, env=bare)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "store write: by the workers" in res.stdout and SECRET not in res.stdout + res.stderr
    ds = _open(url, env)
    assert_same_numbers(ds, xr.open_zarr(str(reference_store)).load())
    assert SECRET not in json.dumps(dict(ds.attrs), default=str)  # config and command line: redacted
    assert "secret: '***'" in ds.attrs["config"] and "+store_options.secret=***" in ds.attrs["command_line"]


def test_status_verify_and_report_on_a_url_store(s3, client_store, tmp_path):
    """status and report read the URL store; a flipped bit in a shard object is named by
    ``status --verify``; the report lands in the current directory."""
    env, fs = s3
    res = run_main("status", client_store, "--verify", cwd=tmp_path, env=env)  # in this process
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"store   : {client_store}" in res.stdout and "cells   : 8/8 done, 0 failed" in res.stdout
    assert "0 corrupt cell(s)" in res.stdout
    res = run_pipeline("report", client_store, cwd=tmp_path, env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    page = tmp_path / "client_report" / "report.html"
    assert res.stdout.strip() == f"report: {page}" and client_store in page.read_text()

    copy = f"{BUCKET}/corrupt.zarr"  # a copy to damage, the shared store stays intact
    for key in fs.find(f"{BUCKET}/client.zarr"):
        fs.pipe_file(key.replace("client.zarr", "corrupt.zarr"), fs.cat_file(key))
    from pipeline.store import integrity, location

    loc = location.parse(f"s3://{copy}", {"key": KEY, "secret": SECRET,
                                          "client_kwargs": {"endpoint_url": env["AWS_ENDPOINT_URL"]}})
    obj, off, n = integrity.chunk_span(loc, "mean", (1, 0, 1))  # lr=0.02, batch_size=1, seed=1
    data = bytearray(fs.cat_file(obj))
    data[off + n // 2] ^= 0x04
    fs.pipe_file(obj, bytes(data))
    res = run_main("status", f"s3://{copy}", "--verify", cwd=tmp_path, env=env)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "1 corrupt cell(s)" in res.stdout
    assert "corrupt : lr=0.02, batch_size=1, seed=1: unreadable chunk of mean" in res.stdout


def test_client_killed_then_resumed_is_bit_identical(s3, reference_store, tmp_path):
    """SIGKILL between a cell's data and its done flag (one shard per cell): the store on S3
    holds two done cells and the dead client's lock; rerunning breaks that stale lock,
    recomputes the rest and ends equal to the uninterrupted local sweep."""
    env, fs = s3
    url = f"s3://{BUCKET}/killed.zarr"
    res = _run(*ARGS, f"store={url}", "shard_cells=1", cwd=tmp_path, env={**env, KILL_AFTER_WRITE_ENV: "3"})
    assert res.returncode == -signal.SIGKILL, res.stdout + res.stderr
    assert int(_open(url, env)["done"].sum()) == 2
    assert json.loads(fs.cat_file(f"{BUCKET}/killed.zarr/{LOCK_NAME}"))["pid"] > 0  # left behind
    res = _run(*ARGS, f"store={url}", "shard_cells=1", cwd=tmp_path, env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "lock: broke the stale lock" in res.stdout and "resuming: 2 already done" in res.stdout
    assert_same_numbers(_open(url, env), xr.open_zarr(str(reference_store)).load())
    fs.invalidate_cache()
    assert not fs.exists(f"{BUCKET}/killed.zarr/{LOCK_NAME}")


def test_a_second_sweep_on_the_url_is_refused_by_the_lock(s3, tmp_path):
    """A held lock object refuses a second sweep before anything is written, and its
    exclusive create (a conditional PUT) does not overwrite the holder's lock."""
    env, fs = s3
    from pipeline.store import location
    from pipeline.store import lock as locks

    opts = {"key": KEY, "secret": SECRET, "client_kwargs": {"endpoint_url": env["AWS_ENDPOINT_URL"]}}
    loc = location.parse(f"s3://{BUCKET}/held.zarr", opts)
    held = locks.acquire(loc, command="sweep (the first)")
    try:
        before = fs.cat_file(f"{BUCKET}/held.zarr/{LOCK_NAME}")
        assert not loc.create(LOCK_NAME, b"another")  # the server honours If-None-Match
        res = run_pipeline(*ARGS, f"store={loc.url}", cwd=tmp_path, env=env)
        assert res.returncode == 2, res.stdout + res.stderr
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: store: {loc.url} is in use by another sweep "
                                                       f"(host {os.uname().nodename}, pid {os.getpid()}")
        assert fs.find(f"{BUCKET}/held.zarr") == [f"{BUCKET}/held.zarr/{LOCK_NAME}"]  # nothing else written
        assert fs.cat_file(f"{BUCKET}/held.zarr/{LOCK_NAME}") == before
    finally:
        held.release()
    fs.invalidate_cache()
    assert not fs.exists(f"{BUCKET}/held.zarr/{LOCK_NAME}")


def test_a_lock_age_on_s3_is_the_servers(s3):
    """A holder whose clock runs an hour slow: its lock object's heartbeat field reads an
    hour old, but the server stamped the object just now (LastModified, against a probe
    object's): the lock is live and is not broken; no probe object is left."""
    env, fs = s3
    from pipeline.store import location
    from pipeline.store import lock as locks

    opts = {"key": KEY, "secret": SECRET, "client_kwargs": {"endpoint_url": env["AWS_ENDPOINT_URL"]}}
    loc = location.parse(f"s3://{BUCKET}/skewed.zarr", opts)
    info = {"host": "node-slow-clock", "pid": 1, "started": "?", "heartbeat": time.time() - 3600,
            "command": "sweep", "token": "s" * 32}
    fs.pipe_file(f"{BUCKET}/skewed.zarr/{LOCK_NAME}", json.dumps(info).encode())
    try:
        seen = locks.read(loc)
        assert 0.0 <= seen["age_s"] < 60.0 and locks.stale_reason(seen) is None
        with pytest.raises(ConfigError, match="is in use by another sweep \\(host node-slow-clock"):
            locks.acquire(loc)
        fs.invalidate_cache()
        assert fs.find(f"{BUCKET}/skewed.zarr") == [f"{BUCKET}/skewed.zarr/{LOCK_NAME}"]
    finally:
        fs.rm_file(f"{BUCKET}/skewed.zarr/{LOCK_NAME}")


@pytest.mark.parametrize(("command", "store", "drop", "message"), [
    ("sweep", "nosuch://bucket/x.zarr", (),
     "error: store: nosuch://bucket/x.zarr: unknown protocol 'nosuch'"),
    ("sweep", "s3://no-such-bucket/x.zarr", (),
     "error: store: s3://no-such-bucket/x.zarr: the bucket 'no-such-bucket' does not exist"),
    ("sweep", f"s3://{BUCKET}/x.zarr", ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"),
     f"error: store: cannot reach s3://{BUCKET}/x.zarr: no credentials"),
    ("report", f"s3://{BUCKET}/x.zarr", ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"),
     f"error: store: cannot reach s3://{BUCKET}/x.zarr: no credentials"),
])
def test_a_bad_url_is_one_line_and_exit_2(s3, tmp_path, command, store, drop, message):
    """Refused before anything is computed or written, locally or in the bucket. The sweeps
    run in this process (fsspec's cached file systems dropped), the report as a subprocess."""
    env, fs = s3
    listed = sorted(fs.find(BUCKET))
    cmd = [*ARGS, f"store={store}"] if command == "sweep" else [command, store]
    if command == "sweep":
        res = run_main(*cmd, cwd=tmp_path, env=env, unset=drop)
    else:
        res = run_pipeline(*cmd, cwd=tmp_path, env={k: v for k, v in env.items() if k not in drop})
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 1 and lines[0].startswith(message), res.stderr
    assert sorted(fs.find(BUCKET)) == listed  # nothing written anywhere
    assert list(tmp_path.iterdir()) == []


def test_url_parsing(tmp_path):
    """``file://`` is a local path; storage options are refused for one (they would be ignored);
    a bucket without a store name and an in-memory file system are refused; secrets are redacted."""
    from pipeline.store import location
    from sgdsweep.errors import ConfigError

    with pytest.raises(ConfigError, match=r"^store: s3://b: name a store inside the bucket \(s3://b/sweep.zarr\)$"):
        location.parse("s3://b")
    with pytest.raises(ConfigError, match=r"^store: memory://b/x.zarr: an in-memory file"):
        location.parse("memory://b/x.zarr")
    loc = location.parse(f"file://{tmp_path}/a.zarr")
    assert isinstance(loc, location.LocalLocation) and loc.root == f"{tmp_path}/a.zarr"
    assert loc.zarr_store == f"{tmp_path}/a.zarr"
    with pytest.raises(ConfigError, match=r"^store_options: only for a URL store"):
        location.parse(str(tmp_path / "a.zarr"), {"anon": True})
    nested = {"key": "k", "client_kwargs": {"endpoint_url": "u", "aws_secret_access_key": "s"}}
    assert location.redact(nested) == {"key": "***",
                                       "client_kwargs": {"endpoint_url": "u", "aws_secret_access_key": "***"}}
    assert np.array_equal(location.redact_args(["+store_options.secret=x", "store=s3://b/k"]),
                          ["+store_options.secret=***", "store=s3://b/k"])


def test_location_clear_and_conditional_remove_on_s3(s3):
    """What ``overwrite=true`` and breaking a stale lock do on a bucket: everything but the
    lock is removed; a lock object is removed only while it holds what was judged."""
    env, _ = s3
    from pipeline.store import location

    opts = {"key": KEY, "secret": SECRET, "client_kwargs": {"endpoint_url": env["AWS_ENDPOINT_URL"]}}
    loc = location.parse(f"s3://{BUCKET}/ops.zarr", opts)
    assert not loc.exists()
    assert loc.create(LOCK_NAME, b'{"token": "a"}') and not loc.create(LOCK_NAME, b"b")
    loc.write_many([("zarr.json", b"{}"), ("mean/c/0/0", b"1"), ("done/c/0", b"2")])
    assert sorted(loc.entries()) == [LOCK_NAME, "done", "mean", "zarr.json"]
    loc.clear(keep=lambda name: name == LOCK_NAME)
    assert loc.entries() == [LOCK_NAME]
    loc.write(LOCK_NAME, b'{"token": "fresh"}')  # replaced after it was judged stale
    assert not loc.remove_if(LOCK_NAME, lambda data: json.loads(data)["token"] == "a")
    assert loc.read(LOCK_NAME) == b'{"token": "fresh"}'
    assert loc.remove_if(LOCK_NAME, lambda data: json.loads(data)["token"] == "fresh")
    assert not loc.exists()


@pytest.mark.timeout(300)
@pytest.mark.parametrize("ending", ["killed", "refused"])
def test_a_writer_frozen_after_its_fence_check_cannot_write_into_the_live_store_on_s3(s3, tmp_path, ending):
    """tests/test_faults.py's zombie frozen between its fence check and its write, on a
    bucket: no object outside ``.staging/`` changes (ETag, LastModified); what it wrote
    lies under ``.staging/<its run's token>/`` until the next run removes it."""
    env, fs = s3
    from tests.test_faults import late_write_after_the_fence

    prefix = f"{BUCKET}/late-{ending}.zarr"
    opts = {"key": KEY, "secret": SECRET, "client_kwargs": {"endpoint_url": env["AWS_ENDPOINT_URL"]}}
    def objects() -> dict:
        return {k.removeprefix(f"{prefix}/"): v for k, v in _objects(fs, prefix).items()}

    late_write_after_the_fence(tmp_path, f"s3://{prefix}", env, opts, objects, ending)


@pytest.mark.timeout(300)  # the sweep runs in this process: a hang fails here
def test_a_worker_frozen_past_the_scheduler_ttl_is_rerun_and_its_late_write_refused_on_s3(
        s3, workers_reference_store, tmp_path):
    """tests/test_faults.py's worker frozen past the scheduler's timeout, on a bucket: its task
    rerun elsewhere, the sweep completes; woken after it, its write (the fence reads the lock
    object) is refused, no object changes (ETag, LastModified), and the objects are byte for
    byte a clean local sweep's files; ``status --verify`` is clean."""
    env, fs = s3
    from tests.test_faults import frozen_worker_rerun

    prefix = f"{BUCKET}/frozen.zarr"
    frozen_worker_rerun(tmp_path, f"s3://{prefix}", env, lambda: _files(fs, prefix),
                        lambda: _objects(fs, prefix), workers_reference_store,
                        settle=1.1)  # LastModified: one-second resolution
    res = run_main("status", f"s3://{prefix}", "--verify", cwd=tmp_path, env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "cells   : 8/8 done, 0 failed, 0 pending" in res.stdout and "0 corrupt cell(s)" in res.stdout


@pytest.mark.timeout(300)
def test_a_failed_cell_on_s3_is_recorded_and_retried(s3, tmp_path):
    """store_writer=workers on a bucket, one of two cells raising on the worker (which has
    FAIL_ON_WORKERS_ENV set): the cell is recorded failed, ``status`` names it by its
    coordinates; the same command on a worker without the fault recomputes only it, and the
    objects are byte for byte a clean sweep's files. The sweeps run in this process."""
    env, fs = s3
    from distributed import Client

    from tests.test_faults import address_cluster, start_worker

    env = {**env, "PYTHONPATH": str(REPO)}  # workers import the builder from tests/
    prefix = f"{BUCKET}/failed.zarr"
    with address_cluster(tmp_path, env, [{FAIL_ON_WORKERS_ENV: "1"}]) as (address, workers):
        args = ["sweep", *TINY, "+landscape._target_=tests.conftest.landscape_failing_while_set",
                "+landscape.fail=0", "grid.lr=[0.02]", "grid.fail=[0,1]", "store_writer=workers",
                "cluster=address", f"cluster.address={address}"]
        res = run_main(*args, f"store=s3://{prefix}", cwd=tmp_path, env=env)
        assert res.returncode == 1, res.stdout + res.stderr
        assert "cells      : 2 total, 1 computed now, 0 already done, 1 failed" in res.stdout
        reason = "RuntimeError: landscape data unavailable on this worker (fail=1)"
        status = run_main("status", f"s3://{prefix}", cwd=tmp_path, env=env)
        assert status.returncode == 1, status.stdout + status.stderr
        assert "cells   : 1/2 done, 1 failed, 0 pending" in status.stdout
        assert f"lr=0.02, fail=1: {reason}" in status.stdout

        workers[0].kill()  # the fault gone: a worker without it
        workers.append(start_worker(tmp_path, address, env, 1))
        with Client(address, timeout=60) as client:
            deadline = time.monotonic() + 60
            while len(client.scheduler_info()["workers"]) != 1 or workers[0].poll() is None:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        again = run_main(*args, f"store=s3://{prefix}", cwd=tmp_path, env=env)
        assert again.returncode == 0, again.stdout + again.stderr
        assert "cells      : 2 total, 1 computed now, 1 already done, 0 failed" in again.stdout
        clean = run_main(*args, "store=clean.zarr", cwd=tmp_path, env=env)
        assert clean.returncode == 0, clean.stdout + clean.stderr
    assert same_bytes(_files(fs, prefix)) == same_bytes(store_files(tmp_path / "clean.zarr"))
    status = run_main("status", f"s3://{prefix}", "--verify", cwd=tmp_path, env=env)
    assert status.returncode == 0, status.stdout + status.stderr
    assert "cells   : 2/2 done, 0 failed, 0 pending" in status.stdout and "0 corrupt cell(s)" in status.stdout


@pytest.mark.timeout(300)
def test_a_worker_killed_mid_write_on_s3_is_rerun_bit_identically(s3, workers_reference_store, tmp_path):
    """store_writer=workers on a bucket, its one worker SIGKILLing itself between its first
    shard's data and done flag (KILL_AFTER_WRITE_ENV=1): that cell's data objects are staged
    (under ``.staging/``, none in place), no cell is done, and the sweep waits for a worker; one
    started then reruns the task, which stages the shard whole, and the client moves it into
    place. The sweep completes (exit 0) and the objects are byte for byte a clean sweep's files
    (the dead attempt's staged objects removed)."""
    env, fs = s3
    from tests.test_faults import address_cluster, start_worker

    prefix = f"{BUCKET}/killed-worker.zarr"
    args = ["sweep", *TINY, *SMALL_GRID, "store_writer=workers", "cluster=address", f"store=s3://{prefix}"]
    with address_cluster(tmp_path, env, [{KILL_AFTER_WRITE_ENV: "1"}]) as (address, workers):
        with pipeline_session(*args, f"cluster.address={address}", cwd=tmp_path, env=env) as sweep:
            assert workers[0].wait(timeout=120) == -signal.SIGKILL
            files = _files(fs, prefix)
            assert not [k for k in files if k.startswith("mean/c/")], sorted(files)  # nothing in place
            written = {k for k in files if k.startswith(".staging/") and "/mean~c~" in k}
            assert len(written) == 1, sorted(files)  # the cell whose data the worker staged
            assert not _open(f"s3://{prefix}", env)["done"].values.any()  # and no done flag
            workers.append(start_worker(tmp_path, address, env, 1))
            out, err = sweep.communicate(timeout=120)
    assert sweep.returncode == 0, out + err
    assert "cells      : 8 total, 8 computed now, 0 already done, 0 failed" in out
    assert same_bytes(_files(fs, prefix)) == same_bytes(store_files(workers_reference_store))
