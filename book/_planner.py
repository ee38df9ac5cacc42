"""The site's live planner: `tpuinfer plan` and `tpuinfer pareto`, run in the reader's browser.

`plan.html` runs the library's own code, not a copy of its formulas: the modules the command
line's `plan` imports (the cost path: pure Python, which tests/test_imports.py keeps free of
JAX and numpy) are zipped into the site (`cost_path_zip`), and Pyodide, CPython compiled to
WebAssembly, runs them there. The page builds the very command line a reader would type, hands
it to `tpuinfer.cli`'s parser and command, and shows what the command prints: its table, and
its JSON drawn as bars and as a frontier.

Pyodide is the `pyodide` npm package, pinned (`PYODIDE_VERSION`, its registry integrity
`PYODIDE_INTEGRITY`), fetched once with npm (`npm pack`, the registry's own client) into
tpuinfer's cache directory and copied into every site built (`pyodide_files`); a reader's
browser fetches nothing from the network. Its runtime is 12 MB (8.6 MB of it WebAssembly),
too large to keep in git, where every version would stay forever. Where npm is missing the
site is built without it, and the page says why.

Browsers load no WebAssembly from `file://`: opened from the file system, the page says to
serve the site (`tpuinfer book --serve OUT`, or any static server); the precomputed
explorers (`explore.html`) work either way.
"""
from __future__ import annotations

import base64
import hashlib
import html
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

from tpuinfer.config import MODELS
from tpuinfer.hardware import PROFILES
from tpuinfer.kv_formats import KV_FORMATS
from tpuinfer.layouts import ATTENTION_LAYOUTS, EXPERT_LAYOUTS, FFN_LAYOUTS
from tpuinfer.paths import cache_dir
from tpuinfer.weight_formats import WEIGHT_FORMATS

PYODIDE_VERSION = "0.28.3"
# `npm view pyodide@0.28.3 dist.integrity`: the tarball is checked against it after npm
PYODIDE_INTEGRITY = ("sha512-rtCsyTU55oNGpLzSVuAd55ZvruJDEX8o6keSdWKN9jPeBVSNlynaKFG7eRqkiIgU7"
                     "i2M6HEgYtm0atCEQX3u4A==")
# what `loadPyodide` reads: the loader, the runtime, the standard library and the lock file
PYODIDE_FILES = ("pyodide.js", "pyodide.asm.js", "pyodide.asm.wasm", "python_stdlib.zip",
                 "pyodide-lock.json")
PYODIDE = "assets/pyodide"  # where the site holds them
COST_PATH_ZIP = "assets/tpuinfer-cost-path.zip"
BLOCKED = ("jax", "jaxlib", "numpy", "scipy", "tqdm", "ml_dtypes")


class PlannerUnavailable(RuntimeError):
    """This build cannot hold the live planner (npm missing, say): the page says why."""


# ---- Pyodide, from npm, once per machine ---------------------------------------------------
def pyodide_files() -> Path:
    """The folder holding `PYODIDE_FILES` of the pinned Pyodide, fetched with npm the first
    time (into `$TPUINFER_CACHE/pyodide/VERSION`). Raises PlannerUnavailable saying why not."""
    home = cache_dir() / "pyodide" / PYODIDE_VERSION
    if all((home / name).exists() for name in PYODIDE_FILES):
        return home
    npm = shutil.which("npm")
    if npm is None:
        raise PlannerUnavailable(f"npm is not installed where this site was built: the build "
                                 f"fetches the pinned pyodide {PYODIDE_VERSION} package with it")
    with tempfile.TemporaryDirectory(prefix="tpuinfer-pyodide-") as tmp:
        run = subprocess.run([npm, "pack", f"pyodide@{PYODIDE_VERSION}", "--pack-destination",
                              tmp, "--json"], capture_output=True, text=True, timeout=600)
        if run.returncode:
            raise PlannerUnavailable(f"`npm pack pyodide@{PYODIDE_VERSION}` failed: "
                                     f"{(run.stderr.strip() or run.stdout.strip())[-300:]}")
        (tarball,) = Path(tmp).glob("pyodide-*.tgz")
        digest = base64.b64encode(hashlib.sha512(tarball.read_bytes()).digest()).decode()
        if f"sha512-{digest}" != PYODIDE_INTEGRITY:
            raise PlannerUnavailable(f"the pyodide {PYODIDE_VERSION} tarball npm fetched is not "
                                     f"the pinned one (sha512-{digest})")
        part = home.with_name(home.name + ".part")
        shutil.rmtree(part, ignore_errors=True)
        part.mkdir(parents=True)
        with tarfile.open(tarball) as tar:
            for name in PYODIDE_FILES:
                with tar.extractfile(f"package/{name}") as src:
                    (part / name).write_bytes(src.read())
        shutil.rmtree(home, ignore_errors=True)
        part.rename(home)  # whole or not at all: an interrupted fetch leaves no half folder
    return home


# ---- the cost path, as the page imports it -------------------------------------------------
# In a fresh interpreter where JAX and numpy cannot be imported (as in Pyodide), import what
# the page imports, and list the package's files that came with it.
_LOADED = """
import json, sys
sys.modules.update(dict.fromkeys(sys.argv[1].split(",")))  # None there: importing them fails
import tpuinfer.cli
print(json.dumps(sorted(m.__file__ for name, m in sys.modules.items()
                        if name.split(".")[0] == "tpuinfer")))
"""


def cost_path_zip(dest: Path) -> list[str]:
    """Zip every module of tpuinfer that `import tpuinfer.cli` loads without JAX or numpy,
    and the tables of measurements the cost path reads (`tpuinfer/data/*.json`), into `dest`
    (paths from the package's parent, as Pyodide puts them on its path); returns them."""
    run = subprocess.run([sys.executable, "-c", _LOADED, ",".join(BLOCKED)],
                         capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"))
    if run.returncode:
        raise PlannerUnavailable(f"the command line does not import without JAX and numpy: "
                                 f"{run.stderr.strip()[-500:]}")
    package = Path(sys.modules["tpuinfer"].__file__).parent
    files = [Path(f) for f in json.loads(run.stdout)] + sorted(package.glob("data/*.json"))
    root = package.parent
    names = sorted(str(f.relative_to(root)) for f in files)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as z:
        for name in names:
            z.write(root / name, name)
    return names


def install(out: Path) -> str | None:
    """Copy Pyodide and the cost path into the site at `out`; None, or why the page cannot
    plan in this build."""
    try:
        home = pyodide_files()
        (out / PYODIDE).mkdir(parents=True, exist_ok=True)
        for name in PYODIDE_FILES:
            shutil.copy(home / name, out / PYODIDE / name)
        cost_path_zip(out / COST_PATH_ZIP)
    except PlannerUnavailable as err:
        return str(err)
    return None


# ---- the page ------------------------------------------------------------------------------
# Run in Pyodide once the zip is unpacked: `run(argv)` is `tpuinfer ARGV` as `tpuinfer.cli.main`
# runs it, returning both what it prints (the text) and its JSON.
GLUE = """
import contextlib, io, json, sys
sys.path.insert(0, "/tpuinfer-site")
from tpuinfer.cli import build_parser
from tpuinfer.errors import TpuinferError

def run(argv_json):
    said = io.StringIO()
    try:
        with contextlib.redirect_stderr(said):
            args = build_parser().parse_args(json.loads(argv_json))
        obj, text = args.func(args)
    except SystemExit:  # argparse has said what is wrong with the arguments
        return json.dumps({"error": said.getvalue().strip().splitlines()[-1]})
    except TpuinferError as err:
        return json.dumps({"error": str(err)})
    return json.dumps({"json": obj, "text": text})
"""

PLANNER_STYLE = """
.planner-form { display: grid; grid-template-columns: repeat(auto-fill, minmax(13em, 1fr));
  gap: 0.5em 1em; margin: 1em 0; }
.planner-form label { display: flex; flex-direction: column; font: 13px sans-serif; }
.planner-form input, .planner-form select { font: 14px sans-serif; padding: 0.2em; }
.planner-note { padding: 0.6em 1em; background: #fff6e0; border-left: 3px solid #d99a00; }
.planner-error { color: #a00; white-space: pre-wrap; }
.planner-out pre { overflow-x: auto; font-size: 12px; background: #f6f8fa; padding: 0.6em; }
.planner-out pre:empty { display: none; }
button { font: 15px sans-serif; padding: 0.3em 1em; margin-right: 0.5em; }
"""

FILE_NOTE = ("This page runs the planner in your browser with Pyodide (Python compiled to "
             "WebAssembly), and browsers load no WebAssembly from a page opened from the file "
             "system. Serve the site and open it over http: <code>tpuinfer book --serve "
             "SITE_DIR</code> (or any static server, e.g. <code>python -m http.server</code> "
             "in the site's folder). The <a href=\"explore.html\">precomputed explorers</a> "
             "work from the file system as they are.")


def _select(name: str, label: str, options, selected: str) -> str:
    opts = "".join(f'<option{" selected" if o == selected else ""}>{html.escape(o)}</option>'
                   for o in options)
    return f'<label>{label}<select name="{name}">{opts}</select></label>'


def _number(name: str, label: str, value: int) -> str:
    return f'<label>{label}<input name="{name}" type="number" min="0" value="{value}"></label>'


def form() -> str:
    """Every input of `tpuinfer plan`, its options the library's own."""
    fields = [  # every chip profile (the host one is a machine's own, written there)
        _select("model", "model", list(MODELS), "palm-540b"),
        _select("hardware", "hardware profile", list(PROFILES), "tpu-v4"),
        _number("chips", "chips", 64), _number("batch", "batch", 64),
        _number("input-len", "input tokens per sequence", 2048),
        _number("history-len", "history tokens (already cached)", 0),
        _number("gen-len", "generated tokens", 64),
        _select("weights", "weights", WEIGHT_FORMATS, "int8"),
        _select("kv", "KV cache", KV_FORMATS, "bf16"),
        _select("ffn", "feed-forward layout", ("auto",) + FFN_LAYOUTS + EXPERT_LAYOUTS, "auto"),
        _select("attention", "attention layout", ("auto",) + ATTENTION_LAYOUTS, "auto"),
        _select("looped", "looped", ("auto", "yes", "no"), "auto"),
        '<label>replicas<input name="replicas" value="1" title="a count, or auto"></label>',
        '<label>frontier: chips<input name="frontier-chips" value="64" '
        'title="comma-separated chip counts"></label>',
        '<label>frontier: batches<input name="frontier-batches" value="1,4,16,64,256,1024">'
        '</label>']
    return f'<form id="planner-form" class="planner-form">{"".join(fields)}</form>'


SCRIPT = """
const PYODIDE = %(pyodide)s, ZIP = %(zip)s, GLUE = %(glue)s, UNAVAILABLE = %(unavailable)s;
const FILE_NOTE = %(file_note)s, TERMS = %(terms)s;
const note = document.getElementById("planner-note");
const buttons = [...document.querySelectorAll("#planner-buttons button")];
let run = null;

function say(text, error) {
  note.textContent = text;
  note.className = error ? "planner-note planner-error" : "planner-note";
}
const tick = () => new Promise(r => setTimeout(r, 30));  // let the note paint first

function argv(command) {
  const f = Object.fromEntries(new FormData(document.getElementById("planner-form")));
  const request = ["--model", f.model, "--hardware", f.hardware, "--input-len", f["input-len"],
    "--history-len", f["history-len"], "--gen-len", f["gen-len"], "--weights", f.weights,
    "--kv", f.kv, "--ffn", f.ffn, "--attention", f.attention, "--looped", f.looped,
    "--replicas", f.replicas, "--json"];
  if (command === "plan") return ["plan", "--chips", f.chips, "--batch", f.batch, ...request];
  return ["pareto", "--chips", f["frontier-chips"], "--batches", f["frontier-batches"],
          "--no-progress", ...request];
}

async function start() {
  if (UNAVAILABLE) { say("The live planner is not in this build of the site: " + UNAVAILABLE
                         + ". The precomputed explorers work as they are.", true); return; }
  if (location.protocol === "file:") { note.innerHTML = FILE_NOTE; return; }
  const t0 = performance.now();
  say("Starting Python in your browser: Pyodide " + PYODIDE.version + ", 12 MB from this "
      + "site (a few seconds; nothing comes from anywhere else)...");
  await new Promise((ok, fail) => {
    const s = document.createElement("script");
    s.src = PYODIDE.path + "/pyodide.js"; s.onload = ok; s.onerror = fail;
    document.head.appendChild(s);
  });
  const py = await loadPyodide({indexURL: PYODIDE.path + "/"});
  say("Loading the planner: tpuinfer's cost path, the same Python as `tpuinfer plan`...");
  const zip = await (await fetch(ZIP)).arrayBuffer();
  py.unpackArchive(zip, "zip", {extractDir: "/tpuinfer-site"});
  py.runPython(GLUE);
  run = py.globals.get("run");
  buttons.forEach(b => b.disabled = false);
  document.body.dataset.planner = "ready";
  say("Ready (Python started in " + ((performance.now() - t0) / 1000).toFixed(1) + " s). "
      + "Choose a request and press Plan: the predictions below are computed here, by the "
      + "library's own code.");
}

function call(command) {
  const args = argv(command);
  const out = JSON.parse(run(JSON.stringify(args)));
  document.getElementById("planner-command").textContent =
    "tpuinfer " + args.map(a => /^[\\w.,\\/-]+$/.test(a) ? a : JSON.stringify(a)).join(" ");
  return out;
}

function bars(plan) {
  const phases = ["prefill", "decode"].filter(p => plan[p]);
  const traces = TERMS.map(([key, name]) => ({type: "bar", orientation: "h", name: name,
    y: phases, x: phases.map(p => (plan[p].terms[key] || 0) * 1e3)}))
    .filter(t => t.x.some(v => v > 0));
  traces.push({type: "scatter", mode: "markers", name: "latency", y: phases,
               x: phases.map(p => plan[p].latency_s * 1e3),
               marker: {symbol: "line-ns-open", size: 24, color: "black"}});
  Plotly.newPlot("planner-bars", traces, {barmode: "group", height: 160 + 110 * phases.length,
    title: {text: "Each phase's terms: a prediction on " + plan.hardware + ", rule "
            + plan.rule},
    xaxis: {title: {text: "ms (log scale)"}, type: "log"}, margin: {l: 80}},
    {responsive: true});
}

function frontier(result) {
  const traces = ["prefill", "decode"].map(p => ({type: "scatter", mode: "lines+markers",
    name: p + (p === "decode" ? " (latency per token)" : " (latency)"),
    x: result[p].map(pt => pt.latency_s * 1e3),
    y: result[p].map(pt => pt.cost_chip_s_per_token * 1e3),
    text: result[p].map(pt => pt.chips + " chips, batch " + pt.batch + ", " + pt.ffn + "/"
                        + pt.attention + " " + pt.schedule + " on " + pt.mesh.join("x"))}));
  Plotly.newPlot("planner-frontier", traces, {height: 460,
    title: {text: "Latency against cost: the frontier, a prediction on " + result.hardware},
    xaxis: {title: {text: "latency (ms)"}, type: "log"},
    yaxis: {title: {text: "cost (chip-ms per token)"}, type: "log"}}, {responsive: true});
}

async function act(command) {
  buttons.forEach(b => b.disabled = true);
  say(command === "plan" ? "Planning..." : "Sweeping chips and batches for the frontier "
      + "(every mesh, layout and schedule at each: seconds to a minute)...");
  await tick();
  try {
    const out = call(command);
    if (out.error) { say(out.error, true); return; }
    document.getElementById("planner-" + command + "-text").textContent = out.text;
    document.getElementById("planner-" + command + "-json").textContent =
      JSON.stringify(out.json);
    (command === "plan" ? bars : frontier)(out.json);
    say("Done: `tpuinfer " + command + "` printed what is below.");
  } catch (err) {
    say(String(err), true);
  } finally {
    buttons.forEach(b => b.disabled = false);
  }
}

document.getElementById("planner-plan").onclick = () => act("plan");
document.getElementById("planner-pareto").onclick = () => act("pareto");
start().catch(err => say("Pyodide could not start: " + err, true));
"""

TERMS = [("compute_s", "compute"), ("weights_s", "weight loads"), ("kv_s", "KV-cache loads"),
         ("activations_s", "activations"), ("comm_s", "communication"),
         ("overhead_s", "dispatch")]


def planner_page(nav: str, style: str, unavailable: str | None) -> str:
    """`plan.html`: the form, the progress note, and where the command's output goes."""
    script = SCRIPT % {
        "pyodide": json.dumps({"version": PYODIDE_VERSION, "path": PYODIDE}),
        "zip": json.dumps(COST_PATH_ZIP), "glue": json.dumps(GLUE),
        "unavailable": json.dumps(unavailable), "file_note": json.dumps(FILE_NOTE),
        "terms": json.dumps(TERMS)}
    return (
        '<!DOCTYPE html><html><head><meta charset="utf-8"><title>Plan your own</title>'
        '<link rel="icon" href="data:,">'
        f'<style>{style}{PLANNER_STYLE}</style><script src="assets/plotly.min.js"></script>'
        '<meta name="viewport" content="width=device-width, initial-scale=1"></head>'
        f'<body>{nav}<div class="site-index"><h1>Plan your own</h1>'
        '<p>Ask the planner a question of your own: a model, a chip, a request. It answers '
        'as <code>tpuinfer plan</code> does (the layouts and mesh per phase, their latency, '
        'MFU, memory and terms) and, for the chips and batches you give, draws the '
        'latency&ndash;cost frontier of <code>tpuinfer pareto</code>. It is the library\'s own '
        'code, the cost model of arXiv 2211.05102 (Sections 2 and 3) in pure Python, running '
        'in your browser: every number is a prediction on the hardware profile you chose.</p>'
        '<p id="planner-note" class="planner-note">This page needs JavaScript: it runs the '
        'planner in your browser.</p>'
        f'{form()}<p id="planner-buttons"><button id="planner-plan" disabled>Plan</button>'
        '<button id="planner-pareto" disabled>Latency&ndash;cost frontier</button></p>'
        '<p><code id="planner-command"></code></p>'
        '<div class="planner-out"><pre id="planner-plan-text"></pre>'
        '<div id="planner-bars"></div><pre id="planner-pareto-text"></pre>'
        '<div id="planner-frontier"></div></div>'
        '<script type="application/json" id="planner-plan-json"></script>'
        '<script type="application/json" id="planner-pareto-json"></script>'
        f'</div><script>{script}</script></body></html>')
