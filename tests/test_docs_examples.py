"""Every code block of the quickstart and the how-to pages runs, top to bottom, as a reader would run them.

The pages are parsed with Sybil (a maintained documentation-testing library that reads MyST markdown, the
format of these pages): ``python`` blocks run in one namespace per page, ``bash`` blocks in a shell with this
environment's ``geostp`` on the PATH, ``yaml`` and ``toml`` blocks are parsed, a yaml block written to the file its
first line names (``# mycatalogs/radar.yaml``), each page in a fresh folder of its own.  A block that must not run here
carries ``<!-- skip: next "why" -->`` above it (invisible in the built site); the only ones allowed are the
commands that CI or another test runs verbatim, and this file checks that they are the same.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import warnings
from pathlib import Path
from unittest import SkipTest

import pytest

sybil = pytest.importorskip("sybil", reason="the test extra is not installed (sybil missing): "
                                            "pip install -e '.[test]'")
from sybil import Sybil  # noqa: E402
from sybil.parsers.myst import CodeBlockParser, PythonCodeBlockParser, SkipParser  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
PAGES = [DOCS / "quickstart.md", *sorted((DOCS / "howto").glob("*.md"))]
#: A page whose blocks read the shared real data ($GEOSTP_DATA): it opens the real-radar catalog or names the folder.
REAL_DATA = re.compile(r"open_catalog\(\"radar\"\)|GEOSTP_DATA|RADAR_ROOT")
#: The blocks that are not run here, and the file that runs the same command (its text must be found there).
RUN_ELSEWHERE = {
    'python3 -m venv .venv && .venv/bin/pip install -c constraints/cpu.txt -e ".[all]" && .venv/bin/geostp demo':
        REPO / ".ci" / "run",
    ".venv/bin/python -m pytest": REPO / ".ci" / "run",
    ".venv/bin/sphinx-build -W --keep-going docs docs/_build/html": REPO / "README.md",
}
FENCE = re.compile(r"^```\s*([\w-]*)", re.MULTILINE)


def _bash(example) -> str | None:
    """Run a bash block in the page's folder; a non-zero exit fails with the block and its output."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "MPLBACKEND": "Agg"}
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", example.parsed], cwd=Path.cwd(), env=env,
                            capture_output=True, text=True, timeout=300)
    example.namespace.setdefault("_bash_output", []).append(result.stdout)
    if result.returncode != 0:
        return (f"bash block at line {example.line} exited {result.returncode}:\n{example.parsed}\n"
                f"{result.stdout[-3000:]}{result.stderr[-3000:]}")
    return None


def _yaml(example) -> str | None:
    """Parse a yaml block; one whose first line is a comment naming a file is written there."""
    import yaml

    try:
        yaml.safe_load(example.parsed)
    except yaml.YAMLError as exc:
        return f"yaml block at line {example.line} does not parse: {exc}"
    first = example.parsed.splitlines()[0].strip()
    if first.startswith("#") and first.endswith((".yaml", ".yml")):
        target = Path(first.lstrip("# ").strip())
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(example.parsed)
    return None


def _toml(example) -> str | None:
    """Parse a toml block (a pyproject.toml excerpt)."""
    import tomllib

    try:
        tomllib.loads(example.parsed)
    except tomllib.TOMLDecodeError as exc:
        return f"toml block at line {example.line} does not parse: {exc}"
    return None


DOCS_SYBIL = Sybil(parsers=[PythonCodeBlockParser(), CodeBlockParser("bash", _bash), CodeBlockParser("yaml", _yaml),
                            CodeBlockParser("toml", _toml), SkipParser()], path=str(DOCS))


def _run_page(page: Path) -> tuple[list[str], list[str]]:
    """Evaluate every example of ``page`` in order; returns the languages run and the skipped blocks' text."""
    document = DOCS_SYBIL.parse(page)
    ran, skipped = [], []
    for example in document.examples():
        try:
            example.evaluate()
        except SkipTest:
            skipped.append(example.parsed.strip())
            continue
        if not isinstance(example.parsed, tuple):  # a skip directive itself parses to (action, reason)
            ran.append(example)
    return ran, skipped


def _blocks(page: Path) -> list[str]:
    """The text of the page's code blocks."""
    return re.findall(r"^```[\w-]*\n(.*?)^```", page.read_text(), re.MULTILINE | re.DOTALL)


def _fences(page: Path) -> int:
    """Opening fences of code blocks on the page (every other fence closes one)."""
    return len(FENCE.findall(page.read_text())) // 2


@pytest.fixture
def adapters_restored():
    """A page may register an adapter of its own (how-to: own radar archive): the registry is put back after."""
    from geostp.data.adapters import adapters

    before = dict(adapters._entries)
    yield
    adapters._entries.clear()
    adapters._entries.update(before)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(DOCS).as_posix())
def test_every_code_block_of_the_page_runs(page, tmp_path, monkeypatch, request, adapters_restored):
    if REAL_DATA.search("\n".join(_blocks(page))):
        data = request.getfixturevalue("shared_data")
        monkeypatch.setenv("GEOSTP_DATA", str(data))
        monkeypatch.setenv("RADAR_ROOT", str(data / "radar" / "rmi" / "radqpe"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("GEOSTP_MODEL_STORE", str(tmp_path / ".model-store"))
    import matplotlib

    matplotlib.use("Agg")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ran, skipped = _run_page(page)
    import matplotlib.pyplot as plt

    plt.close("all")
    # every block was either run or skipped on purpose: a block in a language the runner ignores would be neither
    assert len(ran) + len(skipped) == _fences(page), (page.name, len(ran), len(skipped), _fences(page))
    for text in skipped:
        assert text in RUN_ELSEWHERE, f"{page.name}: a skipped block that nothing else runs:\n{text}"
        assert text in RUN_ELSEWHERE[text].read_text(), f"{RUN_ELSEWHERE[text]} no longer runs:\n{text}"
    if page.name == "quickstart.md":
        _check_quickstart(tmp_path, ran, skipped)


def _check_quickstart(folder: Path, ran: list, skipped: list[str]) -> None:
    """The quickstart's files exist after its blocks ran, and its command-line block printed what it says."""
    assert len(skipped) == 3
    for name in ("radar.zarr", "nowcast.nc", "nowcast_60min.png"):
        assert (folder / name).exists(), name
    namespace = ran[0].namespace
    assert dict(namespace["fc"].sizes) == {"lead_time": 12, "y": 128, "x": 128}
    assert namespace["scores"]["csi_1"].sizes["lead_time"] == 6
    (cli,) = namespace["_bash_output"]
    assert "COMMAND" in cli and "synthetic:" in cli and "crs: CH1903 / LV03" in cli and "name: mch_tau" in cli


def test_the_runner_fails_a_broken_block_and_a_block_it_cannot_run(tmp_path, monkeypatch):
    """A block that fails fails the page; a skip without a command run elsewhere is refused."""
    monkeypatch.chdir(tmp_path)
    page = tmp_path / "page.md"
    page.write_text("# A page\n\n```python\nx = 1\n```\n\n```bash\ntest -e missing-file\n```\n")
    with pytest.raises(Exception, match="exited 1"):
        _run_page(page)
    page.write_text('<!-- skip: next "elsewhere" -->\n```bash\nrm -rf /nothing\n```\n\n```text\nplain\n```\n')
    ran, skipped = _run_page(page)
    assert ran == [] and skipped == ["rm -rf /nothing"]
    assert len(ran) + len(skipped) != _fences(page)  # the text block is neither run nor skipped: the page test fails
    assert skipped[0] not in RUN_ELSEWHERE
