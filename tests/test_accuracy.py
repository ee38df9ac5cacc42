"""The accuracy board: every public measurement with its source, the calibrated profiles pinned
to the rows their fits used, and the held-out rows priced against the bounds the issue set
(tpuinfer/data/measurements.json, tpuinfer.accuracy, benchmarks/fit_*.py)."""
import importlib.util
import json
import statistics
from pathlib import Path

import numpy as np
import pytest

from tpuinfer import accuracy
from tpuinfer.cli import main
from tpuinfer.hardware import get_hardware

BENCHMARKS = Path(__file__).parents[1] / "benchmarks"
FITS = {"tpu-v4-calibrated": "fit_calibrated.py", "tpu-v5e-calibrated": "fit_v5e.py",
        "h100-calibrated": "fit_h100.py"}


@pytest.fixture(scope="module")
def board():
    return accuracy.board()


def _held_out(board, family, prefix=""):
    return [r for r in board["rows"] if r["family"] == family and r["held_out"]
            and r["id"].startswith(prefix)]


# ---- the data file ---------------------------------------------------------------------------
def test_every_row_names_its_source_configuration_and_fit():
    rows = accuracy.rows()
    assert len({r.id for r in rows}) == len(rows) == 41
    for r in rows:
        assert r.source and r.system and r.measured > 0
        assert {"model", "chips", "batch", "weights"} <= set(r.config)
    assert all("arXiv 2211.05102" in r.source for r in accuracy.rows("tpu-v4"))
    assert all("jax-llm-examples" in r.source for r in accuracy.rows("tpu-v5e"))
    assert all("docs.nvidia.com" in r.source for r in accuracy.rows("h100"))


def test_each_fit_uses_exactly_the_rows_it_was_given():
    """tpu-v5e-calibrated: the three 16-chip rows at 2048 tokens the issue names (6.29, 9.26,
    25.4 ms); tpu-v4-calibrated: Table 2's four columns; h100-calibrated: two NIM rows."""
    fitted = {name: sorted((r.id, r.measured) for r in accuracy.rows(fitted_by=name))
              for name in FITS}
    assert [(i, round(m * 1e3, 2)) for i, m in fitted["tpu-v5e-calibrated"]] == [
        ("llama70b-v5e16-tp16-b128-ctx2048", 25.45), ("llama70b-v5e16-tp16-b32-ctx2048", 9.26),
        ("llama70b-v5e16-tp16-b8-ctx2048", 6.29)]
    assert [i for i, _ in fitted["tpu-v4-calibrated"]] == [
        f"palm540b-table2-{c}" for c in ("ht-decode", "ht-prefill", "ll-decode", "ll-prefill")]
    assert [i for i, _ in fitted["h100-calibrated"]] == [
        "llama70b-h100x2-isl5000-osl500-c1", "llama70b-h100x2-isl5000-osl500-c50"]
    assert len([r for r in accuracy.rows() if r.held_out]) == 32


# ---- the fits, pinned ------------------------------------------------------------------------
def _script(path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", list(FITS))
def test_calibrated_constants_are_the_fits_least_squares(name):
    """The profile's constants are where its fit script lands: each fitted row within 3%, and
    moving any constant 3% either way (up from a bound) makes the fit worse."""
    import sys
    sys.path.insert(0, str(BENCHMARKS))
    fit = _script(BENCHMARKS / FITS[name])
    _fit = sys.modules["_fit"]
    cal = get_hardware(name)
    params = np.array([getattr(cal, n) for n in fit.NAMES])
    res = _fit.residuals(name, fit.NAMES, params)
    assert len(fit.NAMES) <= 3 and np.max(np.abs(res)) < 0.03
    best = float(np.sum(res**2))
    for i, lower in enumerate(fit.LOWER):
        for step in (0.97, 1.03):
            moved = params.copy()
            moved[i] = moved[i] * step if moved[i] > lower else 1e-8 * step
            if moved[i] < lower:
                continue
            assert np.sum(_fit.residuals(name, fit.NAMES, moved)**2) >= best - 1e-9, \
                (fit.NAMES[i], step)


# ---- what the held-out rows show -------------------------------------------------------------
def test_v5e_held_out_rows_within_20_percent_median_10(board):
    """Every 16-chip and 2 x 8-chip row but the three fitted: int8 KV, tpu-v5e-calibrated."""
    rows = _held_out(board, "tpu-v5e")
    assert len(rows) == 21
    errors = [abs(r["error_calibrated"]) for r in rows]
    assert max(errors) < 0.20 and statistics.median(errors) <= 0.10


def test_palm_62b_table_as_the_paper_ran_it_within_30_percent(board):
    rows = _held_out(board, "tpu-v4", "palm62b")
    assert len(rows) == 4
    assert all(abs(r["error_calibrated"]) < 0.30 for r in rows)


def test_h100_held_out_rows_within_20_percent(board):
    assert all(abs(r["error_calibrated"]) < 0.20 for r in _held_out(board, "h100"))


def test_board_summary_is_each_familys_median_and_worst(board):
    for family, s in board["families"].items():
        errors = [abs(r["error_calibrated"]) for r in _held_out(board, family)]
        assert s["calibrated_held_out"] == {"rows": len(errors),
                                            "median": statistics.median(errors),
                                            "worst": max(errors)}


def test_accuracy_command_prints_every_row_with_its_source(capsys):
    assert main(["accuracy", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["rows"]) == 41 and all(r["source"] for r in out["rows"])
    assert set(out["families"]) == {"tpu-v4", "tpu-v5e", "h100"}
    assert main(["accuracy"]) == 0
    text = capsys.readouterr().out
    assert "llama70b-v5e16-dp2-tp8-b128-ctx2048" in text and "held out" in text
    assert "tpu-v5e-calibrated: 21 held-out rows" in text
