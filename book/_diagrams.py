"""The book's mermaid diagrams, drawn once as SVG for readers with no live renderer.

JupyterLab draws a chapter's ```mermaid blocks itself. The static site (`book/_site.py`) must
open from the file system with nothing fetched from the network, so each diagram is drawn here,
by mermaid running in Debian's chromium, and kept as `book/diagrams/<hash>.svg`, named by a
hash of its source: a diagram whose source changed has no SVG until this runs again, and the
site's test names it.

    npm install --prefix /tmp/mermaid mermaid@11      # where npm can reach its registry
    python book/_diagrams.py /tmp/mermaid/node_modules/mermaid/dist/mermaid.min.js
"""
from __future__ import annotations

import hashlib
import pathlib
import re
import sys

import nbformat

from tpuinfer.cli.book import chapters

BOOK = pathlib.Path(__file__).resolve().parent
DIAGRAMS = BOOK / "diagrams"
FENCE = re.compile(r"```mermaid\n(.*?)```", re.S)
CHROMIUM = "/usr/bin/chromium"


def svg_name(source: str) -> str:
    """The file a diagram's SVG is kept in: a hash of its source, so an edit shows."""
    return hashlib.sha256(source.strip().encode()).hexdigest()[:16] + ".svg"


def chapter_diagrams() -> dict[str, str]:
    """{svg file name: mermaid source} for every diagram in the stored chapters."""
    found = {}
    for path in chapters():
        for cell in nbformat.read(path, as_version=4).cells:
            if cell.cell_type == "markdown":
                found.update({svg_name(src): src for src in FENCE.findall(cell.source)})
    return found


def missing() -> list[str]:
    """The diagrams of the chapters that have no SVG yet."""
    return sorted(n for n in chapter_diagrams() if not (DIAGRAMS / n).exists())


def render(mermaid_js: pathlib.Path) -> list[pathlib.Path]:
    """Draw every chapter diagram with `mermaid_js` in headless chromium; write their SVGs and
    remove the SVGs no chapter uses any more."""
    from playwright.sync_api import sync_playwright

    DIAGRAMS.mkdir(exist_ok=True)
    wanted = chapter_diagrams()
    written = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page()
        page.set_content(f"<script>{pathlib.Path(mermaid_js).read_text()}</script>")
        page.evaluate("mermaid.initialize({startOnLoad: false, theme: 'neutral'})")
        for i, (name, source) in enumerate(sorted(wanted.items())):
            svg = page.evaluate("async ([id, src]) => (await mermaid.render(id, src)).svg",
                                [f"diagram{i}", source])
            (DIAGRAMS / name).write_text(svg)
            written.append(DIAGRAMS / name)
        browser.close()
    for stale in set(DIAGRAMS.glob("*.svg")) - set(written):
        stale.unlink()
    return written


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    for path in render(pathlib.Path(sys.argv[1])):
        print(f"wrote {path.relative_to(BOOK.parent)}")
