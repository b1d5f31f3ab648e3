"""The README stays a short front page that points to the documentation site, and the
site's pages exist where the README and the toctree say."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text()


def test_readme_is_short():
    n = len(README.splitlines())
    assert n <= 250, f"README.md has {n} lines; move sections to docs/"


def test_readme_says_how_to_build_the_docs():
    assert 'pip install -e ".[docs]"' in README
    assert "sphinx-build -W --keep-going -b html docs docs/_build/html" in README


def test_readme_relative_links_resolve():
    links = re.findall(r"\]\(([^)#\s]+)\)", README)
    local = [link for link in links if "://" not in link]
    assert "docs/" in local
    missing = [link for link in local if not (REPO / link).exists()]
    assert not missing, f"README links to missing files: {missing}"


def test_ci_builds_the_docs_as_the_readme_says():
    ci = (REPO / ".ci" / "run").read_text()
    assert 'pip install -e ".[dev,docs]"' in ci or 'pip install -e ".[docs]"' in ci
    assert "sphinx-build -W --keep-going -b html docs docs/_build/html" in ci


def test_models_page_is_a_notebook_that_checks_its_own_claims():
    """docs/models.ipynb is committed without outputs; the docs build executes it, and its
    last code cell asserts each claim of its notes against the store and the exact references."""
    import nbformat

    nb = nbformat.read(REPO / "docs" / "models.ipynb", as_version=4)
    nbformat.validate(nb)
    assert nb.cells[0].source.startswith("# Models with many parameters")
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.outputs == [] and c.execution_count is None for c in code)
    checks = next(c.source for c in code if "every claim above holds" in c.source)
    assert checks.count("assert ") >= 10


def test_readme_lists_every_bundled_landscape():
    names = sorted(p.stem for p in (REPO / "conf" / "landscape").glob("*.yaml"))
    missing = [n for n in names if f"`{n}`" not in README]
    assert not missing, f"README's landscape list omits {missing}"
