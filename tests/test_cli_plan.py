"""`tpuinfer plan`, `pareto`, `max-context` and `paper` on the command line."""
import json
import subprocess
import sys

import pytest

from tpuinfer.cli import main

PHASE_KEYS = {"mesh", "ffn", "attention", "looped", "bidirectional", "padded_heads", "latency_s",
              "mfu", "memory_per_chip_bytes", "fits", "terms"}
TERM_KEYS = {"compute_s", "weights_s", "kv_s", "comm_s"}
LL_PREFILL = ["plan", "--model", "palm-540b", "--hardware", "tpu-v4", "--chips", "64",
              "--batch", "1", "--input-len", "2048", "--history-len", "0", "--gen-len", "0",
              "--weights", "int8", "--ffn", "auto", "--attention", "auto"]


def run_json(capsys, argv):
    assert main(argv + ["--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_plan_json_has_the_contracted_keys(capsys):
    out = run_json(capsys, ["plan", "--model", "palm-540b-64heads", "--chips", "64",
                            "--batch", "64", "--input-len", "128", "--history-len", "1920",
                            "--gen-len", "64", "--weights", "int8"])
    assert {"model", "hardware", "chips", "batch", "weights", "prefill", "decode",
            "total_latency_s", "mfu", "fits"} <= set(out)
    assert (out["model"], out["hardware"], out["chips"], out["batch"], out["weights"]) == (
        "palm-540b-64heads", "tpu-v4", 64, 64, "int8")
    for phase in ("prefill", "decode"):
        assert PHASE_KEYS <= set(out[phase]) and set(out[phase]["terms"]) == TERM_KEYS
        assert len(out[phase]["mesh"]) == 3 and out[phase]["fits"] is True
    assert out["decode"]["per_token_s"] == pytest.approx(out["decode"]["latency_s"] / 64)
    assert out["total_latency_s"] == pytest.approx(out["prefill"]["latency_s"]
                                                   + out["decode"]["latency_s"])


def test_plan_low_latency_prefill_picks_2d_by_heads_and_no_decode(capsys):
    out = run_json(capsys, LL_PREFILL)
    assert out["decode"] is None
    assert (out["prefill"]["ffn"], out["prefill"]["attention"]) == ("ws2d", "heads")
    assert out["prefill"]["latency_s"] <= 0.29  # the datasheet chip beats no measurement
    assert out["mfu"] == pytest.approx(out["prefill"]["mfu"])


def test_plan_text_is_a_table_with_the_runner_up(capsys):
    assert main(LL_PREFILL) == 0
    text = capsys.readouterr().out
    assert "phase" in text and "prefill" in text and "ws2d" in text
    assert "runner-up" in text and "configurations weighed" in text
    assert "schedule" in text and "heads padded from 48 to 64" in text


def test_plan_pads_palm_540b_heads_and_no_pad_forbids_it(capsys):
    # the request: PaLM 540B as typed, batch 1 prefill on 64 chips (Table 2)
    out = run_json(capsys, LL_PREFILL)
    assert out["prefill"]["padded_heads"] == 64 and out["prefill"]["ffn"] == "ws2d"
    assert main(LL_PREFILL[:-4] + ["--ffn", "ws2d", "--attention", "heads", "--no-pad"]) == 2
    assert "H=48 does not divide" in capsys.readouterr().err
    # without padding nothing runs a batch of 1 on 64 chips (the weight-gathered layouts,
    # whose heads split over y·z only, split the batch over x): the error says to pad
    assert main(LL_PREFILL + ["--no-pad"]) == 2
    assert "pad the heads" in capsys.readouterr().err
    out = run_json(capsys, [a if a != "1" else "4" for a in LL_PREFILL] + ["--no-pad"])
    assert out["prefill"]["padded_heads"] is None and out["prefill"]["ffn"].startswith("wg")


def test_plan_looped_flag_restricts_the_schedules(capsys):
    out = {looped: run_json(capsys, LL_PREFILL + ["--looped", looped])["prefill"]
           for looped in ("no", "yes", "auto")}
    assert (out["no"]["looped"], out["no"]["bidirectional"]) == (False, False)
    assert out["yes"]["looped"] is True and out["yes"]["schedule"].startswith("looped")
    # auto weighs both and keeps the faster
    assert out["auto"]["latency_s"] == min(out["no"]["latency_s"], out["yes"]["latency_s"])


def test_explicit_layout_that_does_not_fit_is_still_priced(capsys):
    # PaLM 540B in bf16 on 16 chips: 67 GB per chip of weights alone; auto refuses, ws2d prices
    argv = ["plan", "--model", "palm-540b", "--chips", "16", "--batch", "1", "--input-len",
            "2048", "--gen-len", "0", "--weights", "bf16"]
    assert main(argv) == 2 and "nothing fits in memory" in capsys.readouterr().err
    out = run_json(capsys, argv + ["--ffn", "ws2d", "--attention", "heads"])
    assert out["prefill"]["fits"] is False and out["fits"] is False
    assert "GiB per chip" in out["prefill"]["unfit_reason"] and out["prefill"]["latency_s"] > 0


def test_plan_with_fixed_layouts_and_mesh(capsys):
    out = run_json(capsys, LL_PREFILL[:-4] + ["--ffn", "ws1d", "--attention", "heads",
                                               "--mesh", "2x4x8"])
    assert (out["prefill"]["ffn"], out["prefill"]["mesh"]) == ("ws1d", [2, 4, 8])


@pytest.mark.parametrize("argv,message", [
    (["plan", "--model", "gpt-5"], "unknown model 'gpt-5'; choose one of tiny"),
    (["plan", "--model", "palm-8b", "--hardware", "tpu-v9"], "unknown hardware 'tpu-v9'"),
    (["plan", "--model", "palm-8b", "--chips", "12"], "no mesh of 12 chips.*try 8 or 16"),
    (["plan", "--model", "palm-540b-64heads", "--attention", "batch", "--batch", "1",
      "--input-len", "0"], "batch B=1 cannot be split over"),
    (["plan", "--model", "palm-540b-64heads", "--chips", "8"], "nothing fits in memory"),
    (["plan", "--model", "palm-8b", "--weights", "int4"], "unknown weight format 'int4'"),
    (["max-context", "--model", "palm-540b", "--batch", "100"], "multiple of 64"),
    (["pareto", "--model", "palm-540b", "--chips", "4,8"], "does not fit on any"),
])
def test_bad_input_exits_2_with_a_clear_message(capsys, argv, message):
    import re
    assert main(argv) == 2
    assert re.search(message, capsys.readouterr().err)
    assert main(argv + ["--json"]) == 2
    assert re.search(message, json.loads(capsys.readouterr().out)["error"])


def test_host_profile_absent_says_run_calibrate(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("TPUINFER_CACHE", str(tmp_path))
    assert main(["plan", "--model", "tiny", "--hardware", "host"]) == 2
    assert "run `tpuinfer calibrate`" in capsys.readouterr().err


def test_max_context_json(capsys):
    out = run_json(capsys, ["max-context", "--model", "palm-540b", "--chips", "64", "--batch",
                            "128", "--attention-variant", "multiquery-batch",
                            "--kv-fraction", "0.3"])
    assert out["max_context"] == 42653
    assert out["kv_bytes_per_position_per_chip"] == 2 * 118 * 256 * 2 * 128 / 64


def test_pareto_json(capsys):
    out = run_json(capsys, ["pareto", "--model", "palm-8b", "--chips", "4,8", "--batches",
                            "1,64", "--input-len", "128", "--gen-len", "8"])
    assert out["prefill"] and out["decode"]
    assert {"chips", "batch", "mesh", "ffn", "attention", "looped", "bidirectional",
            "latency_s", "cost_chip_s_per_token", "mfu"} <= set(out["decode"][0])


def test_paper_text_and_json(capsys):
    assert main(["paper"]) == 0
    text = capsys.readouterr().out
    assert "low-latency decode" in text and "tpu-v4-calibrated" in text
    assert "same layout" in text and "NO" not in text  # every column: the paper's layouts
    out = run_json(capsys, ["paper"])
    assert any(r["result"].startswith("headline: context") for r in out["rows"])
    # each Table 2 column on its own, prefill and decode apart, with the error
    assert [c["phase"] for c in out["table2"]] == ["prefill", "decode"] * 2
    assert all("error" in c["tpu-v4-calibrated"] for c in out["table2"])


def test_python_m_tpuinfer_plan_json():
    done = subprocess.run([sys.executable, "-m", "tpuinfer"] + LL_PREFILL + ["--json"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["prefill"]["ffn"] == "ws2d" and out["decode"] is None
