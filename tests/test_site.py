"""The book's static site, as a reader on the web meets it: built by the command line from the
stored chapters, opened from the file system in Debian's chromium (Playwright, as
test_browser.py), every page loaded with no console error and no request leaving the machine,
every plot drawn, every diagram there, every internal link resolving, and every slider of the
explorable figures changing its plot when moved. The live planner, served as
`tpuinfer book --serve` serves it, plans Table 2's four columns in the page, each equal to
what the command line prints. Screenshots go to artifacts/site/.
"""
import json
import os
import pathlib
import re
import sys
import threading

import nbformat
import pytest

from tpuinfer.cli import main
from tpuinfer.cli.book import chapters as stored_chapters
from tpuinfer.cli.book import site_server
from tpuinfer.paper import TABLE2

ROOT = pathlib.Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
ARTIFACTS = ROOT / "artifacts" / "site"
sys.path.insert(0, str(BOOK))
import _diagrams  # noqa: E402  (book/ tooling, on the path like the chapters' booktools)
import _explore  # noqa: E402
import _planner  # noqa: E402
from test_browser import CHROMIUM, require  # noqa: E402


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    assert main(["book", "--html", str(out), "--json"]) == 0
    return out


def test_every_chapter_diagram_has_its_stored_svg():
    assert _diagrams.chapter_diagrams(), "the chapters draw mermaid diagrams"
    assert _diagrams.missing() == [], "run book/_diagrams.py (its docstring says how)"


def test_the_site_leaves_the_worked_solutions_out(site):
    """The site is for readers working the exercises: the instructor's worked derivations
    (cells tagged `solution` in the stored chapters) are not on its pages."""
    stored = [c for p in stored_chapters() for c in nbformat.read(p, as_version=4).cells
              if "solution" in c.get("metadata", {}).get("tags", [])]
    assert stored, "the chapters work their derivations in cells tagged solution"
    pages = "".join(p.read_text() for p in site.glob("[0-9][0-9]_*.html"))
    assert "Solution 04.1" not in pages and "Exercise 04.1" in pages


def test_the_site_has_every_chapter_with_every_plot_and_nothing_remote(site):
    chapters = stored_chapters()
    assert {p.name for p in site.glob("*.html")} == (
        {c.stem + ".html" for c in chapters} | {"index.html", "explore.html", "plan.html"})
    assert (site / "assets" / "plotly.min.js").stat().st_size > 1e6
    for chapter in chapters:
        nb = nbformat.read(chapter, as_version=4)
        plots = sum("application/vnd.plotly.v1+json" in o.get("data", {})
                    for c in nb.cells for o in c.get("outputs", []))
        text = (site / (chapter.stem + ".html")).read_text()
        assert text.count('class="site-plot"') == plots, chapter.name
        assert not re.search(r"<script[^>]*src=\"https?://", text), chapter.name
        assert "```mermaid" not in text
    index = (site / "index.html").read_text()
    assert all(f'href="{c.stem}.html"' in index for c in chapters)


def test_the_explorable_figures_each_have_a_slider_of_precomputed_steps(site):
    page = (site / "explore.html").read_text()
    figures = [json.loads(f) for f in  # JSON reads the page's escaped "<\/" as "</"
               re.findall(r"const f = (\{.*?\}); Plotly\.newPlot", page)]
    assert len(figures) == len(_explore.FIGURES) >= 6
    for (title, _, _), fig in zip(_explore.FIGURES, figures):
        (slider,) = fig["layout"]["sliders"]
        assert len(slider["steps"]) >= 2, title
        shown = [step["args"][0]["visible"] for step in slider["steps"]]
        assert all(len(v) == len(fig["data"]) and any(v) for v in shown), title
        assert len({tuple(v) for v in shown}) == len(shown), f"{title}: two steps show the same"
        assert [t.get("visible", True) for t in fig["data"]] == shown[0]


# ---- in a real browser -----------------------------------------------------------------------
def _browser():
    """Playwright's sync API, where chromium and Playwright are installed (test_browser's
    `require`: CI fails without them, elsewhere the test skips)."""
    require(os.path.exists(CHROMIUM), f"{CHROMIUM} is missing")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        require(False, "playwright is not installed")
    return sync_playwright


def _watched_page(browser, local):
    """A new page of `browser`, and the lists its console errors, page errors and requests
    for URLs that `local(url)` rejects are gathered into as it runs."""
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    errors, remote = [], []
    page.on("console", lambda m: m.type == "error" and errors.append(m.text))
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda r: not local(r.url) and remote.append(r.url))
    return page, errors, remote


@pytest.mark.browser
def test_every_page_loads_offline_draws_and_links(site):
    sync_playwright = _browser()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    pages = sorted(site.glob("*.html"))
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page, errors, remote = _watched_page(
            browser, lambda url: url.startswith(("file:", "data:", "about:")))
        for path in pages:
            errors.clear()
            remote.clear()
            page.goto(path.as_uri())
            page.wait_for_function("() => [...document.querySelectorAll('.site-plot')]"
                                   ".every(e => e.querySelector('svg.main-svg'))", timeout=30000)
            assert errors == [], f"{path.name}: {errors}"
            assert remote == [], f"{path.name} fetched {remote}"
            plots = page.locator(".site-plot")
            for i in range(plots.count()):
                assert plots.nth(i).locator("svg.main-svg").count() > 0, f"{path.name} plot {i}"
            diagrams = page.locator(".site-diagram svg")
            assert diagrams.count() == path.read_text().count('class="site-diagram"')
            links = page.eval_on_selector_all("a[href]",
                                              "els => els.map(e => e.getAttribute('href'))")
            for href in links:
                if href.startswith("http"):
                    continue
                target, _, anchor = href.partition("#")
                target_path = site / target if target else path
                assert target_path.exists(), f"{path.name} links to missing {href}"
                if anchor:
                    assert f'id="{anchor}"' in target_path.read_text(), f"{path.name}: {href}"
            page.screenshot(path=str(ARTIFACTS / (path.stem + ".png")))
        browser.close()


@pytest.mark.browser
def test_moving_each_slider_changes_its_plot(site):
    sync_playwright = _browser()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.goto((site / "explore.html").as_uri())
        figures = page.locator(".explore-plot")
        assert figures.count() == len(_explore.FIGURES)
        for i in range(figures.count()):
            plot = figures.nth(i)
            plot.scroll_into_view_if_needed()
            visible = "el => JSON.stringify(el.data.map(t => t.visible))"
            before, drawn = plot.evaluate(visible), plot.locator(".main-svg").first.inner_html()
            rail = plot.locator(".slider-rail-touch-rect").bounding_box()
            page.mouse.click(rail["x"] + rail["width"] - 2, rail["y"] + rail["height"] / 2)
            page.wait_for_timeout(300)
            after = plot.evaluate(visible)
            assert after != before, f"figure {i}: the slider did not change what is shown"
            assert json.loads(after) == json.loads(plot.evaluate(
                "el => JSON.stringify(el.layout.sliders[0].steps.at(-1).args[0].visible)"))
            assert plot.locator(".main-svg").first.inner_html() != drawn, f"figure {i}"
            plot.screenshot(path=str(ARTIFACTS / f"explore-{i}-moved.png"))
        browser.close()


# ---- the live planner ------------------------------------------------------------------------
def _close(page, cli, where=""):
    """The page's JSON equals the command line's: the same keys and strings, numbers to 1e-9
    (Pyodide's Python sums floats as 3.12+ does, CPython 3.11 does not: the last bits move)."""
    if isinstance(cli, dict):
        assert set(page) == set(cli), where
        for k in cli:
            _close(page[k], cli[k], f"{where}.{k}")
    elif isinstance(cli, list):
        assert len(page) == len(cli), where
        for i, (a, b) in enumerate(zip(page, cli)):
            _close(a, b, f"{where}[{i}]")
    elif isinstance(cli, float):
        assert page == pytest.approx(cli, rel=1e-9), where
    else:
        assert page == cli, where


# Every text the page's progress note shows, in order (it changes faster than a test reads it)
NOTES = """
window.plannerNotes = [];
new MutationObserver(() => {
  const note = document.getElementById("planner-note");
  if (note && window.plannerNotes.at(-1) !== note.textContent)
    window.plannerNotes.push(note.textContent);
}).observe(document, {subtree: true, childList: true, characterData: true});
"""


def _column_argv(column) -> list[str]:
    request = column.request()
    return ["plan", "--model", "palm-540b", "--hardware", "tpu-v4", "--chips", "64",
            "--batch", str(column.batch), "--input-len", str(request["input_len"]),
            "--history-len", str(request["history_len"]), "--gen-len", str(request["gen_len"]),
            "--weights", column.weights]


@pytest.mark.browser
@pytest.mark.slow
def test_the_live_planner_plans_table_2_as_the_command_line_does(site, capsys):
    """Served, the page starts Pyodide with a progress note, and plans each of Table 2's
    columns from its form with the library's own code: its JSON and its table are what
    `tpuinfer plan` prints for the same request. Nothing leaves 127.0.0.1. From the file
    system it says to serve the site instead."""
    sync_playwright = _browser()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    if not (site / _planner.PYODIDE / "pyodide.asm.wasm").exists():
        try:
            _planner.pyodide_files()
            why = "the site was built without Pyodide"
        except _planner.PlannerUnavailable as err:
            why = str(err)
        require(False, f"the live planner is not in the built site: {why}")
    server = site_server(site, 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}/"
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page, errors, remote = _watched_page(browser, lambda url: url.startswith(base))
            page.add_init_script(NOTES)
            page.goto(base + "plan.html")
            page.wait_for_function("document.body.dataset.planner === 'ready'", timeout=180000)
            notes = page.evaluate("window.plannerNotes")
            assert any("Starting Python" in n and "Pyodide" in n for n in notes), notes
            assert notes[-1].startswith("Ready"), notes
            for column in TABLE2:
                argv = _column_argv(column)
                flags = dict(zip(argv[1::2], argv[2::2]))
                for name in ("model", "hardware", "weights"):
                    page.select_option(f"select[name={name}]", flags["--" + name])
                for name in ("chips", "batch", "input-len", "history-len", "gen-len"):
                    page.fill(f"input[name={name}]", flags["--" + name])
                page.evaluate("document.getElementById('planner-plan-json').textContent = ''")
                page.click("#planner-plan")
                page.wait_for_function("document.getElementById('planner-plan-json')"
                                       ".textContent.length > 0", timeout=120000)
                planned = json.loads(page.inner_text("#planner-plan-json"))
                assert main(argv + ["--json"]) == 0
                _close(planned, json.loads(capsys.readouterr().out), column.name)
                assert main(argv) == 0
                shown = page.inner_text("#planner-plan-text").rstrip()
                assert shown == capsys.readouterr().out.rstrip(), column.name
                best = planned["prefill"] or planned["decode"]
                assert (best["ffn"], best["attention"]) == (column.ffn, column.attention)
            assert page.locator("#planner-bars .main-svg").count() > 0
            page.screenshot(path=str(ARTIFACTS / "plan-served.png"), full_page=True)
            assert errors == [] and remote == []
            page.goto((site / "plan.html").as_uri())
            assert "tpuinfer book --serve" in page.inner_text("#planner-note")
            browser.close()
    finally:
        server.shutdown()
        server.server_close()
