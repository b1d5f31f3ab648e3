"""The CLI's help: usage, and the config groups along the search path."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

USAGE = """\
usage: python -m pipeline sweep [-cd DIR] [-cn NAME] [OVERRIDE ...] [--cfg job] [--help-keys]
       python -m pipeline status STORE [--verify] [--store-options JSON]
       python -m pipeline report STORE [--out DIR] [--store-options JSON]
       python -m pipeline submit [-cd DIR] [-cn NAME] [OVERRIDE ...] [--dry-run]

sweep   run the grid of cells described by conf/config.yaml plus Hydra overrides
        (e.g. landscape=two_basin grid.lr='[0.005,0.01]' grid.width_left='[0.1,0.2]'
        cluster=address cluster.address=tcp://host:8786); rerunning the same
        command resumes an interrupted store. --cfg job prints the resolved config;
        --help-keys lists every config key (type, default, unit, meaning).
status  cells done/total, failures with messages, and the config of a store;
        --verify reads every chunk and lists the cells whose data is corrupt
report  figures and tables from a store
STORE   a path, or a URL such as s3://bucket/sweep.zarr (credentials and endpoint: the
        AWS environment, or --store-options / store_options with fsspec storage options)
submit  run the sweep as a batch job on a cluster (SLURM)

your own configs (as in any Hydra application):
  -cd, --config-dir DIR    add DIR to the config search path (after the package's
                           own tree), so DIR/landscape/NAME.yaml is landscape=NAME and
                           DIR/experiment/NAME.yaml is +experiment=NAME
  -cn, --config-name NAME  the primary config NAME.yaml instead of config.yaml (e.g. one
                           in DIR that starts with `defaults: [config, _self_]`)
  hydra.searchpath=[file:///abs/dir,pkg://module]   the same as an override

exit status: 0 success, 1 some cells failed, 2 bad input, 3 the store could not be
             written (no space, read-only, I/O error), 130 interrupted
"""


def search_dirs(overrides: Sequence[str], config_dirs: Sequence[str] = ()) -> list[Path]:
    """The directories of the config search path: the package's tree, the config dirs,
    then the ``hydra.searchpath`` entries."""
    from importlib.resources import files

    from hydra.core.override_parser.overrides_parser import OverridesParser

    from pipeline.config import CONF_DIR

    out = [CONF_DIR, *(Path(d) for d in config_dirs)]
    for o in overrides:
        if o.startswith("hydra.searchpath="):
            for entry in OverridesParser.create().parse_override(o).value():
                if entry.startswith("pkg://"):
                    try:
                        out.append(Path(str(files(entry.removeprefix("pkg://").replace("/", ".")))))
                    except (ImportError, TypeError):
                        pass
                else:
                    out.append(Path(entry.removeprefix("file://")))
    return out


def config_groups(dirs: Sequence[Path]) -> dict[str, list[str]]:
    """Config group -> its options (YAML files), over the search-path directories."""
    groups: dict[str, set[str]] = {}
    for d in dirs:
        for f in sorted(Path(d).glob("*/*.yaml")):
            groups.setdefault(f.parent.name, set()).add(f.stem)
    return {g: sorted(o) for g, o in sorted(groups.items())}


def help_text(overrides: Sequence[str], config_dirs: Sequence[str] = ()) -> str:
    """USAGE, then the config groups and their options along the search path."""
    import yaml

    from pipeline.config import CONF_DIR

    try:
        dirs = search_dirs(overrides, config_dirs)
        defaults = yaml.safe_load((CONF_DIR / "config.yaml").read_text()).get("defaults", [])
    except Exception:  # help must print even where the config tree is broken
        dirs, defaults = [CONF_DIR], []
    chosen = {k: v for d in defaults if isinstance(d, dict) for k, v in d.items()}
    lines = ["", "config groups (GROUP=OPTION; experiments: +experiment=NAME; * = default):"]
    for group, options in config_groups(dirs).items():
        opts = ", ".join(o + ("*" if chosen.get(group) == o else "") for o in options)
        lines.append(f"  {group:<11} {opts}")
    lines.append("config search path: " + ", ".join(str(d) for d in dirs))
    return USAGE + "\n".join(lines) + "\n"
