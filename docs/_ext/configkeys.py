"""The config-key reference page: ``<!-- config-keys -->`` in ``config-keys.md`` becomes the
tables :func:`pipeline.keys.keys_markdown` generates from the schemas (the same source as
``python -m pipeline sweep --help-keys``), so the page cannot drift from the code."""

from __future__ import annotations

from sphinx.application import Sphinx

PLACEHOLDER = "<!-- config-keys -->"


def _fill(app: Sphinx, docname: str, source: list[str]) -> None:
    if docname == "config-keys" and PLACEHOLDER in source[0]:
        from pipeline.keys import keys_markdown

        source[0] = source[0].replace(PLACEHOLDER, keys_markdown())


def setup(app: Sphinx) -> dict[str, object]:
    app.connect("source-read", _fill)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
