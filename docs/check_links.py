"""Check a built HTML site for broken internal links, missing anchors and missing images.

    .venv/bin/python docs/check_links.py docs/_build/html

Every ``<a href>``, ``<img src>``, ``<link href>``, ``<script src>`` and
``<source src>`` that points inside the site must name an existing file, and a
``#fragment`` on a page link must name an ``id`` on that page. External links
(``http:``, ``https:``, ``mailto:``) are not followed: the check is offline.
Exits 1 and lists the problems if there are any.
"""

from __future__ import annotations

import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

__all__ = ["check_site", "main"]

_REF_ATTRS = {"a": "href", "img": "src", "link": "href", "script": "src", "source": "src", "iframe": "src"}


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.ids: set[str] = set()
        self.refs: list[tuple[str, str]] = []  # (tag, url)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        for key in ("id", "name"):
            if values.get(key):
                self.ids.add(str(values[key]))
        attr = _REF_ATTRS.get(tag)
        if attr and values.get(attr):
            self.refs.append((tag, str(values[attr])))
        if tag == "img" and values.get("srcset"):
            for part in str(values["srcset"]).split(","):
                if part.strip():
                    self.refs.append((tag, part.split()[0]))


def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8", errors="replace"))
    return page


def check_site(root: str | Path) -> list[str]:
    """Problems found in the HTML files under ``root`` (empty when every internal reference resolves)."""
    root = Path(root).resolve()
    pages = {p.resolve(): _parse(p) for p in root.rglob("*.html")}
    if not pages:
        return [f"{root}: no HTML files"]
    problems: list[str] = []
    for path, page in sorted(pages.items()):
        for tag, url in page.refs:
            parts = urlsplit(url)
            if parts.scheme or url.startswith("//"):
                continue  # external: not checked offline
            target = path if not parts.path else (path.parent / unquote(parts.path)).resolve()
            if parts.path and target.is_dir():
                target = target / "index.html"
            where = f"{path.relative_to(root)}: <{tag}> {url!r}"
            if not target.is_relative_to(root):
                problems.append(f"{where} points outside the site")
                continue
            if not target.exists():
                problems.append(f"{where} names a missing file")
                continue
            if tag == "img" and target.stat().st_size == 0:
                problems.append(f"{where} is an empty image")
            if parts.fragment and target.suffix == ".html":
                ids = pages[target].ids if target in pages else _parse(target).ids
                if unquote(parts.fragment) not in ids:
                    problems.append(f"{where}: no id {parts.fragment!r} in {target.relative_to(root)}")
    return problems


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    root = Path(args[0]) if args else Path(__file__).resolve().parent / "_build" / "html"
    problems = check_site(root)
    for line in problems:
        print(line)
    n = sum(1 for _ in root.rglob("*.html"))
    print(f"{n} pages checked, {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
