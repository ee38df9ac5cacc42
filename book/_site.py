"""The book as a static site: read it on the web, or from the file system, with no kernel.

Every chapter page is its stored notebook (prose, code, outputs) rendered by nbconvert, with
its plots drawn by the site's own copy of plotly.js, its diagrams as the SVGs `_diagrams.py`
drew, a navigation bar (contents, previous, next, the explorable figures, the paper) and a
table of its sections. `explore.html` holds the cost-model figures whose sliders and menus
were computed from the library when the site was built (`_explore.py`); `plan.html` runs the
planner itself in the browser, the library's cost path on Pyodide (`_planner.py`). Nothing is
fetched from the network: the pages work from any static host, and all but the live planner
from `file://` too (served: `tpuinfer book --serve OUT`).

    python book/_build.py --html OUT        (or: tpuinfer book --html OUT)
"""
from __future__ import annotations

import copy
import html
import json
import pathlib
import re
import shutil
import time

import nbformat
import plotly

import _planner
from _diagrams import DIAGRAMS, FENCE, svg_name
from tpuinfer.cli.book import chapters

BOOK = pathlib.Path(__file__).resolve().parent
PAPER_URL = "https://arxiv.org/abs/2211.05102"
PLOTLY_JSON = "application/vnd.plotly.v1+json"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
# nbconvert's templates load require.js, MathJax and mermaid from CDNs; the chapters use
# none of them here (no math; diagrams are stored SVG; plots are drawn below).
REMOTE_SCRIPT = re.compile(r"<script\b[^>]*>.*?</script>", re.S)
H2 = re.compile(r'<h2 id="([^"]+)">(.*?)<a class="anchor-link"', re.S)

STYLE = """
body { margin: 0; }
.site-nav { position: sticky; top: 0; z-index: 10; display: flex; gap: 1.2em;
  align-items: center; padding: 0.6em 1.5em; background: #1f3b57; font: 15px sans-serif; }
.site-nav a { color: #fff; text-decoration: none; }
.site-nav a:hover { text-decoration: underline; }
.site-nav .title { font-weight: bold; margin-right: auto; }
.site-toc { margin: 1em 1.5em 0; padding: 0.6em 1em; background: #f3f6f9;
  border-left: 3px solid #1f3b57; font: 14px sans-serif; }
.site-toc ul { margin: 0.3em 0 0; padding-left: 1.2em; }
.site-diagram svg { max-width: 100%; height: auto; }
.site-plot { margin: 0.5em 0; }
.site-index { max-width: 60em; margin: 2em auto; font: 16px/1.5 sans-serif; padding: 0 1.5em; }
.site-index table { border-collapse: collapse; }
.site-index td { padding: 0.3em 0.8em; border-bottom: 1px solid #dde; vertical-align: top; }
"""


class SiteError(RuntimeError):
    """The site cannot be built as the chapters stand (a diagram never drawn, say)."""


def chapter_title(nb) -> str:
    """The chapter's first heading, as the reader sees it ("03 · 1D weight-stationary")."""
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return "untitled"


# ---- a chapter's notebook, made static ------------------------------------------------------
def _diagram_html(match: re.Match, chapter: str) -> str:
    path = DIAGRAMS / svg_name(match.group(1))
    if not path.exists():
        raise SiteError(f"{chapter}: a mermaid diagram has no stored SVG ({path.name}); run "
                        f"`python book/_diagrams.py MERMAID_JS` (its docstring says how)")
    return f'\n<div class="site-diagram">{path.read_text()}</div>\n'


def static_notebook(nb, chapter: str, figures: list) -> nbformat.NotebookNode:
    """The chapter with its diagrams as SVG and each plot as a placeholder that the page's
    script draws from `figures` (which this appends to); a live widget's output keeps its
    text, which says that moving it needs a kernel. Worked solutions (cells tagged
    `solution`) are left out, as in the student's edition."""
    nb = copy.deepcopy(nb)
    # the worked solutions are the instructor's: the site is for readers working the exercises
    nb.cells = [c for c in nb.cells if "solution" not in c.get("metadata", {}).get("tags", [])]
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source = FENCE.sub(lambda m: _diagram_html(m, chapter), cell.source)
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if PLOTLY_JSON in data:
                figures.append(data[PLOTLY_JSON])
                out["data"] = {"text/html": f'<div class="site-plot" data-figure='
                                            f'"{len(figures) - 1}"></div>'}
            elif WIDGET_VIEW in data:
                out["data"] = {k: v for k, v in data.items() if k != WIDGET_VIEW}
    return nb


def plot_script(figures: list) -> str:
    """One script that draws every placeholder of a page with the site's plotly.js."""
    payload = json.dumps(figures).replace("</", "<\\/")
    return ("<script>\nconst SITE_FIGURES = " + payload + ";\n"
            "document.querySelectorAll('.site-plot').forEach(el => {\n"
            "  const f = SITE_FIGURES[el.dataset.figure];\n"
            "  Plotly.newPlot(el, f.data, f.layout || {}, {responsive: true});\n"
            "});\n</script>\n")


def nav_bar(prev: str | None, next_: str | None) -> str:
    links = ['<a class="title" href="index.html">tpuinfer: the book</a>',
             '<a href="index.html">contents</a>']
    if prev:
        links.append(f'<a href="{prev}">&larr; previous</a>')
    if next_:
        links.append(f'<a href="{next_}">next &rarr;</a>')
    links += ['<a href="explore.html">explore the cost model</a>',
              '<a href="plan.html">plan your own</a>',
              f'<a href="{PAPER_URL}">the paper (arXiv 2211.05102)</a>']
    return '<nav class="site-nav">' + "".join(links) + "</nav>"


def toc(body: str) -> str:
    items = [f'<li><a href="#{i}">{html.escape(re.sub("<[^>]+>", "", t).strip())}</a></li>'
             for i, t in H2.findall(body)]
    if not items:
        return ""
    return '<nav class="site-toc"><b>In this chapter</b><ul>' + "".join(items) + "</ul></nav>"


def page(body: str, nav: str, figures: list, with_toc: bool = True) -> str:
    """A finished page: nbconvert's HTML without its remote scripts, with the site's style,
    plotly.js, the navigation bar, the table of sections and the plots' script."""
    body = REMOTE_SCRIPT.sub(lambda m: "" if "://" in m.group(0) or "mermaid" in m.group(0)
                             else m.group(0), body)
    head = (f'<style>{STYLE}</style>\n<script src="assets/plotly.min.js"></script>\n'
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n')
    body = body.replace("</head>", head + "</head>", 1)
    body = re.sub(r"(<body[^>]*>)", lambda m: m.group(1) + nav + (toc(body) if with_toc
                                                                  else ""), body, count=1)
    return body.replace("</body>", plot_script(figures) + "</body>", 1)


# ---- the whole site ------------------------------------------------------------------------
def index_page(entries: list[tuple[str, str]]) -> str:
    rows = "".join(f'<tr><td><a href="{href}">{html.escape(title)}</a></td></tr>'
                   for href, title in entries)
    return (f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>tpuinfer: the book'
            f'</title><style>{STYLE}</style></head><body>{nav_bar(None, entries[0][0])}'
            f'<div class="site-index"><h1>Efficiently Scaling Transformer Inference, '
            f'worked through</h1><p>A course on how a large Transformer is partitioned for '
            f'inference, following Pope et al., <a href="{PAPER_URL}">"Efficiently Scaling '
            f'Transformer Inference"</a> (arXiv 2211.05102). Each chapter is a notebook: read '
            f'it here with its stored outputs, or run it in JupyterLab (README) to move its '
            f'explorers and run its steps on 256 emulated devices. The cost-model figures on '
            f'<a href="explore.html">explore the cost model</a> move here, without a kernel, '
            f'and <a href="plan.html">plan your own</a> runs the planner itself in your browser '
            f'(served over http: <code>tpuinfer book --serve</code>).'
            f'</p><table>{rows}<tr><td><a href="explore.html">Explore the cost model: seven '
            f'figures with sliders</a></td></tr><tr><td><a href="plan.html">Plan your own: '
            f'the planner, live</a></td></tr></table></div></body></html>')


def build(out: pathlib.Path, explore: bool = True) -> list[pathlib.Path]:
    """Write the site into `out` (made if needed); return the pages written."""
    from nbconvert import HTMLExporter

    paths = chapters()
    if not paths:
        raise SiteError(f"no stored chapters in {BOOK}")
    out.mkdir(parents=True, exist_ok=True)
    (out / "assets").mkdir(exist_ok=True)
    shutil.copy(pathlib.Path(plotly.__file__).parent / "package_data" / "plotly.min.js",
                out / "assets" / "plotly.min.js")
    exporter = HTMLExporter(template_name="lab")
    names = [p.stem + ".html" for p in paths]
    written, entries = [], []
    for i, path in enumerate(paths):
        nb = nbformat.read(path, as_version=4)
        title = chapter_title(nb)
        figures: list = []
        body, _ = exporter.from_notebook_node(static_notebook(nb, path.name, figures),
                                              resources={"metadata": {"name": title}})
        nav = nav_bar(names[i - 1] if i else None, names[i + 1] if i + 1 < len(names) else None)
        (out / names[i]).write_text(page(body, nav, figures), encoding="utf-8")
        written.append(out / names[i])
        entries.append((names[i], title))
    (out / "index.html").write_text(index_page(entries), encoding="utf-8")
    written.append(out / "index.html")
    if explore:
        import _explore
        (out / "explore.html").write_text(_explore.explore_page(nav_bar(names[-1], None),
                                                                STYLE), encoding="utf-8")
        written.append(out / "explore.html")
    unavailable = _planner.install(out)  # Pyodide and the cost path, or why not
    (out / "plan.html").write_text(_planner.planner_page(nav_bar(names[-1], None), STYLE,
                                                         unavailable), encoding="utf-8")
    written.append(out / "plan.html")
    return written


def main(out: pathlib.Path) -> int:
    t0 = time.perf_counter()
    try:
        written = build(out)
    except SiteError as err:
        print(f"error: {err}")
        return 2
    print(f"site: {len(written)} pages in {out} ({time.perf_counter() - t0:.0f} s); open "
          f"{out / 'index.html'}")
    return 0
