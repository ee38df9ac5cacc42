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

from tpuinfer.cli.book import chapters  # noqa: E402

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
def test_every_exercise_is_checked_where_it_is_asked(path):
    """Every labelled exercise NN.k has its answer cell (`answer_k = ...`) and a checked cell
    `bt.check("NN.k", answer_k)` that printed 'correct' in the stored run, after the label;
    the answer key has an entry for it."""
    import answers
    cells = json.loads(path.read_text())["cells"]
    labels = _labels(path)
    assert labels, f"{path.name}: no labelled exercise"
    for number, _ in labels:
        label = f"{path.name[:2]}.{number}"
        asked = next(i for i, c in enumerate(cells) if c["cell_type"] == "markdown"
                     and f"**Exercise {label}" in source(c))
        later = [c for c in cells[asked:] if c["cell_type"] == "code"]
        assert any(re.search(rf"^answer_{number}\s*=", source(c), re.M) for c in later), label
        check = next(c for c in later if f'bt.check("{label}", answer_{number})' in source(c))
        assert source(check).startswith("# NBVAL_CHECK_OUTPUT")
        assert f"exercise {label}: correct" in "".join(text(o.get("text", ""))
                                                       for o in check["outputs"])
        assert label in answers.KEY, f"{label} has no entry in book/answers.py"


def _labels(path) -> list[tuple[str, str | None]]:
    """(number, kind) of each exercise a chapter labels, kind "Derive", "Predict, then run" or
    None, read from its source."""
    md = "\n\n".join(c.source for c in _build.notebook(BOOK / "_src" / (path.stem + ".py")).cells
                       if c.cell_type == "markdown")
    found = [(m.group(1), m.group(2), m.group(3)) for m in _build.EXERCISE.finditer(md)]
    assert all(chapter == path.name[:2] for chapter, _, _ in found), path.name
    return [(number, kind) for _, number, kind in found]


def test_every_chapter_has_exercises_that_need_thought():
    """At least one derivation and one predict-then-run in every chapter, 26 or more in all;
    the answer key has exactly the book's exercises."""
    import answers
    kinds = {p.name[:2]: [kind for _, kind in _labels(p)] for p in CHAPTERS}
    for chapter, found in kinds.items():
        assert "Derive" in found and "Predict, then run" in found, (chapter, found)
    assert sum(k is not None for found in kinds.values() for k in found) >= 26
    labelled = {f"{p.name[:2]}.{n}" for p in CHAPTERS for n, _ in _labels(p)}
    assert labelled == set(answers.KEY)


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


def test_student_checks_give_hints_not_expected_values(tmp_path, capsys, monkeypatch):
    _build.write_student_edition(tmp_path, ["00"])
    assert (tmp_path / "answers.py").exists()
    spec = importlib.util.spec_from_file_location(
        "student_booktools", tmp_path / "booktools.py")
    tools = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tools)
    import answers
    monkeypatch.setitem(answers.KEY, "99.1", (lambda ns: 12345, 1e-6, "count the chips"))
    tools.check("99.1", ...)
    tools.check("99.1", 7)
    tools.check("99.1", 12345)
    printed = capsys.readouterr().out
    assert "12345" not in printed.replace("exercise 99.1: correct", "")
    assert printed.count("Hint: count the chips") == 2 and "exercise 99.1: correct" in printed
    import booktools
    with pytest.raises(AssertionError, match="answer key says 12345"):
        booktools.check("99.1", 7)  # the instructor's edition fails loudly


CHECK_LINE = re.compile(r'^bt\.check\("\d\d\.\d+", answer_\d+\)$')


def _answer_forms(value: str) -> list[str]:
    """How an answer written in a chapter's source (`256`, `2_097_152`, `0.14`, `"wg-xy"`)
    could appear in text: as written, without separators, with thousands commas."""
    value = value.split("#")[0].strip()
    if value[:1] in "'\"":
        return [value.strip("'\"")]
    number = eval(value, {})  # a literal from the book's own sources
    forms = {value, str(number)}
    if isinstance(number, int):
        forms.add(f"{number:,}")
    return sorted(forms)


def test_student_edition_gives_no_answer_away(tmp_path):
    """In the student's edition no worked solution is left, a check cell names only the
    exercise and the answer variable (the library call that computes the expected value is in
    the answer key), and neither a check cell, the key's hint nor the exercise's own question
    contains the answer's value (a question may hold a one-digit number that happens to be
    one)."""
    import answers
    written = _build.write_student_edition(tmp_path)
    for path in written:
        chapter = path.name[:2]
        nb = json.loads(path.read_text())
        assert not any(_build.is_solution(c) for c in nb["cells"]), path.name
        assert not any("**Solution" in source(c) for c in nb["cells"]), path.name
        checks = [c for c in code_cells(path) if "bt.check(" in source(c)]
        for cell in checks:
            lines = [ln for ln in source(cell).splitlines() if not ln.startswith("#")]
            assert all(CHECK_LINE.match(ln) for ln in lines), (path.name, lines)
        instructor = (BOOK / "_src" / (path.stem + ".py")).read_text()
        given = dict(m.group(1, 2) for m in re.finditer(r"^answer_(\d+)\s*=\s*(.+)$",
                                                        instructor, re.M))
        md = {m.group(2): m.start() for c in nb["cells"] if c["cell_type"] == "markdown"
              for m in _build.EXERCISE.finditer(source(c))}
        paragraphs = {n: p for c in nb["cells"] if c["cell_type"] == "markdown"
                      for p in source(c).split("\n\n")
                      for n in [m.group(2) for m in _build.EXERCISE.finditer(p)]}
        for number, value in given.items():
            label = f"{chapter}.{number}"
            places = {"the hint": answers.KEY[label][2],
                      "the question": paragraphs[number]} | {
                f"check cell {i}": source(c) for i, c in enumerate(checks)}
            for form in _answer_forms(value):
                pattern = rf"(?<![\w.,]){re.escape(form)}(?![\w]|[.,]\d)"
                for where, words in places.items():
                    if where == "the question" and len(form) < 2:
                        continue  # a one-digit number in a question gives nothing away
                    assert not re.search(pattern, words), f"{label}'s answer {form} in {where}"
        assert set(md) == set(given), path.name


def test_the_instructors_edition_works_the_derivations_the_students_leaves_out(tmp_path):
    """The worked derivations (the optimal X and the 2D crossover, the weight-gathered
    crossover and N, the decode ridge batch, multiquery's saving and Table 1, the looped
    schedule's exposed time) are cells tagged `solution` in the stored chapters."""
    worked = {p.name[:2]: "".join(source(c) for c in json.loads(p.read_text())["cells"]
                                  if _build.is_solution(c)) for p in CHAPTERS}
    for chapter, words in {"01": ["B = peak·b / (2·bandwidth)", "A100"],
                           "04": ["X = √(n·E/F)", "n > 4F/E"],
                           "05": ["B·L > F·N₁·N₂/n", "N = √(B·L·n/F)"],
                           "06": ["1.84 GiB", "333 positions"],
                           "08": ["exposed = R · max(0, t + h − m)"]}.items():
        for w in words:
            assert w in worked[chapter], (chapter, w)
    student = _build.write_student_edition(tmp_path)
    assert not any(_build.is_solution(c) for p in student
                   for c in json.loads(p.read_text())["cells"])


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


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_outputs_fit_the_page(path):
    """No text output line wider than a front-end shows whole; no code listing printed over
    30 lines (a skeleton or an excerpt instead, `booktools.skeleton`, `booktools.excerpt`)."""
    for cell in code_cells(path):
        for out in cell["outputs"]:
            if PLOTLY in out.get("data", {}):
                continue  # a figure: its plain-text form is shown only where it cannot draw
            printed = text(out.get("text", "")) or text(out.get("data", {}).get("text/plain",
                                                                                 ""))
            wide = [ln for ln in printed.splitlines() if len(ln) > 105]
            assert not wide, f"{path.name}: {wide[0][:60]}… ({len(wide[0])} wide)"
            if "inspect.getsource(" in source(cell):
                assert printed.count("\n") <= 32, f"{path.name}: {source(cell)[:60]}"
