"""`tpuinfer warmup`: compile a workshop's steps before the day, into the persistent compilation
cache (`tpuinfer.compile_cache`), so that on the day each is read back instead of compiled.

Without `--book`: the demo's two steps on its default and the steps `LayoutExplorer` opens
with on the full 4x8x8 mesh (its default, and batch 256 in both phases, the workshop's
heaviest). With `--book`: every chapter of the book, run top to bottom in a fresh kernel (the
chapters' own cells decide what they compile; nothing is listed twice). A step compiles as
`measure` compiles it (`engine.compiled_step`), and `generate` and the explorers compile the
very same program for the same shapes, so the cache's key is the same.
"""
from __future__ import annotations

import dataclasses
import os
import time

from ..config import get_model
from ..errors import UsageError
from ..layouts import Layout
from ..report import progress_bar
from .book import BOOK
from .book import chapters as stored_chapters
from .demo import DEFAULTS, planned_layouts
from .options import add_json_flag

FULL = (4, 8, 8)
CHAPTER_TIMEOUT_S = 1800  # one cell; a cold 4x8x8 chapter cell takes about a minute


@dataclasses.dataclass(frozen=True)
class Step:
    """One step to compile: `measure`'s arguments."""
    label: str
    mesh: tuple[int, int, int]
    layout: Layout
    phase: str
    batch: int
    context: int
    model: str = "tiny"

    def compile(self) -> float:
        """Compile (or read back) this step; the seconds `measure` reports for it."""
        from ..measure import measure  # the engine (JAX): imported as the warm-up runs
        m = measure(self.model, self.mesh, self.layout, phase=self.phase, batch=self.batch,
                    tokens=self.context if self.phase == "prefill" else None,
                    context=self.context, repeats=0)
        return m.compile_s


def workshop_steps() -> list[Step]:
    """The demo's steps on its default, then the explorer's opening steps on 4x8x8."""
    d = DEFAULTS
    prefill, decode = planned_layouts(get_model(d["model"]), FULL, d["batch"], d["prompt_len"],
                                      d["steps"])
    context = d["prompt_len"] + d["steps"]  # generate's cache holds prompt and generated
    return [
        Step("demo prefill", FULL, prefill, "prefill", d["batch"], d["prompt_len"]),
        Step("demo decode", FULL, decode, "decode", d["batch"], context),
        # LayoutExplorer's opening step (batch 1, context 8), then batch 256 in both phases
        Step("explorer prefill", FULL, Layout("ws2d", "heads"), "prefill", 1, 8),
        Step("explorer prefill, batch 256", FULL, Layout("ws2d", "heads"), "prefill", 256, 8),
        Step("explorer decode, batch 256", FULL, Layout("ws2d", "batch"), "decode", 256, 8),
    ]


def compile_steps(steps, progress=None) -> list[dict]:
    """Compile each step in turn; `progress(done, total, what)` before each."""
    out = []
    for i, step in enumerate(steps):
        if progress:
            progress(i, len(steps), step.label)
        t0 = time.perf_counter()
        compile_s = step.compile()
        out.append({"step": step.label, "layout": str(step.layout), "mesh": list(step.mesh),
                    "phase": step.phase, "batch": step.batch, "compile_s": compile_s,
                    "seconds": time.perf_counter() - t0})
    if progress:
        progress(len(steps), len(steps), "done")
    return out


def run_chapters(progress=None) -> list[dict]:
    """Run every chapter of the book in a fresh kernel, which inherits this process's cache
    settings (the environment), so that what it compiles lands in the same cache."""
    try:  # the chapters' runner comes with the book's extras (jupyterlab), not the package's
        import nbclient
        import nbformat  # and the notebook format, with it
    except ImportError as err:
        raise UsageError(f"warmup --book runs the chapters with nbclient ({err}); install the "
                         'book\'s extras: pip install -e ".[book]"') from None
    chapters = stored_chapters()
    if not chapters:
        raise UsageError(f"no chapters found in {BOOK}: --book needs a checkout of the "
                         "repository installed with `pip install -e .`")
    out = []
    for i, path in enumerate(chapters):
        if progress:
            progress(i, len(chapters), path.stem)
        t0 = time.perf_counter()
        nb = nbformat.read(path, as_version=4)
        nbclient.NotebookClient(nb, timeout=CHAPTER_TIMEOUT_S, kernel_name="python3",
                                resources={"metadata": {"path": str(BOOK)}}).execute()
        out.append({"chapter": path.name, "seconds": time.perf_counter() - t0})
    if progress:
        progress(len(chapters), len(chapters), "done")
    return out


def register(sub) -> None:
    p = sub.add_parser("warmup", help="compile a workshop's steps into the persistent "
                                      "compilation cache before the day")
    p.add_argument("--book", action="store_true",
                   help="also run every chapter of the book (what they compile is cached)")
    add_json_flag(p)
    p.set_defaults(func=run)


def run(args):
    # the engine (JAX), imported as the command runs: registering it must not start JAX
    from .. import compile_cache
    from ..mesh import emulate  # JAX: as above

    emulate(256)
    where = compile_cache.in_use()
    if where is None:
        raise UsageError(f"the compilation cache is off ({compile_cache.SWITCH}="
                         f"{os.environ.get(compile_cache.SWITCH)}): a warm-up would compile "
                         f"for nothing; unset {compile_cache.SWITCH} and run it again")
    t0 = time.perf_counter()
    with progress_bar("warmup: steps", disable=args.json) as progress:
        steps = compile_steps(workshop_steps(), progress)
    chapters = []
    if args.book:
        with progress_bar("warmup: chapters", disable=args.json) as progress:
            chapters = run_chapters(progress)
    seconds = time.perf_counter() - t0
    obj = {"cache": str(where), "steps": steps, "chapters": chapters, "seconds": seconds}
    lines = [f"compiled into {where}:"] + [
        f"  {s['step']:30s} {s['layout']:12s} {s['phase']:7s} batch {s['batch']:3d}  "
        f"{s['seconds']:6.1f} s" for s in steps] + [
        f"  chapter {c['chapter']:40s} {c['seconds']:6.1f} s" for c in chapters] + [
        f"warm-up took {seconds:.0f} s; later processes on this machine read these steps "
        "back instead of compiling them"]
    return obj, "\n".join(lines)
