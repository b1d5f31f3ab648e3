"""SLURM and PBS through dask-jobqueue, against a real single-node SLURM (.ci/slurm/start.sh).

Tests marked `slurm` need a running SLURM: `eval "$(bash .ci/slurm/start.sh)"` starts one and exports
SLURM_CONF. Without one they skip with the reason, except in CI (CI=true), where they fail.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

from pipeline.cli.submit import submit_main
from pipeline.cluster.jobqueue import jobqueue_kwargs, make_jobqueue_cluster, worker_environment
from pipeline.cluster.settings import KINDS
from sgdsweep.errors import ConfigError
from tests.conftest import ENV, SMALL_GRID, TINY, assert_same_numbers, open_store, pipeline_cmd, run_pipeline

REPO = Path(__file__).resolve().parent.parent
#: Worker jobs on the single-node SLURM: the scheduler listens on loopback, 1 core and 1 GiB a job.
ON_SLURM = ["cluster=slurm", "cluster.scheduler_host=127.0.0.1", "cluster.memory=1GiB",
            "cluster.minimum_jobs=2", "cluster.maximum_jobs=2"]
#: Cells slow enough (about a second each) that a job can be cancelled while cells remain.
SLOW = ["mc.chains=60000"]
DEFAULT_SLURM_CONF = Path(os.environ.get("SGDSWEEP_SLURM_DIR", "/tmp/sgdsweep-slurm")) / "slurm.conf"


def _cluster_cfg(name: str, /, **changes) -> dict:
    """The defaults of cluster kind ``name`` (as ``cluster=name`` composes them), with ``changes``."""
    return {**dataclasses.asdict(KINDS[name]()), **changes}


def _slurm_answers(env: dict) -> str | None:
    """None if `sinfo` answers with an idle/mixed/allocated node, else why not."""
    if shutil.which("sinfo") is None:
        return "the SLURM client tools are not installed"
    try:
        out = subprocess.run(["sinfo", "-h", "-N", "-o", "%t"], env=env, capture_output=True, text=True,
                             timeout=20, check=False)
    except subprocess.TimeoutExpired:
        return "sinfo did not answer within 20 s"
    states = out.stdout.split()
    if out.returncode != 0 or not states:
        return f"sinfo failed: {(out.stderr or out.stdout).strip()[:200]}"
    if not any(s.rstrip("*~#") in {"idle", "mix", "alloc", "comp"} for s in states):
        return f"no usable SLURM node (states {states})"
    return None


@pytest.fixture(scope="module")
def slurm(monkeypatch_module):
    """A running SLURM: SLURM_CONF from the environment, else the one .ci/slurm/start.sh writes."""
    conf = os.environ.get("SLURM_CONF") or (str(DEFAULT_SLURM_CONF) if DEFAULT_SLURM_CONF.exists() else None)
    if conf is None:
        reason = "no SLURM: SLURM_CONF is unset (start one with: eval \"$(bash .ci/slurm/start.sh)\")"
    else:
        reason = _slurm_answers({**os.environ, "SLURM_CONF": conf})
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the SLURM tests, but {reason}")
        pytest.skip(reason)
    monkeypatch_module.setenv("SLURM_CONF", conf)
    return conf


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def _job_state(job_id: str) -> str:
    out = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True, check=False)
    for field in out.stdout.split():
        if field.startswith("JobState="):
            return field.split("=", 1)[1]
    return "UNKNOWN"


def _wait_for_job(job_id: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    state = _job_state(job_id)
    while state in {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING"} and time.monotonic() < deadline:
        time.sleep(0.5)
        state = _job_state(job_id)
    return state


# --- job scripts (no batch system needed) ---------------------------------------------------------


def test_slurm_job_script_one_single_threaded_worker_per_core(tmp_path):
    cluster_kwargs = jobqueue_kwargs(_cluster_cfg("slurm", cores=4, memory="8GiB", queue="short",
                                                  account="proj", job_extra_directives=["--qos=low"]),
                                     store=tmp_path / "s.zarr")
    from dask_jobqueue import SLURMCluster

    cluster_kwargs["scheduler_options"]["host"] = "127.0.0.1"
    with SLURMCluster(**cluster_kwargs) as cluster:
        script = cluster.job_script()
    for line in ["#SBATCH --cpus-per-task=4", "#SBATCH --mem=8G", "#SBATCH -t 01:00:00", "#SBATCH -p short",
                 "#SBATCH -A proj", "#SBATCH --qos=low", "export NUMBA_NUM_THREADS=1",
                 "export OMP_NUM_THREADS=1", f"export NUMBA_CACHE_DIR={tmp_path}/.sgdsweep-numba-cache"]:
        assert line in script.splitlines(), line
    worker = script.strip().splitlines()[-1]
    assert "--nthreads 1 --memory-limit 2.00GiB --nworkers 4" in worker
    assert "--lifetime 55m --lifetime-stagger 4m" in worker
    assert "--lifetime-restart" not in worker
    assert f"-o {tmp_path}/s.jobs/" in script


def test_pbs_job_script(tmp_path):
    from dask_jobqueue import PBSCluster

    cfg = _cluster_cfg("pbs", cores=2, processes=1, walltime="02:00:00", lifetime_restart=True,
                       numba_cache_dir=str(tmp_path / "nc"))
    cluster_kwargs = jobqueue_kwargs(cfg)
    cluster_kwargs["scheduler_options"]["host"] = "127.0.0.1"
    with PBSCluster(**cluster_kwargs) as cluster:
        script = cluster.job_script()
    assert "#PBS -l walltime=02:00:00" in script
    assert "#PBS -l select=1:ncpus=2:mem=2048MB" in script
    assert "export NUMBA_NUM_THREADS=2" in script
    assert f"export NUMBA_CACHE_DIR={tmp_path}/nc" in script
    assert "--nthreads 2 --memory-limit 2.00GiB" in script
    assert "--lifetime 55m --lifetime-stagger 4m --lifetime-restart" in script


@pytest.mark.parametrize(("changes", "field"), [
    ({"kind": "sge"}, "cluster.kind"),
    ({"cores": 0}, "cluster.cores"),
    ({"cores": 2, "processes": 3}, "cluster.processes"),
    ({"maximum_jobs": 0}, "cluster.maximum_jobs"),
    ({"job_extra_directives": "--qos=low"}, "cluster.job_extra_directives"),
    ({"walltme": "1:00:00"}, "cluster.walltme"),
])
def test_bad_cluster_config_names_the_field(changes, field):
    with pytest.raises(ConfigError, match=f"^{field}: "):
        make_jobqueue_cluster(_cluster_cfg("slurm", **changes))


def test_worker_environment_defaults_to_a_cache_beside_the_store(tmp_path):
    env = worker_environment(_cluster_cfg("slurm", env={"XLA_FLAGS": "x"}), store=tmp_path / "a" / "b.zarr")
    assert env["NUMBA_CACHE_DIR"] == str(tmp_path / "a" / ".sgdsweep-numba-cache")
    assert env["XLA_FLAGS"] == "x"
    assert worker_environment(_cluster_cfg("slurm"))["NUMBA_CACHE_DIR"].endswith(".cache/sgdsweep/numba")


def test_submit_dry_run_prints_the_batch_script(tmp_path, capsys):
    store = tmp_path / "runs" / "sweep.zarr"
    overrides = [f"store={store}", "cluster=slurm", "cluster.queue=debug", "cluster.maximum_jobs=3",
                 "submit.walltime=00:10:00", "submit.memory=3GiB"]
    assert submit_main(["--dry-run", *overrides]) == 0
    script = capsys.readouterr().out
    lines = script.splitlines()
    for line in ["#SBATCH --time=00:10:00", "#SBATCH --mem=3G", "#SBATCH --partition=debug",
                 "#SBATCH --cpus-per-task=1", f"#SBATCH --output={tmp_path}/runs/sweep.jobs/sweep-%j.out",
                 f"cd {Path.cwd()}"]:
        assert line in lines, line
    assert lines[-1].endswith(f"-m pipeline sweep store={store} cluster=slurm cluster.queue=debug "
                              "cluster.maximum_jobs=3")
    assert not (tmp_path / "runs").exists(), "a dry run writes nothing"


def test_submit_takes_overrides_before_and_after_its_flags(tmp_path, capsys):
    assert submit_main(["mc.chains=50", "--dry-run", f"store={tmp_path / 's.zarr'}"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.endswith(f"-m pipeline sweep mc.chains=50 store={tmp_path / 's.zarr'}"), last
    assert not (tmp_path / "s.jobs").exists()


def test_submit_bad_override_is_one_line_exit_2(capsys):
    assert submit_main(["--dry-run", "cluster=no_such_cluster"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")


# --- the real SLURM ------------------------------------------------------------------------------


@pytest.mark.slurm
def test_sbatch_job_completes(slurm, tmp_path):
    out = tmp_path / "job.out"
    t0 = time.monotonic()
    job_id = subprocess.run(["sbatch", "--parsable", "--mem=100M", "-c", "1", "-o", str(out), "--wrap",
                             "echo $SLURM_JOB_ID $(hostname -s)"],
                            capture_output=True, text=True, check=True).stdout.strip()
    assert _wait_for_job(job_id, timeout=60) == "COMPLETED"
    assert out.read_text().split() == [job_id, socket.gethostname().split(".")[0]]
    assert time.monotonic() - t0 < 60
    srun = subprocess.run(["srun", "-n1", "--mem=100M", "printenv", "SLURM_JOB_ID"], capture_output=True,
                          text=True, timeout=60, check=True)
    assert srun.stdout.strip().isdigit()


@pytest.mark.slurm
def test_slurmcluster_workers_run_inside_slurm_jobs(slurm, tmp_path):
    from distributed import Client

    cfg = _cluster_cfg("slurm", scheduler_host="127.0.0.1", memory="1GiB", jobs=2)
    cluster, description = make_jobqueue_cluster(cfg, store=tmp_path / "s.zarr")
    try:
        assert "SLURMCluster at tcp://127.0.0.1:" in description
        with Client(cluster) as client:
            client.wait_for_workers(2, timeout=120)

            def where(_):
                time.sleep(0.2)
                return (os.getpid(), os.environ.get("SLURM_JOB_ID"), os.environ["NUMBA_NUM_THREADS"],
                        os.environ["NUMBA_CACHE_DIR"])

            results = client.gather(client.map(where, range(8)))
            job_ids = {job.job_id for job in cluster.workers.values()}
    finally:
        cluster.close()
    assert {r[1] for r in results} == job_ids and len(job_ids) == 2
    assert len({r[0] for r in results}) == 2
    assert {r[2] for r in results} == {"1"}
    assert {r[3] for r in results} == {str(tmp_path / ".sgdsweep-numba-cache")}
    assert list((tmp_path / "s.jobs").glob("sgdsweep-worker-*.err"))


@pytest.mark.slurm
def test_adaptive_cluster_replaces_a_cancelled_job(slurm, tmp_path):
    from distributed import Client

    cfg = _cluster_cfg("slurm", scheduler_host="127.0.0.1", memory="1GiB", minimum_jobs=2, maximum_jobs=2)
    cluster, _ = make_jobqueue_cluster(cfg, store=tmp_path / "s.zarr")
    try:
        with Client(cluster) as client:
            client.wait_for_workers(2, timeout=120)
            first_jobs = {job.job_id for job in cluster.workers.values()}

            def square(i):
                time.sleep(0.5)
                return i * i

            futures = client.map(square, range(16))
            time.sleep(1.5)
            victim = sorted(first_jobs)[0]
            subprocess.run(["scancel", victim], check=True)
            assert client.gather(futures) == [i * i for i in range(16)]
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                live = set(subprocess.run(["squeue", "-h", "-t", "R", "-o", "%i"], capture_output=True,
                                          text=True, check=True).stdout.split())
                if len(client.scheduler_info()["workers"]) == 2 and len(live & {
                        job.job_id for job in cluster.workers.values()}) == 2:
                    break
                time.sleep(0.5)
            current = {job.job_id for job in cluster.workers.values()}
    finally:
        cluster.close()
    assert victim not in current and len(current) == 2
    assert _job_state(victim) == "CANCELLED"


def _done_cells(store: Path) -> np.ndarray:
    try:
        return np.asarray(zarr.open_group(str(store), mode="r")["done"][...], dtype=bool)
    except (FileNotFoundError, KeyError, ValueError, zarr.errors.BaseZarrError):
        return np.zeros(0, dtype=bool)


@pytest.mark.slurm
@pytest.mark.integration
def test_sweep_on_slurm_equals_local(slurm, reference_store, tmp_path):
    numba_cache = tmp_path.parent / "slurm-numba-cache"
    res = run_pipeline("sweep", *TINY, *SMALL_GRID, *ON_SLURM, f"cluster.numba_cache_dir={numba_cache}",
                       "store=slurm.zarr", cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SLURMCluster at tcp://127.0.0.1:" in res.stdout + res.stderr
    ds = open_store(tmp_path / "slurm.zarr")
    assert ds["done"].all()
    assert_same_numbers(ds, open_store(reference_store))
    assert list((tmp_path / "slurm.jobs").glob("sgdsweep-worker-*.out"))


@pytest.mark.slurm
@pytest.mark.integration
@pytest.mark.parametrize("writer", ["client", "workers"])
def test_sweep_survives_a_cancelled_worker_job(slurm, tmp_path, writer):
    """scancel of a worker job mid-sweep: its cells run elsewhere, the store completes, identical
    (``workers``: the worker jobs write their own shards; shards of 2 cells in either mode, so
    that some cells are done before the end)."""
    numba_cache = tmp_path.parent / "slurm-numba-cache"
    name = f"sgdsweep-cancel-{os.getpid()}"
    store = tmp_path / "cancel.zarr"
    args = ["sweep", *TINY, *SLOW, *SMALL_GRID, "shard_cells=2", f"store_writer={writer}"]
    command = pipeline_cmd(*args, *ON_SLURM, f"cluster.numba_cache_dir={numba_cache}",
                           f"cluster.job_name={name}", f"store={store}")
    proc = subprocess.Popen(command, cwd=tmp_path, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        deadline = time.monotonic() + 300
        done = _done_cells(store)
        while not done.any() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
            done = _done_cells(store)
        jobs = subprocess.run(["squeue", "-h", "-n", name, "-t", "R", "-o", "%i"], capture_output=True,
                              text=True, check=True).stdout.split()
        assert proc.poll() is None and 0 < done.sum() < done.size, "the sweep ended before the cancel"
        assert len(jobs) == 2
        subprocess.run(["scancel", jobs[0]], check=True)
        out, _ = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out
    assert _job_state(jobs[0]) == "CANCELLED"
    cancelled = open_store(store)
    assert cancelled["done"].all()
    reference = run_pipeline(*args, "cluster.n_workers=2", "store=local.zarr", cwd=tmp_path)
    assert reference.returncode == 0, reference.stdout + reference.stderr
    assert_same_numbers(cancelled, open_store(tmp_path / "local.zarr"))


@pytest.mark.slurm
@pytest.mark.integration
def test_submit_runs_the_sweep_as_a_slurm_job(slurm, reference_store, tmp_path):
    res = run_pipeline("submit", *TINY, *SMALL_GRID, "cluster.n_workers=1", "store=submitted.zarr",
                       "submit.walltime=00:20:00", "submit.memory=2GiB", cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    job_id = re.search(r"submitted sweep job (\d+)", res.stdout).group(1)
    assert f"squeue -j {job_id}" in res.stdout
    log = tmp_path / "submitted.jobs" / f"sweep-{job_id}.out"
    assert str(log) in res.stdout
    assert _wait_for_job(job_id, timeout=600) == "COMPLETED", log.read_text() if log.exists() else "no log"
    assert f"sweep job {job_id} on" in log.read_text()
    assert_same_numbers(open_store(tmp_path / "submitted.zarr"), open_store(reference_store))


@pytest.mark.slurm
def test_workers_retire_at_lifetime_and_jobs_are_renewed(slurm, tmp_path):
    """`lifetime` ends a worker (and so its job) before the walltime; adaptive scaling starts a new job."""
    from distributed import Client

    cfg = _cluster_cfg("slurm", scheduler_host="127.0.0.1", memory="1GiB", minimum_jobs=1, maximum_jobs=1,
                       lifetime="3s", lifetime_stagger="0s", walltime="00:02:00")
    cluster, _ = make_jobqueue_cluster(cfg, store=tmp_path / "s.zarr")
    seen: set[str] = set()

    def job_id():
        return os.environ.get("SLURM_JOB_ID")

    try:
        with Client(cluster) as client:
            deadline = time.monotonic() + 90
            while len(seen) < 2 and time.monotonic() < deadline:
                try:
                    seen.add(client.submit(job_id, pure=False).result(timeout=30))
                except TimeoutError:
                    pass
                time.sleep(0.5)
    finally:
        cluster.close()
    assert len(seen) >= 2, f"workers seen in jobs {seen}"
    first = min(seen, key=int)
    assert _job_state(first) in {"COMPLETED", "CANCELLED"}
    log = (tmp_path / "s.jobs" / f"sgdsweep-worker-{first}.err").read_text()
    assert "worker-lifetime-reached" in log
