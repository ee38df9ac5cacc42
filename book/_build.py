"""Build the book: turn each chapter's source in book/_src/ into book/NN_name.ipynb and run it.

A chapter's source is a plain Python file in jupytext's percent format, paired with its
notebook (its header: `formats: ipynb,_src//py:percent`): `# %%` starts a code cell,
`# %% [markdown]` a markdown cell whose lines are commented with `# `. jupytext reads it. Sources
diff and review like code; the notebooks are what readers open and what nbval runs, so they are
stored executed, with their outputs. The notebooks carry no jupytext metadata: a notebook
opened in a JupyterLab with jupytext would otherwise be synced with (and refused when older
than) its source, mid-workshop.

    .venv/bin/python book/_build.py              # write and run every chapter
    .venv/bin/python book/_build.py 03 05        # only the chapters whose names start so
    .venv/bin/python book/_build.py --no-run 03  # write without running (outputs dropped)
    .venv/bin/python book/_build.py --student DIR  # the student's edition: answers emptied
    .venv/bin/python book/_build.py --html OUT     # the static site, from the stored notebooks

The student's edition is written from the sources without running them: every line of a code
cell that assigns an answer (`answer_3 = 256`, at the start of a line) becomes
`answer_3 = ...  # your answer`, every cell tagged `solution` (a worked derivation: in the
source, `# %% [markdown] tags=["solution"]`) is left out, and DIR gets the answer key
(answers.py) and a copy of booktools.py whose checks print the exercise's hint instead of the
expected value. The instructor's edition (book/*.ipynb) keeps the answers and the worked
solutions, so that nbval checks them.

Exercises are labelled where they are asked, `**Exercise 04.1 · Derive.**`,
`**Exercise 04.3 · Predict, then run.**` or `**Exercise 04.4.**` at the start of a markdown
line (`EXERCISE` below), and checked by `bt.check("04.1", answer_1)`, whose expected value the
answer key computes.

Each notebook runs in a fresh kernel with book/ as its working directory (as nbval and
JupyterLab run it), so `import booktools` finds book/booktools.py.
"""
from __future__ import annotations

import argparse
import pathlib
import re
import shutil
import sys
import time
from datetime import datetime

import jupytext
import nbformat

BOOK = pathlib.Path(__file__).resolve().parent
SOURCES = BOOK / "_src"


def notebook(path: pathlib.Path) -> nbformat.NotebookNode:
    """The chapter's notebook as jupytext reads its source, without outputs."""
    nb = jupytext.read(path, fmt="py:percent")
    nb.metadata = {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                  "language": "python"},
                   "language_info": {"name": "python"}}
    # Cell ids from the position, so that rebuilding an unchanged chapter changes nothing.
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"{path.stem[:2]}-{i:03d}"
    return nb


def run(nb: nbformat.NotebookNode, timeout: int) -> list[tuple[float, int]]:
    """Execute in place; return (seconds, cell index) of the slowest code cells. The timing
    metadata is taken out again, so that an unchanged chapter rebuilds unchanged."""
    from nbclient import NotebookClient  # optional: only to run (the tests only read)

    # store_widget_state=False: a plotly FigureWidget's state carries plotly.js (4.9 MB); each
    # widget cell is followed by a `snapshot()` of its figure, which a reader without a kernel sees.
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", record_timing=True,
                            store_widget_state=False,
                            resources={"metadata": {"path": str(BOOK)}})
    try:
        client.execute()
    finally:
        took = []
        for i, cell in enumerate(nb.cells):
            t = cell.get("metadata", {}).pop("execution", None)
            if t and "shell.execute_reply" in t and "iopub.execute_input" in t:
                took.append((_seconds(t["shell.execute_reply"])
                             - _seconds(t["iopub.execute_input"]), i))
    return sorted(took, reverse=True)[:3]


WIDGET = "application/vnd.jupyter.widget-view+json"
LIVE_ONLY = ("<a live widget: run the chapter to use it; the cell below stores a snapshot of its "
             "plot>")


def keep_readable(nb: nbformat.NotebookNode) -> None:
    """A widget's stored output is a reference to a model that only a running kernel holds
    (its state is not stored: see `run`); opened without one, viewers show an error in its
    place. Store a plain line saying what is there instead."""
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if WIDGET in out.get("data", {}):
                out["data"] = {"text/plain": LIVE_ONLY}


ANSWER = re.compile(r"^(answer_\w+)\s*=.*$", re.MULTILINE)
EXERCISE = re.compile(r"^\*\*Exercise (\d\d)\.(\d+)(?: · (Derive|Predict, then run))?\.\*\*",
                      re.MULTILINE)
SOLUTION = "solution"  # the cell tag of a worked solution (the instructor's edition only)


def is_solution(cell) -> bool:
    return SOLUTION in cell.get("metadata", {}).get("tags", [])


def student_notebook(path: pathlib.Path) -> nbformat.NotebookNode:
    """The chapter as a student gets it: no outputs, no worked solutions, every answer
    assignment emptied."""
    nb = notebook(path)
    nb.cells = [cell for cell in nb.cells if not is_solution(cell)]
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.source = ANSWER.sub(r"\1 = ...  # your answer", cell.source)
    return nb


def write_student_edition(target: pathlib.Path, chapters=()) -> list[pathlib.Path]:
    """Write the student's edition of the chapters (all, or those whose names start with one
    of `chapters`) into `target`, with booktools.py in hint mode and the workshop guide."""
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for src in sorted(SOURCES.glob("[0-9][0-9]_*.py")):
        if chapters and not src.name.startswith(tuple(chapters)):
            continue
        out = target / (src.stem + ".ipynb")
        nbformat.write(student_notebook(src), out)
        written.append(out)
    tools = (BOOK / "booktools.py").read_text()
    assert "\nSTUDENT = False\n" in tools, "booktools.py lost its STUDENT switch"
    (target / "booktools.py").write_text(tools.replace("\nSTUDENT = False\n",
                                                       "\nSTUDENT = True\n"))
    for name in ("answers.py", "README.md", "WORKSHOP.md"):
        if (BOOK / name).exists():
            shutil.copy(BOOK / name, target / name)
    return written


def _seconds(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("chapters", nargs="*", help="name prefixes, e.g. 03 (default: all)")
    parser.add_argument("--no-run", action="store_true", help="write without executing")
    parser.add_argument("--timeout", type=int, default=600, help="seconds per cell")
    parser.add_argument("--student", metavar="DIR", type=pathlib.Path,
                        help="write the student's edition (answers emptied, checks give "
                             "hints) into DIR, without running it")
    parser.add_argument("--html", metavar="OUT", type=pathlib.Path,
                        help="write the static site (every chapter as a page, the explorable "
                             "cost-model figures) into OUT, from the stored notebooks")
    args = parser.parse_args(argv)
    if args.html:
        import _site  # book/ is on the path: this file's folder
        return _site.main(args.html)
    if args.student:
        written = write_student_edition(args.student, args.chapters)
        print(f"student edition: {len(written)} chapters and booktools.py in {args.student}")
        return 0 if written else 2
    sources = sorted(p for p in SOURCES.glob("[0-9][0-9]_*.py")
                     if not args.chapters or p.name.startswith(tuple(args.chapters)))
    if not sources:
        print(f"no chapter source matches {args.chapters} in {SOURCES}", file=sys.stderr)
        return 2
    failed = []
    for src in sources:
        out = BOOK / (src.stem + ".ipynb")
        nb = notebook(src)
        t0 = time.perf_counter()
        slowest = []
        try:
            if not args.no_run:
                slowest = run(nb, args.timeout)
                keep_readable(nb)
        except Exception as err:  # a cell failed or the kernel died: keep what ran, to
            # read the error in place
            failed.append(out.name)
            print(f"{out.name}: a cell failed\n{str(err)[:2000]}", file=sys.stderr)
        nbformat.write(nb, out)
        print(f"{out.relative_to(BOOK.parent)}: {len(nb.cells)} cells, "
              f"{out.stat().st_size / 1e6:.2f} MB, {time.perf_counter() - t0:.0f} s; slowest "
              + ", ".join(f"cell {i} {s:.0f} s" for s, i in slowest), flush=True)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
