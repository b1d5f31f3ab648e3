"""Where a sweep store lives: a local directory, or an fsspec URL such as ``s3://bucket/sweep.zarr``.

:func:`parse` turns ``store=`` (and its ``store_options``, fsspec storage options)
into a :class:`Location`, once (the CLI, the start of a sweep); the store, its lock
and its integrity checks take that Location from there on. It offers the few
operations they need, on keys relative to the store's root (``done/c/0``):

* :class:`LocalLocation`, a local path: atomic replacement by a temporary file and
  ``os.replace``, exclusive create with ``O_CREAT | O_EXCL``;
* :class:`FsspecLocation`, a URL, goes through fsspec: a replacement is one PUT (an object store replaces
  an object atomically: readers see the old or the new bytes), an exclusive
  create is a conditional PUT (``If-None-Match: *``, s3fs ``mode="create"``).
  Only S3 (s3fs) is tested; credentials and endpoint come from the standard AWS
  environment (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, …, ``~/.aws``) or the
  storage options.

Zarr and xarray get :attr:`Location.zarr_store`: the path for a local store (as
before), an ``FsspecStore`` for a URL.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from sgdsweep.errors import ConfigError

#: Protocols that would lose the store (one process's memory) or are plain local paths.
_REFUSED = {"memory": "an in-memory file system lives in one process: the workers and the next run "
                      "would not see it"}
#: Storage-option keys whose values are secrets: never printed, never stored in the store's attrs.
_SECRET = re.compile(r"(key|secret|token|password|credential)", re.IGNORECASE)


def is_url(store: str | Path) -> bool:
    """Whether ``store`` names an fsspec URL (``proto://…``) rather than a local path."""
    return isinstance(store, str) and re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", store) is not None


def redact(options: Mapping[str, Any] | None) -> dict[str, Any]:
    """``options`` with the values of secret-looking keys (``key``, ``secret``, …) replaced by ``***``."""
    out: dict[str, Any] = {}
    for k, v in (options or {}).items():
        out[k] = redact(v) if isinstance(v, Mapping) else ("***" if _SECRET.search(str(k)) else v)
    return out


def redact_args(argv: Sequence[str]) -> list[str]:
    """Command-line arguments with secret-looking ``store_options.KEY=VALUE`` values replaced by ``***``."""
    out = []
    for a in argv:
        m = re.match(r"^(\+*store_options\.([^=]+)=)", a)
        out.append(m.group(1) + "***" if m and _SECRET.search(m.group(2)) else a)
    return out


def io_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean "the store could not be read or written" (OSError; for s3fs also
    botocore's and aiohttp's connection errors, which are not OSErrors)."""
    out: list[type[BaseException]] = [OSError]
    with contextlib.suppress(ImportError):
        from botocore.exceptions import BotoCoreError

        out.append(BotoCoreError)
    with contextlib.suppress(ImportError):
        from aiohttp import ClientError

        out.append(ClientError)
    return tuple(out)


def reason(exc: BaseException) -> str:
    """One line for an error of the file system: an OSError's text (as the local code always
    printed it), or the exception's name and first line."""
    name = type(exc).__name__
    if isinstance(exc, OSError):
        text = str(exc.strerror or exc).strip().splitlines()
        return text[0] if text else name
    text = str(exc).strip().splitlines()
    if name == "NoCredentialsError":
        return ("no credentials (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, an AWS profile, "
                "or store_options.key / store_options.secret)")
    return f"{name}: {text[0] if text else ''}".strip().rstrip(":")


class Location(ABC):
    """A store's place, and the few operations the store, its lock and its integrity checks
    need, on keys relative to the store's root (``done/c/0``). Made by :func:`parse`:
    a :class:`LocalLocation` or an :class:`FsspecLocation`.

    ``store`` is the text given (shown in messages); ``root`` is the store's path for its
    file system (local: the path as given; URL: without the protocol).
    """

    store: str
    root: str

    # ------------------------------------------------------------------ what it is

    @property
    @abstractmethod
    def url(self) -> str:
        """What zarr/xarray open (with :attr:`options`); an absolute path for a local store."""

    @property
    @abstractmethod
    def options(self) -> dict[str, Any]:
        """fsspec storage options ({} for a local store)."""

    @property
    @abstractmethod
    def name(self) -> str:
        """The store's last path component (``sweep.zarr``)."""

    @property
    @abstractmethod
    def local_path(self) -> Path | None:
        """The store's path on this machine's file system; None for an object store."""

    @abstractmethod
    def show(self, key: str = "") -> str:
        """The store (or its ``key``) as the user names it: a path, or a URL."""

    @abstractmethod
    def path_of(self, key: str) -> Path | str:
        """The file-system path of ``key``: a :class:`Path` for a local store."""

    @property
    @abstractmethod
    def zarr_store(self) -> Any:
        """What ``zarr.open_group`` / ``xarray.open_zarr`` / ``to_zarr`` take."""

    @property
    @abstractmethod
    def dataset_path(self) -> str:
        """What :func:`sgdsweep.analysis.reductions.open_sweep` opens (with :attr:`storage_options`)."""

    @property
    def storage_options(self) -> dict[str, Any] | None:
        """The storage options to hand to xarray/fsspec, None when there are none."""
        return dict(self.options) or None

    @abstractmethod
    def for_workers(self) -> Location:
        """The same place as other processes (other hosts, other working directories) reach it."""

    @abstractmethod
    def open_hint(self) -> str:
        """The ``xr.open_zarr(...)`` call that opens this store (secrets left out)."""

    def cli_hint(self) -> str:
        """The ``--store-options`` that ``status``/``report`` need for this store ("" if none)."""
        if not self.options:
            return ""
        import json

        return f" --store-options '{json.dumps(redact(self.options))}'"

    # ------------------------------------------------------------------ checks (ConfigError)

    @abstractmethod
    def exists(self) -> bool:
        """Whether anything is at the store's place (ConfigError if that cannot be told)."""

    @abstractmethod
    def check_creatable(self) -> None:
        """Raise ConfigError if a new store cannot be made here (checked before any compute)."""

    @abstractmethod
    def check_writable(self, replace: bool = False) -> None:
        """Raise ConfigError if an existing store (``replace``: its parent) is not writable."""

    # ------------------------------------------------------------------ objects

    @abstractmethod
    def read(self, key: str) -> bytes:
        """The bytes of ``key`` (FileNotFoundError if there is none)."""

    @abstractmethod
    def is_file(self, key: str) -> bool: ...

    @abstractmethod
    def is_dir(self, key: str) -> bool:
        """Whether ``key`` holds files (a directory; a prefix of objects)."""

    @abstractmethod
    def mtime(self, key: str) -> float:
        """Unix time ``key`` was last written (FileNotFoundError if there is none)."""

    @abstractmethod
    def write(self, key: str, data: bytes, tmp: str | None = None) -> None:
        """Replace ``key`` by ``data`` atomically: a crash leaves the old or the new bytes."""

    @abstractmethod
    def write_many(self, items: Iterable[tuple[str, bytes]]) -> None:
        """:meth:`write` of each (key, data); the order among them is not promised."""

    @abstractmethod
    def move_many(self, steps: Sequence[Sequence[tuple[str, str]]]) -> None:
        """Move each (source, target) key, a step after the other (a step's moves in any
        order): each target replaced atomically (readers see its old or its new bytes), the
        sources gone after (a file system keeps their emptied directories)."""

    @abstractmethod
    def remove_tree(self, key: str) -> None:
        """Remove ``key`` and everything under it (nothing there: nothing done)."""

    @abstractmethod
    def create(self, key: str, data: bytes) -> bool:
        """Create ``key`` holding ``data`` if it does not exist, atomically; False if it does."""

    @abstractmethod
    def remove(self, key: str) -> None:
        """Remove ``key``; nothing if it is not there."""

    @abstractmethod
    def remove_if(self, key: str, same: Callable[[bytes], bool]) -> bool:
        """Remove ``key`` if its bytes pass ``same``; True if removed (or already gone),
        False if it holds something else (left in place)."""

    @abstractmethod
    def files(self, key: str) -> Iterator[tuple[tuple[str, ...], str]]:
        """Every file under ``key``: (its path parts relative to ``key``, its key)."""

    @abstractmethod
    def entries(self) -> list[str]:
        """Names directly inside the store (files and directories)."""

    @abstractmethod
    def holds_chunk_files(self, name: str) -> bool:
        """Whether array ``name``'s chunks are objects/files under ``name/c/`` that may be
        replaced whole (a local store: only when the array is a directory)."""

    @abstractmethod
    def make_dir(self) -> bool:
        """Create the store's directory if missing; True if this call created it."""

    @abstractmethod
    def make_parent(self) -> None:
        """Create the directory the store goes in (nothing for an object store)."""

    @abstractmethod
    def remove_empty_dir(self) -> None:
        """Remove the store's directory if it is empty (nothing for an object store)."""

    @abstractmethod
    def clear(self, keep: Callable[[str], bool]) -> None:
        """Remove everything in the store except the entries whose name passes ``keep``."""


@dataclass(frozen=True)
class LocalLocation(Location):
    """A store in a directory of this machine's file system: atomic replacement by a
    temporary file and ``os.replace``, exclusive create with ``O_CREAT | O_EXCL``."""

    store: str
    root: str

    @property
    def url(self) -> str:
        return os.path.abspath(self.root)

    @property
    def options(self) -> dict[str, Any]:
        return {}

    @property
    def name(self) -> str:
        return Path(self.root).name

    @property
    def local_path(self) -> Path:
        return Path(self.root)

    def show(self, key: str = "") -> str:
        return str(Path(self.root, key)) if key else self.store

    def path_of(self, key: str) -> Path:
        return Path(self.root, key)

    @property
    def zarr_store(self) -> str:
        return str(self.root)

    @property
    def dataset_path(self) -> str:
        return self.root

    def for_workers(self) -> LocalLocation:
        return LocalLocation(store=self.url, root=self.url)

    def open_hint(self) -> str:
        return f"xr.open_zarr('{self.store}')"

    def exists(self) -> bool:
        return Path(self.root).exists()

    def check_creatable(self) -> None:
        path = Path(self.root)
        parent = path.absolute().parent
        while not parent.exists():
            parent = parent.parent
        if not parent.is_dir():
            raise ConfigError(f"store: cannot create {path}: {parent} is not a directory")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise ConfigError(f"store: cannot create {path}: {parent} is not writable")

    def check_writable(self, replace: bool = False) -> None:
        path = Path(self.root)
        if replace and not os.access(path.parent, os.W_OK | os.X_OK):
            raise ConfigError(f"store: cannot replace {path}: {path.parent} is not writable")
        if not replace and not os.access(path, os.W_OK | os.X_OK):
            raise ConfigError(f"store: {path} is not writable")

    def read(self, key: str) -> bytes:
        return Path(self.root, key).read_bytes()

    def is_file(self, key: str) -> bool:
        return Path(self.root, key).is_file()

    def is_dir(self, key: str) -> bool:
        return Path(self.root, key).is_dir()

    def mtime(self, key: str) -> float:
        return Path(self.root, key).stat().st_mtime

    def write(self, key: str, data: bytes, tmp: str | None = None) -> None:
        """Written to ``tmp`` (default ``.NAME.PID.tmp`` beside it) and renamed over it."""
        path = Path(self.root, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        aside = path.with_name(tmp or f".{path.name}.{os.getpid()}.tmp")
        try:
            aside.write_bytes(data)
            os.replace(aside, path)
        except OSError:
            aside.unlink(missing_ok=True)
            raise

    def write_many(self, items: Iterable[tuple[str, bytes]]) -> None:
        """One after the other, each item produced only when the previous is written
        (memory of one item)."""
        for key, data in items:
            self.write(key, data)

    def create(self, key: str, data: bytes) -> bool:
        """``O_CREAT | O_EXCL`` then fsync."""
        try:
            fd = os.open(Path(self.root, key), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        return True

    def remove(self, key: str) -> None:
        Path(self.root, key).unlink(missing_ok=True)

    def move_many(self, steps: Sequence[Sequence[tuple[str, str]]]) -> None:
        """``os.replace`` each (atomic, O(1): the same file system)."""
        for step in steps:
            for source, target in step:
                path = Path(self.root, target)
                path.parent.mkdir(parents=True, exist_ok=True)
                os.replace(Path(self.root, source), path)

    def remove_tree(self, key: str) -> None:
        path = Path(self.root, key)
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)

    def remove_if(self, key: str, same: Callable[[bytes], bool]) -> bool:
        """Renamed to a name of our own first (atomic), checked, put back with a hard link
        if it was not the one judged."""
        path = Path(self.root, key)
        aside = path.with_name(f"{path.name}.broken.{secrets.token_hex(8)}")
        try:
            os.rename(path, aside)
        except FileNotFoundError:
            return True
        try:
            ok = same(aside.read_bytes())
        except OSError:
            ok = False
        if not ok:  # we moved a fresh file of another process: put it back (fails if one exists)
            with contextlib.suppress(OSError):
                os.link(aside, path)
        aside.unlink()
        return ok

    def files(self, key: str) -> Iterator[tuple[tuple[str, ...], str]]:
        top = Path(self.root, key)
        for root, _, names in os.walk(top):
            rel = Path(root).relative_to(top).parts
            for f in names:
                yield (*rel, f), str(Path(key, *rel, f))

    def entries(self) -> list[str]:
        return [p.name for p in Path(self.root).iterdir()]

    def holds_chunk_files(self, name: str) -> bool:
        return self.is_dir(name)

    def make_dir(self) -> bool:
        path = Path(self.root)
        try:
            if not path.exists():
                path.mkdir(parents=True)
                return True
        except FileExistsError:
            pass
        return False

    def make_parent(self) -> None:
        Path(self.root).parent.mkdir(parents=True, exist_ok=True)

    def remove_empty_dir(self) -> None:
        with contextlib.suppress(OSError):
            Path(self.root).rmdir()

    def clear(self, keep: Callable[[str], bool]) -> None:
        """(A path that is a file, not a directory, is removed.)"""
        path = Path(self.root)
        if not path.is_dir():
            path.unlink()
            return
        for p in path.iterdir():
            if not keep(p.name):
                shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()


@dataclass(frozen=True)
class FsspecLocation(Location):
    """A store at an fsspec URL. A replacement is one PUT (an object store replaces an
    object atomically: readers see the old or the new bytes), an exclusive create is a
    conditional PUT (``If-None-Match: *``, s3fs ``mode="create"``)."""

    store: str
    protocol: str
    root: str
    storage: dict[str, Any] = field(default_factory=dict)

    def __getstate__(self) -> dict[str, Any]:
        # The file system is made again where the location is unpickled (a worker).
        return {k: v for k, v in self.__dict__.items() if k != "fs"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    @property
    def url(self) -> str:
        return f"{self.protocol}://{self.root}"

    @property
    def options(self) -> dict[str, Any]:
        return self.storage

    @property
    def name(self) -> str:
        return self.root.rstrip("/").rsplit("/", 1)[-1]

    @property
    def local_path(self) -> None:
        return None

    def show(self, key: str = "") -> str:
        return f"{self.url}/{key}" if key else self.url

    def path_of(self, key: str) -> str:
        return f"{self.root}/{key}"

    @cached_property
    def fs(self) -> Any:
        """The fsspec file system (synchronous calls)."""
        import fsspec

        return fsspec.filesystem(self.protocol, **self.options)

    @property
    def zarr_store(self) -> Any:
        from zarr.storage import FsspecStore

        return FsspecStore.from_url(self.url, storage_options=self.storage_options)

    @property
    def dataset_path(self) -> str:
        return self.url

    def for_workers(self) -> FsspecLocation:
        return self

    def open_hint(self) -> str:
        opts = f", storage_options={redact(self.options)!r}" if self.options else ""
        return f"xr.open_zarr('{self.url}'{opts})"

    def exists(self) -> bool:
        """The bucket is checked first: a missing bucket, missing credentials or an
        unreachable endpoint raise ConfigError."""
        self._check_bucket()
        try:
            self.fs.invalidate_cache()
            return bool(self.fs.exists(self.root))
        except io_errors() as exc:
            raise ConfigError(f"store: cannot read {self.url}: {reason(exc)}") from None

    def _check_bucket(self) -> None:
        bucket = self.root.split("/", 1)[0]
        try:
            self.fs.info(bucket)
        except FileNotFoundError:
            raise ConfigError(f"store: {self.url}: the bucket {bucket!r} does not exist "
                              "(create it first)") from None
        except Exception as exc:  # credentials, endpoint, permissions: all one line
            raise ConfigError(f"store: cannot reach {self.url}: {reason(exc)}") from None

    def check_creatable(self) -> None:
        """Write permission is proven by the lock, the first object written."""
        self._check_bucket()

    def check_writable(self, replace: bool = False) -> None:
        return None

    def read(self, key: str) -> bytes:
        return self.fs.cat_file(f"{self.root}/{key}")

    def is_file(self, key: str) -> bool:
        return bool(self.fs.isfile(f"{self.root}/{key}"))

    def is_dir(self, key: str) -> bool:
        self.fs.invalidate_cache(f"{self.root}/{key}")
        return bool(self.fs.isdir(f"{self.root}/{key}"))

    def mtime(self, key: str) -> float:
        return self.fs.modified(f"{self.root}/{key}").timestamp()

    def write(self, key: str, data: bytes, tmp: str | None = None) -> None:
        """One PUT (``tmp`` is not needed)."""
        self.fs.pipe_file(f"{self.root}/{key}", data)

    def write_many(self, items: Iterable[tuple[str, bytes]]) -> None:
        """Every item produced first, then PUT concurrently (each PUT is still atomic; the
        order among them is not kept — callers write what must come after in a later call)."""
        batch = {f"{self.root}/{key}": data for key, data in items}
        if batch:
            self.fs.pipe(batch)

    def create(self, key: str, data: bytes) -> bool:
        """A conditional PUT (``If-None-Match: *``); a server that ignores the condition would
        overwrite — AWS S3, MinIO and moto honour it."""
        try:
            self.fs.pipe_file(f"{self.root}/{key}", data, mode="create")
        except FileExistsError:
            return False
        return True

    def remove(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(f"{self.root}/{key}")

    def move_many(self, steps: Sequence[Sequence[tuple[str, str]]]) -> None:
        """S3: server-side copies (``CopyObject``: no bytes through this process; each target
        appears whole), a step's issued concurrently, then one batch delete of every source.
        Other protocols: copy, then delete, one after the other."""
        sources = []
        for step in steps:
            full = [(f"{self.root}/{source}", f"{self.root}/{target}") for source, target in step]
            sources += [src for src, _ in full]
            if self.protocol in ("s3", "s3a"):
                import asyncio

                from fsspec.asyn import sync

                async def copy_all(full: list[tuple[str, str]] = full) -> None:
                    await asyncio.gather(*(self.fs._call_s3(
                        "copy_object", Bucket=target.partition("/")[0], Key=target.partition("/")[2],
                        CopySource={"Bucket": src.partition("/")[0], "Key": src.partition("/")[2]})
                        for src, target in full))

                sync(self.fs.loop, copy_all)
            else:
                for src, target in full:
                    self.fs.copy(src, target)
        if sources:
            self.fs.rm(sources)
            self.fs.invalidate_cache(self.root)

    def remove_tree(self, key: str) -> None:
        top = f"{self.root}/{key}".rstrip("/")
        self.fs.invalidate_cache(top)
        doomed = self.fs.find(top)
        if doomed:
            self.fs.rm(doomed)
        self.fs.invalidate_cache(top)

    def remove_if(self, key: str, same: Callable[[bytes], bool]) -> bool:
        """S3: the object's ETag is read, then its bytes, and the delete is conditional on
        that ETag (``If-Match``), so an object replaced meanwhile is not deleted. Other
        protocols: read, compare, delete — not atomic."""
        full = f"{self.root}/{key}"
        try:
            self.fs.invalidate_cache(full)
            tag = self.fs.info(full).get("ETag")
            if not same(self.fs.cat_file(full)):
                return False
        except FileNotFoundError:
            return True
        if self.protocol in ("s3", "s3a") and tag:
            bucket, _, obj = full.partition("/")
            try:
                self.fs.call_s3("delete_object", Bucket=bucket, Key=obj, IfMatch=tag)
            except FileNotFoundError:
                return True
            except OSError:  # 412: replaced since we judged it
                return False
            self.fs.invalidate_cache(full)
            return True
        self.remove(key)
        return True

    def files(self, key: str) -> Iterator[tuple[tuple[str, ...], str]]:
        top = f"{self.root}/{key}".rstrip("/")
        self.fs.invalidate_cache(top)
        for full in sorted(self.fs.find(top)):
            rel = tuple(full[len(top) + 1:].split("/"))
            yield rel, f"{key}/{'/'.join(rel)}"

    def entries(self) -> list[str]:
        self.fs.invalidate_cache(self.root)
        try:
            return [p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(self.root, detail=False)]
        except FileNotFoundError:
            return []

    def holds_chunk_files(self, name: str) -> bool:
        return True  # no directories: every chunk is an object of its own

    def make_dir(self) -> bool:
        return False  # an object store has no directories

    def make_parent(self) -> None:
        return None

    def remove_empty_dir(self) -> None:
        return None

    def clear(self, keep: Callable[[str], bool]) -> None:
        self.fs.invalidate_cache(self.root)
        doomed = [f for f in self.fs.find(self.root)
                  if not keep(f[len(self.root) + 1:].split("/", 1)[0])]
        if doomed:
            self.fs.rm(doomed)
        self.fs.invalidate_cache(self.root)


def parse(store: str | Path, options: Mapping[str, Any] | None = None) -> Location:
    """The :class:`Location` of ``store=``: the one place a store's text is read (the CLI,
    the start of a sweep); everything after takes the Location.

    Raises ConfigError for a URL whose protocol fsspec does not know, whose
    implementation is not installed (``s3://`` needs ``pip install s3fs``), or that
    cannot hold a store; ``file://`` URLs are local paths.
    """
    text = str(store)
    if not text:
        raise ConfigError("store: is empty; give a path or a URL such as s3://bucket/sweep.zarr")
    opts = dict(options or {})
    if not is_url(text):
        if opts:
            raise ConfigError("store_options: only for a URL store (s3://…); a local path takes none")
        return LocalLocation(store=text, root=text)
    protocol, rest = text.split("://", 1)
    protocol = protocol.lower()
    if protocol in ("file", "local"):
        return parse(rest, options)
    if protocol in _REFUSED:
        raise ConfigError(f"store: {text}: {_REFUSED[protocol]}")
    import fsspec
    from fsspec.registry import known_implementations

    if protocol not in known_implementations:
        raise ConfigError(f"store: {text}: unknown protocol {protocol!r} (a local path, or an fsspec URL "
                          "such as s3://bucket/sweep.zarr)")
    try:
        fsspec.get_filesystem_class(protocol)
    except ImportError as exc:
        hint = known_implementations[protocol].get("err") or str(exc)
        raise ConfigError(f"store: {text}: {hint.splitlines()[0]}") from None
    root = rest.strip("/")
    if "/" not in root:
        raise ConfigError(f"store: {text}: name a store inside the bucket ({protocol}://{root}/sweep.zarr)")
    return FsspecLocation(store=text, protocol=protocol, root=root, storage=opts)
