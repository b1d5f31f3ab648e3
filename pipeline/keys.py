"""The reference of every config key, generated from the schemas (type, default, unit,
meaning): ``python -m pipeline sweep --help-keys`` and the docs' config-key page.

Nothing here is written twice: the cell's keys come from
:class:`sgdsweep.cell.config.CellSchema` and the sections method modules registered, the
sweep's own from :func:`pipeline.config.sweep_schema` and
:class:`pipeline.run.settings.RunConf`, the cluster kinds' from
:data:`pipeline.cluster.settings.KINDS`, the initial laws' fields from
:data:`INIT_FIELDS` (checked against :data:`sgdsweep.landscapes.initial.INIT_KINDS`).
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Any

from sgdsweep.landscapes.initial import INIT_KINDS


@dataclass(frozen=True)
class Key:
    """One config key: its dotted path, type, default, unit and meaning."""

    path: str
    type: str
    default: str
    unit: str
    help: str


#: The fields of each ``init.kind`` (``init`` is replaced as a block: ``init={kind: …}``).
INIT_FIELDS: dict[str, tuple[tuple[str, str], ...]] = {
    "normal": (("mean", "centre (a number, or one per axis)"),
               ("std", "standard deviation > 0 (a number, or one per axis)")),
    "uniform": (("lower", "lower edge (a number, or one per axis)"),
                ("upper", "upper edge > lower (a number, or one per axis)")),
    "point": (("mean", "the point (a number, or one per axis)"),),
}
assert set(INIT_FIELDS) == set(INIT_KINDS), "INIT_FIELDS must list every init kind"


def _type(hint: Any) -> str:
    if hint is Any:
        return "number | list"  # the density grid: a number, or one per axis
    if isinstance(hint, type) and not typing.get_args(hint):
        return hint.__name__
    text = str(hint).replace("typing.", "").replace("NoneType", "None")
    return {"dict[str, Any]": "mapping"}.get(text, text)


def _default(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return "(required)"
    if dataclasses.is_dataclass(value):
        return ""
    if value is None:
        return "null"
    return str(value).replace("'", "") if not isinstance(value, str) else value


def _fields(schema: type, prefix: str) -> list[Key]:
    """Keys of a dataclass schema, sections expanded (``prefix.key``)."""
    hints = typing.get_type_hints(schema)
    out: list[Key] = []
    for f in dataclasses.fields(schema):
        if f.name.startswith("_"):
            continue
        path, hint = f"{prefix}{f.name}", hints.get(f.name, Any)
        if dataclasses.is_dataclass(hint):
            out += _fields(hint, f"{path}.")
            continue
        meta = f.metadata or {}
        out.append(Key(path, _type(hint), _default(f), meta.get("unit", ""), meta.get("help", "")))
    return out


def config_keys() -> dict[str, list[Key]]:
    """Every config key by group: the cell's, the methods' sections, the sweep's, each cluster kind's."""
    from pipeline.cluster.settings import KINDS
    from pipeline.config import sweep_schema
    from pipeline.run.settings import RunConf
    from sgdsweep.cell import config as cellconfig

    cell = _fields(cellconfig.CellSchema, "")
    init = next(k for k in cell if k.path == "init")
    at = cell.index(init)
    cell[at:at + 1] = [dataclasses.replace(init, default="{kind: normal, mean: 0.5, std: 0.175}")] + [
        Key(f"init.{name}", "number | list", "", "θ", f"init.kind = {kind}: {meaning}")
        for kind, fields in INIT_FIELDS.items() for name, meaning in fields]
    sections = [k for name, schema in cellconfig.sections().items() for k in _fields(schema, f"{name}.")]
    sweep = [k for k in _fields(sweep_schema(), "")
             if k.path in ("store", "store_options", "overwrite", "grid", "plugins")]
    sweep.insert(0, Key("landscape", "group or mapping", "seed_two_point", "",
                        "landscape=NAME (conf/landscape/NAME.yaml), or a mapping of datapoints / "
                        "reference + shifts (docs: Landscapes); its keys are landscape.KEY"))
    run = _fields(RunConf, "")
    out = {"cell (one grid point; sweepable unless it shapes the store)": cell,
           "method sections": sections, "sweep": sweep, "execution": run}
    for kind, schema in KINDS.items():
        out[f"cluster={kind}"] = _fields(schema, "cluster.")
    return out


#: What the defaults are, and how keys are set (the head of both renderings).
INTRO = ("Config keys, generated from the schemas: type, schema default, [unit], meaning. Set them on "
         "the command line as KEY=VALUE (python -m pipeline sweep mc.chains=200), a section as "
         "KEY='{…}' (merged into it); init is replaced as a whole: init='{kind: uniform, lower: -2, "
         "upper: 2}'. The default sweep changes some defaults: conf/config.yaml (methods: adds sgd_op; "
         "operator.relaxation: false) "
         "and conf/domain/LANDSCAPE.yaml (the density grid and initial law that fit the landscape); "
         "python -m pipeline sweep --cfg job prints the resolved values.")


def keys_text(width: int = 100) -> str:
    """The reference as plain text (``--help-keys``)."""
    import textwrap

    lines = [*textwrap.wrap(INTRO, width=width), ""]
    for group, keys in config_keys().items():
        lines.append(f"[{group}]")
        for k in keys:
            head = f"  {k.path}: {k.type}" + (f" = {k.default}" if k.default else "") + (
                f"  [{k.unit}]" if k.unit else "")
            lines.append(head)
            if k.help:
                lines += textwrap.wrap(k.help, width=width, initial_indent=" " * 6, subsequent_indent=" " * 6)
        lines.append("")
    return "\n".join(lines)


def keys_markdown() -> str:
    """The reference as Markdown tables, one per group (the docs page)."""
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    intro = INTRO
    for code in ("python -m pipeline sweep mc.chains=200", "python -m pipeline sweep --cfg job",
                 "KEY='{…}'", "init='{kind: uniform, lower: -2, upper: 2}'"):
        intro = intro.replace(code, f"`{code}`")
    out = [intro, ""]
    for group, keys in config_keys().items():
        out += [f"## {group}", "", "| key | type | default | unit | meaning |", "|---|---|---|---|---|"]
        out += [f"| `{k.path}` | {cell(k.type)} | {cell(k.default) and f'`{cell(k.default)}`'} | "
                f"{cell(k.unit)} | {cell(k.help)} |" for k in keys]
        out.append("")
    return "\n".join(out)
