"""The explorers beyond JupyterLab, as test_browser.py drives JupyterLab: one server (the book
extra's Notebook 7 and Voilà serve from it), Debian's chromium through Playwright. In Notebook
7 an explorer is run and a control moved; in Voilà chapter 6 is served as an app (its explorers
draw static figures there on their own) and a control moved. Each time the plot must change
and show no error. Screenshots go to artifacts/frontends/.
"""
import importlib.util
import pathlib
import secrets
import shutil
import subprocess
import sys

import nbformat
import pytest

from test_browser import CHROMIUM, free_port, require, run_all, stop, wait_for_server

pytestmark = pytest.mark.browser

ROOT = pathlib.Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "artifacts" / "frontends"
CHAPTER = ROOT / "book" / "06_attention.ipynb"  # a chapter with a quick explorer
EXPLORER = ".tpuinfer-explorer"
PLOT = f"{EXPLORER} .js-plotly-plot"
TRACES = f"""() => {{
    const gd = document.querySelector('{PLOT}');
    return gd && gd.data ? JSON.stringify(gd.data.map(t => Array.from(t.y || []))) : null;
}}"""
DRAWN = f"() => document.querySelectorAll('{PLOT} .scatterlayer .trace').length"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    for module in ("notebook", "voila", "playwright"):
        require(importlib.util.find_spec(module) is not None, f"{module} is not installed")
    require(pathlib.Path(CHROMIUM).exists(), f"{CHROMIUM} is missing")
    root = tmp_path_factory.mktemp("frontends")
    nbformat.write(nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("import tpuinfer as ti\nti.emulate(256)"),
        nbformat.v4.new_code_cell("from tpuinfer_widgets import ContextExplorer\n"
                                  "explorer = ContextExplorer(batch=128)\nexplorer")],
        metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}}), root / "explorer.ipynb")
    for other in CHAPTER.parent.iterdir():  # the chapter and what it reads beside it
        if other.is_file() and (other == CHAPTER or other.suffix != ".ipynb"):
            shutil.copy(other, root / other.name)
    port, token = free_port(), secrets.token_hex(16)
    log_path = root / "server.log"
    log = open(log_path, "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
         "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
         f"--ServerApp.root_dir={root}", "--ServerApp.terminals_enabled=False", "--allow-root"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_server(url, token, proc, log_path)
        yield url, token
    finally:
        stop(proc, url, token)
        log.close()


@pytest.fixture
def page():
    from playwright.sync_api import sync_playwright
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser.new_page(viewport={"width": 1200, "height": 900})
        browser.close()


def move_batch(page, value: int):
    box = page.locator(f"{EXPLORER} .widget-inline-hbox:has(label:text-is('batch')) input")
    box.first.fill(str(value))
    box.first.press("Enter")


def check_a_control_moves_the_plot(page, shot: str):
    page.wait_for_selector(PLOT, timeout=120_000)
    page.wait_for_function(f"() => ({DRAWN})() > 0", timeout=30_000)
    before = page.evaluate(TRACES)
    move_batch(page, 512)
    page.wait_for_function(f"(old) => ({TRACES})() !== old", arg=before, timeout=30_000)
    assert page.evaluate(DRAWN) > 0, "the plot lost its traces"
    assert page.locator(f"{EXPLORER} .tpuinfer-error").count() == 0
    page.locator(EXPLORER).first.scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / shot))


def test_an_explorer_in_notebook_7(server, page):
    url, token = server
    page.goto(f"{url}/notebooks/explorer.ipynb?token={token}")
    page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']",
                           timeout=60_000)
    run_all(page)  # tried again if a busy machine swallows the click, as in test_browser.py
    check_a_control_moves_the_plot(page, "notebook7.png")
    errors = page.locator(".jp-OutputArea-output[data-mime-type="
                          "'application/vnd.jupyter.stderr']")
    assert errors.count() == 0, errors.first.inner_text()


def test_a_chapter_as_a_voila_app(server, page):
    url, token = server
    page.goto(f"{url}/voila/render/{CHAPTER.name}?token={token}", timeout=180_000)
    check_a_control_moves_the_plot(page, "voila.png")
    assert page.get_by_text("Traceback").count() == 0
