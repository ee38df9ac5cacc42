"""`tpuinfer demo` and the command line's handling of bad input."""
import json
import subprocess
import sys

import pytest

from tpuinfer.cli import main
from tpuinfer.config import get_model
from tpuinfer.cli.demo import DEFAULTS, format_report, planned_layouts, run_demo


@pytest.mark.slow
def test_demo_default_json_tokens_match_reference():
    """The README's main job, exactly as a user runs it (a fresh process, 256 devices)."""
    proc = subprocess.run([sys.executable, "-m", "tpuinfer", "demo", "--json"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["tokens_match"] is True
    assert report["devices"] == 256 and report["mesh"] == [4, 8, 8]
    # the trained model on held-out text: what both runs wrote, as text, the same
    assert report["trained"] and len(report["text"]) == 4
    assert all(len(t["prompt"]) == DEFAULTS["prompt_len"] and t["sharded"] == t["reference"]
               and len(t["sharded"]) >= DEFAULTS["steps"] // 2 for t in report["text"])
    # the layouts the planner chooses for this request, and the compiled steps' collectives
    # equal to the cost model's
    planned = planned_layouts(get_model("tiny"), (4, 8, 8), 256, DEFAULTS["prompt_len"],
                              DEFAULTS["steps"])
    assert [p["layout"] for p in report["phases"]] == [str(x) for x in planned]
    assert all(p["collectives_match"] for p in report["phases"])
    # where the time went, part by part, within the whole
    assert list(report["parts_s"]) == ["plan and parameters", "sharded generation",
                                       "unsharded reference", "reading the compiled steps"]
    assert 0 < sum(report["parts_s"].values()) <= report["wall_s"]


def test_demo_table_on_a_small_mesh_with_given_layouts():
    report = run_demo(mesh="2x2x2", batch=8, prompt_len=4, steps=3, prefill=("ws2d", "heads"),
                      decode=("ws2d", "batch"))
    assert report["tokens_match"]
    text = format_report(report)
    assert "EQUAL to the unsharded reference" in text
    assert "collectives read from the compiled steps EQUAL the cost model's" in text
    # decode by batch: Q to batch-split and back, in each of the 2 layers
    assert "ws2d/batch" in text and "all-to-all x4 (xyz)" in text
    assert "(trained on the project's prose)" in text
    assert text.count("  sharded    '") == text.count("  reference  '") == 4


def test_demo_shows_this_machines_prediction_once_calibrated(tmp_path, monkeypatch):
    from tpuinfer.hardware import HOST_KINDS, HardwareProfile, save_host_profile
    monkeypatch.setenv("TPUINFER_CACHE", str(tmp_path))
    save_host_profile(HardwareProfile(
        name="host", description="made up", peak_flops=1e11, hbm_bytes=2**34,
        hbm_bandwidth=1e10, interconnect="host", link_bandwidth=0.0, hop_latency_s=0.0,
        device_overhead_s=2e-5, rule="sum",
        host_collectives=tuple((k, 1e-4, 1e-5, 1e-7, 1e-10) for k in HOST_KINDS)))
    report = run_demo(mesh="2x2x2", batch=8, prompt_len=4, steps=2, prefill=("ws2d", "heads"),
                      decode=("ws2d", "heads"))
    assert all(p["host_step_s"] > 0 for p in report["phases"])
    text = format_report(report)
    assert "host s*" in text and "on this machine (the host profile" in text


def test_bad_mesh_gives_a_clear_error_and_exit_code(capsys):
    given = ["--prefill", "ws2d", "heads", "--decode", "ws2d", "heads"]
    assert main(["demo", "--mesh", "3x1x1", "--batch", "3", "--json", *given]) == 2
    out, err = capsys.readouterr()
    assert "E=256 does not divide by X·Y·Z=3" in json.loads(out)["error"]
    assert "error: E=256" in err
    # without layouts the planner is asked, and says what TPU v4 chip counts exist
    assert main(["demo", "--mesh", "3x1x1", "--batch", "3"]) == 2
    assert "tpu-v4 has no mesh of 3 chips" in capsys.readouterr().err


def test_malformed_mesh_is_refused(capsys):
    assert main(["demo", "--mesh", "4by8"]) == 2
    assert "is not XxYxZ" in capsys.readouterr().err


def test_a_user_error_is_one_line_and_exit_2(capsys):
    assert main(["plan", "--model", "no-such-model", "--json"]) == 2
    out, err = capsys.readouterr()
    assert "unknown model 'no-such-model'" in json.loads(out)["error"]
    assert err.count("\n") == 1 and "Traceback" not in err


def test_an_internal_error_keeps_its_traceback(monkeypatch):
    """A bug (here a KeyError) or an XLA failure is not a user error: it propagates out of
    `main`, so Python prints its traceback and exits 1."""
    from tpuinfer.cli import plan

    def broken(args):
        raise KeyError("a bug")
    monkeypatch.setattr(plan, "run_plan", broken)
    with pytest.raises(KeyError, match="a bug"):
        main(["plan", "--model", "palm-8b"])
