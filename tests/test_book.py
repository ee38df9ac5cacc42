"""The book's chapters as stored: built from their sources, executed, readable without a
kernel, small. (nbval runs them: `pytest` collects book/ with --nbval-lax.)"""
import json
import pathlib
import sys

import jupytext
import pytest

BOOK = pathlib.Path(__file__).resolve().parents[1] / "book"
sys.path.insert(0, str(BOOK))
import _build  # noqa: E402  (book/_build.py: the chapters' generator)

CHAPTERS = sorted(BOOK.glob("[0-9][0-9]_*.ipynb"))
FIRST_CELL = "import tpuinfer as ti\nti.emulate(256)"
PLOTLY = "application/vnd.plotly.v1+json"


def code_cells(path):
    return [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]


def text(value):
    """A notebook string field, stored as one string or as a list of lines."""
    return value if isinstance(value, str) else "".join(value)


def source(cell):
    return text(cell["source"])


def test_the_book_has_its_twelve_chapters():
    assert [p.name[:2] for p in CHAPTERS] == [f"{i:02d}" for i in range(12)]


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_matches_its_source(path):
    """The notebook holds exactly the cells book/_src/ generates: edit the source, then run
    book/_build.py, never the notebook alone."""
    built = _build.notebook(BOOK / "_src" / (path.stem + ".py"))
    stored = jupytext.read(path)
    assert [(c.cell_type, c.source, c.get("id")) for c in built.cells] == \
        [(c.cell_type, c.source, c.get("id")) for c in stored.cells]


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_starts_with_emulate_and_was_run(path):
    cells = code_cells(path)
    assert source(cells[0]) == FIRST_CELL
    assert all(c["execution_count"] for c in cells), "run book/_build.py to store outputs"
    assert not [o for c in cells for o in c["outputs"] if o["output_type"] == "error"]


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_is_small_and_every_plot_is_stored(path):
    """Under 5 MB with plotly.js left out; every figure stored as plotly JSON; every widget
    followed by a stored snapshot of its figure (a reader without a kernel sees it)."""
    assert path.stat().st_size < 5e6
    assert "plotly.js v" not in path.read_text()[:10**7]  # the library itself never embedded
    cells = code_cells(path)
    for i, cell in enumerate(cells):
        shown = [o.get("data", {}) for o in cell["outputs"]]
        if any(text(d.get("text/plain", "")) == _build.LIVE_ONLY for d in shown):
            later = {k for o in cells[i + 1]["outputs"] for k in o.get("data", {})}
            assert PLOTLY in later, f"widget in cell {i} has no snapshot after it"
        assert not any(_build.WIDGET in d for d in shown), "a widget output left as a reference"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_ends_with_checked_exercises(path):
    last = code_cells(path)[-1]
    assert source(last).startswith("# NBVAL_CHECK_OUTPUT")
    assert "bt.check(" in source(last)
    printed = "".join(text(o.get("text", "")) for o in last["outputs"])
    assert printed.count(": correct") >= 3 or "needs Looped" in printed
