"""`tpuinfer demo` and the command line's handling of bad input."""
import json
import subprocess
import sys

import pytest

from tpuinfer.cli import main
from tpuinfer.demo import format_report, run_demo


@pytest.mark.slow
def test_demo_default_json_tokens_match_reference():
    """The README's main job, exactly as a user runs it (a fresh process, 256 devices)."""
    proc = subprocess.run([sys.executable, "-m", "tpuinfer", "demo", "--json"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["tokens_match"] is True
    assert report["devices"] == 256 and report["mesh"] == [4, 8, 8]
    assert [p["layout"] for p in report["phases"]] == ["ws2d/heads", "ws2d/batch"]
    assert report["wall_s"] > 0


def test_demo_table_on_a_small_mesh():
    report = run_demo(mesh="2x2x2", batch=8, prompt_len=4, steps=3)
    assert report["tokens_match"]
    text = format_report(report)
    assert "EQUAL to the unsharded reference" in text
    assert "ws2d/batch" in text and "all-to-all x4 (zyx)" in text


def test_bad_mesh_gives_a_clear_error_and_exit_code(capsys):
    assert main(["demo", "--mesh", "3x1x1", "--batch", "3", "--json"]) == 2
    out, err = capsys.readouterr()
    assert "E=256 does not divide by X·Y·Z=3" in json.loads(out)["error"]
    assert "error: E=256" in err


def test_malformed_mesh_is_refused(capsys):
    assert main(["demo", "--mesh", "4by8"]) == 2
    assert "is not XxYxZ" in capsys.readouterr().err
