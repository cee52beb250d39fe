"""Sphinx configuration for geostp's documentation (Markdown pages through MyST, API from docstrings).

Build (warnings are errors):  .venv/bin/sphinx-build -W --keep-going docs docs/_build/html
Before reading the pages the build draws the gallery (docs/gallery.py) and lists the recorded
benchmark results (benchmarks/results/) into docs/_generated/, which git ignores.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
REPO = DOCS.parent
sys.path.insert(0, str(REPO))  # document this checkout even where it is not installed
sys.path.insert(0, str(DOCS))

from geostp import __version__  # noqa: E402

project = "geostp"
author = "the geostp developers"
copyright = "the geostp developers; data: see the gallery's captions"  # noqa: A001
release = version = __version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "_generated", "**/.ipynb_checkpoints", "README.md"]

# The Guides toctree in index.md names the guide pages by glob pattern ("models*"), so a guide that
# has not landed yet (each is written by the engineer who owns the feature) leaves a hole, not a
# failed build. Only the "glob pattern didn't match" warning for those patterns is dropped (see
# _PendingGuides); a page left out of every toctree, a broken link, a missing picture or a docstring
# that does not parse still fails the strict build.
PENDING_GUIDES = ("adapters*", "streaming*", "models*", "training*", "recipes*", "scale-out*")


class _PendingGuides(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        return not ("didn't match any documents" in msg and any(repr(p) in msg for p in PENDING_GUIDES))

myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3  # [text](page.md#a-heading) links resolve, and a wrong one is a warning

napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = False
autodoc_typehints = "signature"
autodoc_member_order = "bysource"
autodoc_default_options = {"members": True, "show-inheritance": False}

html_theme = "furo"
html_title = f"geostp {version}"
html_static_path: list[str] = []


def _benchmark_results(app) -> None:
    """List benchmarks/results/* as downloadable files on the benchmarks page."""
    results = REPO / "benchmarks" / "results"
    files = sorted(p for p in results.rglob("*") if p.is_file() and not p.name.startswith(".")) if results.is_dir() else []
    out = DOCS / "_generated" / "benchmark_results.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    if files:
        lines = ["| file | size |", "| --- | --- |"]
        for p in files:
            rel = p.relative_to(REPO).as_posix()
            lines.append(f"| {{download}}`{rel} </../{rel}>` | {p.stat().st_size / 1024:.1f} kB |")
        text = "\n".join(lines) + "\n"
    else:
        text = ("*No results are recorded yet: the benchmark scripts will write them to "
                "`benchmarks/results/`, and they will be listed here.*\n")
    if not out.exists() or out.read_text() != text:
        out.write_text(text)


def _gallery(app) -> None:
    import gallery

    gallery.make(DOCS / "_generated" / "gallery", quiet=False)


def setup(app):
    logging.getLogger("sphinx.sphinx.directives.other").addFilter(_PendingGuides())
    app.connect("builder-inited", _benchmark_results)
    app.connect("builder-inited", _gallery)
    return {"parallel_read_safe": True}
