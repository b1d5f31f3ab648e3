"""How a sweep runs (not what it computes): batching, retries, shards and who writes.

Defined once, as the cell schema is (``setting(...)``: type, default, unit, meaning); the
sweep's Hydra schema takes these fields from here, and :func:`parse_run` checks them.
They are excluded from the config hash (``pipeline.config.RUNTIME_KEYS``): changing them
still resumes a store.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from sgdsweep.cell.config import setting
from sgdsweep.errors import ConfigError

#: Target duration of an automatically batched task (seconds of cell compute).
TASK_SECONDS = 0.5

StoreWriter = Literal["client", "workers"]


@dataclass(frozen=True)
class RunConf:
    """The sweep's execution settings (top-level keys of the sweep config)."""

    cells_per_task: int | None = setting(None, unit="cells", help="cells batched into one Dask task; null: "
                                         f"automatic (tasks of about {TASK_SECONDS:g} s)")
    retries: int = setting(2, help="Dask retries per task")
    shard_cells: int = setting(1024, unit="cells", help="cells per Zarr shard of a new store (a file per "
                               "shard and variable; 1: per cell)")
    store_writer: StoreWriter = setting("client", help="who writes cells: client (this process) or workers "
                                        "(each task writes its own shard; the store must be on a file system "
                                        "or object store the workers reach)")

    def check(self) -> None:
        writers = typing.get_args(StoreWriter)
        if self.store_writer not in writers:
            raise ConfigError(f"store_writer: must be {' or '.join(writers)}, got {self.store_writer!r}")
        for key, least in (("cells_per_task", 1), ("retries", 0), ("shard_cells", 1)):
            value = getattr(self, key)
            if value is not None and value < least:
                raise ConfigError(f"{key}: must be >= {least}, got {value}")


def hydra_fields() -> list[tuple[str, Any, dataclasses.Field]]:
    """:class:`RunConf`'s fields for the sweep's structured config (a ``Literal`` as ``str``,
    ``X | None`` as ``Optional[X]``: what OmegaConf takes)."""
    hints = typing.get_type_hints(RunConf)
    out = []
    for f in dataclasses.fields(RunConf):
        hint = hints[f.name]
        if typing.get_origin(hint) is Literal:
            hint = str
        elif type(None) in typing.get_args(hint):
            hint = typing.Optional[next(a for a in typing.get_args(hint) if a is not type(None))]  # noqa: UP045
        out.append((f.name, hint, dataclasses.field(default=f.default, metadata=f.metadata)))
    return out


def parse_run(plain: Mapping[str, Any]) -> RunConf:
    """The checked run settings of a resolved sweep config (ConfigError ``<key>: …``)."""
    conf = RunConf(**{f.name: plain.get(f.name, f.default) for f in dataclasses.fields(RunConf)})
    conf.check()
    return conf
