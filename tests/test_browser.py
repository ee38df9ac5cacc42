"""The book as a student meets it: JupyterLab on 127.0.0.1, Debian's chromium driven headless by
Playwright. A copy of the chapter that shows the layout explorer is opened and run; a control
is moved; the plot must change and no cell may show an error. A screenshot is kept in
artifacts/browser/ for a person to look at.

CI (`CI` set) fails loudly when chromium or Playwright is missing (.ci/run installs them);
elsewhere the test is skipped with the reason.
"""
import json
import os
import pathlib
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import nbformat
import pytest

pytestmark = pytest.mark.browser

ROOT = pathlib.Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "artifacts" / "browser"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
EXPLORER = ".tpuinfer-explorer"
PLOT = f"{EXPLORER} .js-plotly-plot"


def require(ok: bool, why: str):
    if ok:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{why}; CI must run the browser test (.ci/run installs chromium)")
    pytest.skip(f"{why} (install it to run the browser test; CI fails instead of skipping)")


# ---- the notebook ----------------------------------------------------------------------------
def chapter_with_explorer() -> pathlib.Path | None:
    """The first chapter that displays a LayoutExplorer, if the book has one yet."""
    for path in sorted((ROOT / "book").glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        if any(c.cell_type == "code" and "LayoutExplorer(" in c.source for c in nb.cells):
            return path
    return None


def small_notebook() -> nbformat.NotebookNode:
    """A chapter's opening in miniature, for a book without an explorer yet."""
    return nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("import tpuinfer as ti\nti.emulate(256)"),
        nbformat.v4.new_code_cell(
            "from tpuinfer_widgets import LayoutExplorer\n"
            "explorer = LayoutExplorer(mesh=(2, 2, 2), batch=8, context=8, repeats=1)\n"
            "explorer"),
        nbformat.v4.new_code_cell("explorer.snapshot()"),
    ], metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                "language": "python"}})


@pytest.fixture
def notebook(tmp_path) -> pathlib.Path:
    """A copy to run (the stored chapter is never touched), without its outputs so that
    every plot on the page comes from this run."""
    chapter = chapter_with_explorer()
    nb = nbformat.read(chapter, as_version=4) if chapter else small_notebook()
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    nb.metadata.pop("widgets", None)
    path = tmp_path / "book" / (chapter.name if chapter else "explorer.ipynb")
    path.parent.mkdir()
    if chapter:  # chapters may read files beside them
        for other in chapter.parent.iterdir():
            if other.suffix != ".ipynb" and other.is_file():
                shutil.copy(other, path.parent / other.name)
    nbformat.write(nb, path)
    return path


# ---- JupyterLab ------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def lab(notebook, tmp_path):
    """JupyterLab serving the notebook's folder on 127.0.0.1 with a token; stopped, kernels
    and all, at the end."""
    port, token = free_port(), secrets.token_hex(16)
    # Settings of this run only (none of this user's): no news or update toasts over the
    # notebook, the notebook's own kernel started without a "Select Kernel" dialog, and
    # every cell kept in the page (JupyterLab 4 otherwise drops cells scrolled out of view).
    settings = tmp_path / "lab-settings" / "@jupyterlab"
    for plugin, values in (("apputils-extension/notification",
                            {"fetchNews": "false", "checkForUpdates": False}),
                           ("notebook-extension/tracker",
                            {"autoStartDefaultKernel": True, "windowingMode": "none"})):
        path = settings / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    env = dict(os.environ, JUPYTERLAB_SETTINGS_DIR=str(tmp_path / "lab-settings"),
               JUPYTERLAB_WORKSPACES_DIR=str(tmp_path / "workspaces"),
               JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"))
    log = open(tmp_path / "lab.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1",
         f"--port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
         f"--ServerApp.root_dir={notebook.parent}", "--ServerApp.terminals_enabled=False",
         "--allow-root"],  # CI runs as root; the server listens on 127.0.0.1 only
        stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_server(url, token, proc, tmp_path / "lab.log")
        yield url, token
    finally:
        stop(proc, url, token)
        log.close()


def wait_for_server(url, token, proc, log, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"JupyterLab exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"JupyterLab did not answer in {timeout} s:\n{log.read_text()[-3000:]}")


def stop(proc, url, token):
    # the server's own shutdown stops its kernels; the process group catches any straggler
    try:
        req = urllib.request.Request(f"{url}/api/shutdown?token={token}", method="POST")
        urllib.request.urlopen(req, timeout=5).close()
        proc.wait(timeout=15)
    except (OSError, subprocess.TimeoutExpired):
        pass
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass


# ---- the browser -----------------------------------------------------------------------------
PLOT_DATA = f"""() => {{
    const gd = document.querySelector('{PLOT}');
    return gd && gd.data ? JSON.stringify(gd.data.map(t => Array.from(t.y || []))) : null;
}}"""


PLOT_STATE = f"""() => {{
    const gd = document.querySelector('{PLOT}');
    return gd ? JSON.stringify({{traces: gd.data && gd.data.length,
                                 layout: gd.layout && Object.keys(gd.layout)}}) : null;
}}"""


# The plot changed while the explorer still measures, its measured bars hidden: the cost
# model's side was drawn first (trace 1 is the measured side of the first panel).
PREDICTED_FIRST = f"""(old) => {{
    const gd = document.querySelector('{PLOT}');
    const busy = document.querySelector('{EXPLORER} .tpuinfer-busy');
    if (!gd || !gd.data || !busy) return false;
    const now = JSON.stringify(gd.data.map(t => Array.from(t.y || [])));
    return now !== old && gd.data[1].visible === false;
}}"""
MEASURED_SHOWN = f"() => document.querySelector('{PLOT}').data[1].visible !== false"


def select(page, label: str, value: str):
    page.locator(f"{EXPLORER} .widget-dropdown:has(label:text-is('{label}')) select") \
        .select_option(label=value)


def wait_idle(page, timeout_ms):
    """Until the explorer is not busy compiling (its message leaves the busy state)."""
    page.wait_for_function(f"() => !document.querySelector('{EXPLORER} .tpuinfer-busy')",
                           timeout=timeout_ms)


STARTED = """() => [...document.querySelectorAll('.jp-InputPrompt')]
    .some(p => /\\[(\\*|\\d+)\\]/.test(p.textContent))"""


def run_all(page):
    """Run > Run All Cells, once the notebook is the current widget (the menu acts on the
    current one); tried again if no cell starts, as a slow start can swallow the click."""
    page.locator(".jp-Notebook .jp-Cell").first.click()
    for attempt in range(3):
        page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
        page.locator(".lm-Menu-item:not(.lm-mod-disabled) .lm-Menu-itemLabel",
                     has_text="Run All Cells").first.click()
        try:
            page.wait_for_function(STARTED, timeout=15_000)
            return
        except Exception:  # playwright's TimeoutError: no cell started
            page.keyboard.press("Escape")
    pytest.fail("Run All Cells started no cell")


def drive(page, url, token, notebook):
    """Open and run the notebook, move the explorer's controls, check and photograph."""
    page.goto(f"{url}/lab/tree/{notebook.name}?token={token}")
    page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']",
                           timeout=60_000)
    dialog = page.locator(".jp-Dialog button", has_text="Select")
    if dialog.count():  # a JupyterLab that still asks which kernel: the notebook's own
        dialog.first.click()
    page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']",
                           timeout=60_000)
    run_all(page)
    page.wait_for_selector(PLOT, timeout=90_000)
    page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']",
                           timeout=90_000)
    wait_idle(page, 60_000)
    page.locator(EXPLORER).first.scroll_into_view_if_needed()
    first = page.evaluate(PLOT_DATA)

    # A layout tiny runs on every mesh at any batch (ws*/heads), then the other
    # weight-stationary one: each a real compile in the kernel.
    select(page, "attention", "heads")
    wait_idle(page, 60_000)
    before = page.evaluate(PLOT_DATA)
    current = page.locator(f"{EXPLORER} .widget-dropdown:has(label:text-is('ffn')) "
                           "select").input_value()
    select(page, "ffn", "ws1d" if current != "ws1d" else "ws2d")
    page.wait_for_function(PREDICTED_FIRST, arg=before, timeout=60_000)
    wait_idle(page, 60_000)
    after = page.evaluate(PLOT_DATA)
    assert page.evaluate(MEASURED_SHOWN)  # then the measurement landed beside it

    explorer = page.locator(EXPLORER).first
    explorer.scroll_into_view_if_needed()
    explorer.screenshot(path=str(ARTIFACTS / "layout_explorer.png"))
    page.screenshot(path=str(ARTIFACTS / "jupyterlab.png"))

    assert after != before and after != first
    assert page.locator(f"{EXPLORER} .tpuinfer-error").count() == 0, \
        page.locator(f"{EXPLORER} .tpuinfer-error").first.inner_text()
    errors = page.locator(".jp-OutputArea-output[data-mime-type="
                          "'application/vnd.jupyter.stderr']")
    assert errors.count() == 0, errors.first.inner_text()
    assert page.get_by_text("Error displaying widget").count() == 0
    # a snapshot cell's plain plotly output renders too (the plot a reader without a kernel
    # sees): JupyterLab's plotly renderer, not the widget
    snapshots = page.locator(".jp-Cell:has(.jp-InputArea:has-text('.snapshot()'))")
    for i in range(snapshots.count()):
        assert snapshots.nth(i).locator(".jp-RenderedPlotly").count() == 1


# ---- the test -------------------------------------------------------------------------------
@pytest.fixture
def sync_playwright():
    """Playwright's entry point, once chromium and the package are known to be there (asked
    before JupyterLab starts: the test's first fixture)."""
    require(os.path.exists(CHROMIUM), f"{CHROMIUM} is missing (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        require(False, "the playwright package is missing (pip install -e '.[dev]')")
    return sync_playwright


def test_layout_explorer_in_jupyterlab(sync_playwright, lab, notebook):
    url, token = lab
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "failure.png").unlink(missing_ok=True)  # left by an earlier failing run
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS,
                                    headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        console = []  # the page's own errors, printed when the test fails
        page.on("console", lambda m: console.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda err: console.append(str(err)))
        try:
            drive(page, url, token, notebook)
        except Exception:
            page.screenshot(path=str(ARTIFACTS / "failure.png"))  # what the page showed
            print("browser console errors:", *console, sep="\n")
            print("explorer plot:", page.evaluate(PLOT_STATE))
            raise
        finally:
            browser.close()


# ---- the prediction lock ---------------------------------------------------------------------
LOCK = ".tpuinfer-predict"


def lock_notebook() -> nbformat.NotebookNode:
    """A predict-then-run exercise as a chapter poses it, left for the reader to answer."""
    return nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("import tpuinfer as ti\nti.emulate(256)"),
        nbformat.v4.new_code_cell(
            "from tpuinfer import sweeps\n"
            "from tpuinfer_widgets import PredictionLock\n"
            "answer_1 = ...  # your answer\n"
            "lock = PredictionLock('03.1', 'all-gather bytes per device', lambda: (\n"
            "    sweeps.step_quantity('tiny', (2, 2, 2), ti.Layout('ws1d', 'heads'),\n"
            "                         phase='prefill', batch=8, tokens=8,\n"
            "                         quantity='bytes:all-gather')), guess=answer_1)\n"
            "lock"),
    ], metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                "language": "python"}})


class TestPredictionLock:
    @pytest.fixture
    def notebook(self, tmp_path) -> pathlib.Path:
        path = tmp_path / "book" / "lock.ipynb"
        path.parent.mkdir()
        nbformat.write(lock_notebook(), path)
        return path

    def test_the_lock_reveals_only_after_a_number_in_jupyterlab(self, sync_playwright, lab,
                                                                 notebook):
        url, token = lab
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS,
                                        headless=True)
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            try:
                self.drive(page, url, token, notebook)
            except Exception:
                page.screenshot(path=str(ARTIFACTS / "lock_failure.png"))
                raise
            finally:
                browser.close()

    @staticmethod
    def drive(page, url, token, notebook):
        page.goto(f"{url}/lab/tree/{notebook.name}?token={token}")
        page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']",
                               timeout=60_000)
        run_all(page)
        page.wait_for_selector(f"{LOCK} input", timeout=90_000)
        entry = page.locator(f"{LOCK} .widget-text input").first
        button = page.locator(f"{LOCK} button", has_text="Lock and reveal")
        assert page.locator(f"{LOCK} .tpuinfer-predict-result table").count() == 0

        entry.fill("a lot")  # a word where a number belongs: a message, no traceback
        button.click()
        page.wait_for_selector(f"{LOCK} .tpuinfer-error", timeout=30_000)
        assert "is not a number" in page.locator(f"{LOCK} .tpuinfer-error").inner_text()

        entry.fill("100000")
        page.locator(f"{LOCK} .widget-text input").nth(1).fill("two layers of B·L·E·4")
        button.click()
        page.wait_for_selector(f"{LOCK} .tpuinfer-predict-result table", timeout=90_000)
        result = page.locator(f"{LOCK} .tpuinfer-predict-result").inner_text()
        page.locator(LOCK).screenshot(path=str(ARTIFACTS / "prediction_lock.png"))
        assert "your prediction (two layers of B·L·E·4)" in result
        assert "131,072 bytes" in result and "24% low" in result
        assert "cost model" in result and "emulated 2x2x2 mesh" in result
        assert entry.is_disabled() and button.is_disabled()
        assert page.locator(f"{LOCK} .tpuinfer-error").count() == 0
        errors = page.locator(".jp-OutputArea-output[data-mime-type="
                              "'application/vnd.jupyter.stderr']")
        assert errors.count() == 0, errors.first.inner_text()
        assert page.get_by_text("Error displaying widget").count() == 0
