"""The book's chapters as stored: built from their sources, executed, readable without a
kernel, small. (nbval runs them: `pytest` collects book/ with --nbval-lax.)"""
import importlib.util
import json
import pathlib
import re
import sys

import jupytext
import pytest

BOOK = pathlib.Path(__file__).resolve().parents[1] / "book"
sys.path.insert(0, str(BOOK))
import _build  # noqa: E402  (book/_build.py: the chapters' generator)

from tpuinfer.book_cli import chapters  # noqa: E402

CHAPTERS = chapters()
FIRST_CELL = "import tpuinfer as ti\nti.emulate(256)"
PLOTLY = "application/vnd.plotly.v1+json"


def code_cells(path):
    return [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]


def text(value):
    """A notebook string field, stored as one string or as a list of lines."""
    return value if isinstance(value, str) else "".join(value)


def source(cell):
    return text(cell["source"])


def test_the_book_has_its_fifteen_chapters():
    assert [p.name[:2] for p in CHAPTERS] == [f"{i:02d}" for i in range(15)]


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
    assert printed.count(": correct") >= 3


def test_student_edition_has_no_answers(tmp_path):
    """`python book/_build.py --student DIR` (not run: cheap) empties every answer, keeps the
    checks, and ships booktools.py in hint mode; none of the instructor's answers leaks."""
    written = _build.write_student_edition(tmp_path)
    assert [p.name for p in written] == [p.name for p in CHAPTERS]
    assert "\nSTUDENT = True\n" in (tmp_path / "booktools.py").read_text()
    for path in written:
        instructor = (BOOK / "_src" / (path.stem + ".py")).read_text()
        answers = dict(m.group(1, 2) for m in
                       re.finditer(r"^(answer_\w+)\s*=\s*(.+)$", instructor,
                                                 re.MULTILINE))
        assert len(answers) >= 3, f"{path.name}: fewer than three exercises"
        cells = code_cells(path)
        assert all(not c["outputs"] for c in cells), f"{path.name}: outputs leak answers"
        emptied = [line for c in cells for line in source(c).splitlines()
                   if line.startswith("answer_")]
        assert sorted(line.split("=")[0].strip() for line in emptied) == sorted(answers)
        for line in emptied:
            name, value = line.split("=", 1)
            assert value.strip() == "...  # your answer", f"{path.name}: {line}"
            assert answers[name.strip()].split("#")[0].strip() not in value


def test_student_checks_give_hints_not_expected_values(tmp_path, capsys):
    _build.write_student_edition(tmp_path, ["00"])
    spec = importlib.util.spec_from_file_location(
        "student_booktools", tmp_path / "booktools.py")
    tools = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tools)
    tools.check("exercise 1", ..., 12345, hint="count the chips")
    tools.check("exercise 2", 7, 12345, hint="count the chips")
    tools.check("exercise 3", 12345, 12345)
    printed = capsys.readouterr().out
    assert "12345" not in printed.replace("exercise 3: correct", "")
    assert printed.count("Hint: count the chips") == 2 and "exercise 3: correct" in printed


def test_book_command_writes_the_student_edition(tmp_path, capsys):
    from tpuinfer.cli import main
    assert main(["book", "--student", str(tmp_path), "00", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["chapters"] == ["00_welcome.ipynb"]
    assert (tmp_path / "booktools.py").exists()


def _markdown(path):
    return "".join(source(c) for c in json.loads(path.read_text())["cells"]
                   if c["cell_type"] == "markdown")


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_is_a_lesson(path):
    """Objectives first, a recap before the exercises, the paper linked, 3 to 5 exercises."""
    md = _markdown(path)
    assert "**After this chapter you can**" in md
    assert "## Recap" in md and md.index("## Recap") < md.index("## Exercises")
    assert "https://arxiv.org/abs/2211.05102" in md
    answers = {line.split("=")[0].strip() for c in code_cells(path)
               for line in source(c).splitlines() if line.startswith("answer_")}
    assert 3 <= len(answers) <= 5


def test_the_book_has_a_dozen_exercises_that_need_thought():
    """Derivations and predict-then-run exercises, as the exercise lists mark them."""
    marked = sum(len(re.findall(r"^# \d\. \*\*(Derive|Predict)", (BOOK / "_src" /
                                                                  (p.stem + ".py")).read_text(),
                                re.MULTILINE)) for p in CHAPTERS)
    assert marked >= 12
