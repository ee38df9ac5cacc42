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

Each notebook runs in a fresh kernel with book/ as its working directory (as nbval and
JupyterLab run it), so `import booktools` finds book/booktools.py.
"""
from __future__ import annotations

import argparse
import pathlib
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


def _seconds(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("chapters", nargs="*", help="name prefixes, e.g. 03 (default: all)")
    parser.add_argument("--no-run", action="store_true", help="write without executing")
    parser.add_argument("--timeout", type=int, default=600, help="seconds per cell")
    args = parser.parse_args(argv)
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
