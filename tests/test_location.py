"""Store locations: the two kinds ``parse`` makes, and the local file-system operations
the store and its lock rely on (atomic replace, exclusive create, conditional remove)."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest

from pipeline.run.writers import WORKER_TASKS, ClientWriter, WorkerWriter, writer_for
from pipeline.store.location import FsspecLocation, LocalLocation, Location, parse
from sgdsweep.errors import ConfigError


def test_parse_makes_one_kind_per_place(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    loc = parse("runs/a.zarr")
    assert isinstance(loc, LocalLocation) and isinstance(loc, Location)
    assert loc.show() == "runs/a.zarr" and loc.show("done/c/0") == "runs/a.zarr/done/c/0"
    assert loc.url == str(tmp_path / "runs" / "a.zarr") and loc.name == "a.zarr"
    assert loc.local_path == Path("runs/a.zarr") and loc.path_of("x") == Path("runs/a.zarr/x")
    assert loc.options == {} and loc.storage_options is None and loc.cli_hint() == ""
    # Workers elsewhere (other working directory) get the absolute path.
    away = loc.for_workers()
    assert away.root == away.store == str(tmp_path / "runs" / "a.zarr")
    assert parse(f"file://{tmp_path}/b.zarr") == LocalLocation(store=f"{tmp_path}/b.zarr",
                                                              root=f"{tmp_path}/b.zarr")
    with pytest.raises(ConfigError, match=r"^store_options: only for a URL store"):
        parse("a.zarr", {"anon": True})
    with pytest.raises(ConfigError, match=r"^store: is empty"):
        parse("")


def test_a_url_location_pickles_without_its_file_system():
    loc = parse("s3://bucket/sweeps/a.zarr", {"endpoint_url": "http://127.0.0.1:1", "secret": "s"})
    assert isinstance(loc, FsspecLocation) and loc.local_path is None
    assert loc.url == "s3://bucket/sweeps/a.zarr" and loc.name == "a.zarr"
    assert loc.show("done/c/0") == "s3://bucket/sweeps/a.zarr/done/c/0"
    assert loc.path_of("done/c/0") == "bucket/sweeps/a.zarr/done/c/0"
    assert "'secret': '***'" in loc.open_hint() and "'s'" not in loc.cli_hint()
    assert loc.fs is not None  # made (no request is sent until used)
    copy = pickle.loads(pickle.dumps(loc))
    assert copy == loc and "fs" not in copy.__dict__ and copy.for_workers() is copy


def test_local_operations(tmp_path):
    loc = parse(str(tmp_path / "s.zarr"))
    assert not loc.exists() and loc.make_dir() and not loc.make_dir() and loc.exists()
    assert loc.create("k", b"one") and not loc.create("k", b"two") and loc.read("k") == b"one"
    loc.write("sub/k", b"a")
    loc.write("sub/k", b"b")  # replaced; no temporary file left beside it
    assert loc.read("sub/k") == b"b" and sorted(os.listdir(tmp_path / "s.zarr" / "sub")) == ["k"]
    assert loc.is_file("sub/k") and loc.is_dir("sub") and loc.holds_chunk_files("sub")
    assert not loc.holds_chunk_files("nothing")
    assert sorted(loc.files("sub")) == [(("k",), "sub/k")] and sorted(loc.entries()) == ["k", "sub"]
    # Removed only if it holds what was judged; otherwise left (put back) in place.
    assert not loc.remove_if("k", lambda data: data == b"other") and loc.read("k") == b"one"
    assert loc.remove_if("k", lambda data: data == b"one") and not loc.is_file("k")
    assert loc.remove_if("k", lambda data: False)  # already gone
    loc.clear(keep=lambda name: name == "sub")
    assert loc.entries() == ["sub"]


def test_writer_strategies():
    assert isinstance(writer_for("client"), ClientWriter) and isinstance(writer_for("workers"), WorkerWriter)
    # Client: the shard size asked for. Workers: a shard is a task, at least WORKER_TASKS of them.
    assert ClientWriter().shard_cells(1024, 100) == 1024
    assert WorkerWriter().shard_cells(1024, 100) == -(-100 // WORKER_TASKS) == 7
    assert WorkerWriter().shard_cells(4, 100) == 4 and WorkerWriter().shard_cells(1024, 3) == 1
