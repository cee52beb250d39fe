"""The documentation builds in strict mode (warnings are errors) and has no broken internal link or missing picture.

The site is built once per test session with Sphinx (``-W --keep-going``), the
gallery drawn by ``docs/gallery.py`` included; ``docs/check_links.py`` then
parses every HTML page (pure Python, offline) and resolves each internal link,
anchor and image.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"

for _module in ("sphinx", "myst_parser", "furo"):
    pytest.importorskip(_module, reason=f"the docs extra is not installed ({_module} missing): "
                                        "pip install -e '.[docs]'")


def _checker():
    spec = importlib.util.spec_from_file_location("check_links", DOCS / "check_links.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The built site; the gallery uses the shared real data where it is, else the synthetic radar."""
    from conftest import shared_data_dir

    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "MPLBACKEND": "Agg"}
    data = shared_data_dir()
    if data is not None:
        env["GEOSTP_DATA"] = str(data)
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", str(DOCS), str(out)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    log = result.stdout + result.stderr
    assert result.returncode == 0, f"sphinx-build -W failed:\n{log[-6000:]}"
    assert "WARNING" not in log, log[-6000:]
    return out


def test_every_internal_link_anchor_and_image_resolves(site):
    problems = _checker().check_site(site)
    assert problems == []
    pages = {p.relative_to(site).as_posix() for p in site.rglob("*.html")}
    assert {"index.html", "quickstart.html", "concepts.html", "gallery.html", "benchmarks.html", "api.html",
            "howto/plotting.html", "howto/ingest.html", "howto/own-radar-archive.html"} <= pages
    # every markdown page in docs/ is part of the site (others' guides included, wherever they land)
    sources = {p.relative_to(DOCS).with_suffix(".html").as_posix() for p in DOCS.rglob("*.md")
               if "_build" not in p.parts and "_generated" not in p.parts and p.name != "README.md"}
    assert sources <= pages


def test_gallery_pictures_are_drawn_from_the_real_data(site, shared_data):
    html = (site / "gallery.html").read_text()
    images = [line for line in html.split("<img") if "_images/" in line]
    assert len(images) >= 5, "the gallery shows fewer than five pictures"
    for name in ("observed.png", "motion.png", "nowcast_panel.png", "observed_vs_nowcast.png", "nowcast.gif",
                 "csi.png"):
        assert f"_images/{name}" in html
        assert (site / "_images" / name).stat().st_size > 10_000
    assert "Drawn from MeteoSwiss radar composite" in html
    # drawn by the build, never kept in git
    tracked = subprocess.run(["git", "ls-files", "docs"], cwd=REPO, capture_output=True, text=True).stdout
    assert not [f for f in tracked.splitlines() if f.endswith((".png", ".gif"))]


def test_api_reference_comes_from_docstrings(site):
    api = (site / "api.html").read_text()
    for name in ("geostp.plot.plot_map", "geostp.plot.plot_scores", "geostp.cube.forecast_to_dataarray",
                 "geostp.metrics.verify", "geostp.data.catalog.open_catalog"):
        assert f'id="{name}"' in api, f"{name} is missing from the API reference"
    assert "Raises" in api and "lead_time" in api


def test_the_link_checker_finds_broken_links_and_missing_images(tmp_path):
    (tmp_path / "a.html").write_text('<a id="top" href="b.html#top">ok</a><a href="b.html#nowhere">x</a>'
                                     '<img src="missing.png"><a href="https://example.org/">ext</a>')
    (tmp_path / "b.html").write_text('<h1 id="top">B</h1><a href="gone.html">y</a>')
    problems = _checker().check_site(tmp_path)
    assert len(problems) == 3
    assert any("no id 'nowhere'" in p for p in problems)
    assert any("missing.png" in p for p in problems)
    assert any("gone.html" in p for p in problems)
