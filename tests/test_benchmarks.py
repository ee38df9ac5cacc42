"""Benchmark scripts that must stay runnable where their hardware is missing."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).parents[1] / "benchmarks"


def test_bench_gpu_runs_on_the_cpu_and_says_so():
    """No GPU here: the script runs the package's steps on the CPU, small, with a note, and
    prints every figure it prints on a GPU (the targets beside them)."""
    env = {k: v for k, v in os.environ.items() if k != "JAX_NUM_CPU_DEVICES"}
    proc = subprocess.run(
        [sys.executable, str(BENCHMARKS / "bench_gpu.py"), "--model", "tiny", "--context", "16",
         "--prompt", "8", "--hbm-mib", "16", "--matmul", "256", "--repeats", "2",
         "--hardware", "tpu-v4"],
        capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "no GPU here" in out
    for figure in (r"HBM read [\d.]+ GB/s", r"decode, batch 1, bf16: [\d.]+ ms",
                   r"decode, batch 1, int8: [\d.]+ ms", r"int8's speed-up over bf16 at batch 1: "
                   r"[\d.]+x \(target >= 1\.6x\)", r"= \d+% of the matmul rate",
                   r"tpu-v4 predicted [\d.]+ ms"):
        assert re.search(figure, out), (figure, out)


def test_bench_drift_rules_scores_each_rule_on_the_same_saved_steps(tmp_path):
    """Two steps of one group saved as `bench_measure.py sweep --save` keeps them: the rules'
    factors come from the saved readings (beside: the step's two; window: the last five),
    every pass is scored with its own factor, and the table says which rule met the group."""
    import json
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import bench_drift_rules as rules
    finally:
        sys.path.remove(str(BENCHMARKS))

    def step(readings, measured_s):  # the model's time 10 ms, the live rule's factor 1
        return {"measured_s": measured_s, "predicted_s": 0.010, "drift": 1.0,
                "readings": readings}
    # the probe took 4 ms at calibration; beside the second step's first pass it read 4 and
    # 20 ms (one slow reading), and that pass took 10 ms: beside says 12 ms (x3), the window
    # 4 ms (x1); its second pass took 11 ms beside two readings of 4 ms (x1 by both rules)
    group = "2x2x2 decode"
    saved = {"host_profile": {"probe_s": 0.004}, "configurations": [
        {"group": group, "passes": [step([[0.0, 0.004], [1.0, 0.004]], 0.010)]},
        {"group": group, "passes": [step([[2.0, 0.004], [3.0, 0.020]], 0.010),
                                    step([[4.0, 0.004], [5.0, 0.004]], 0.011)]}]}
    path = tmp_path / "run1.json"
    path.write_text(json.dumps(saved))
    f = rules.factors(saved["configurations"])
    assert f[(1, 0)] == {"beside": 0.012, "window": 0.004}
    assert f[(1, 1)]["window"] == 0.004  # the last five: 4, 4, 20, 4, 4 ms
    scores = rules.score(str(path))
    # both passes count: predicted / measured 3 (30 ms against 10) and 10/11, geometric mean
    # sqrt(30/11) = 1.65
    (_, beside), (_, window) = (scores[r]["groups"][group] for r in ("beside", "window"))
    assert beside == pytest.approx((30 / 11) ** 0.5 - 1)
    assert window == pytest.approx(1 - (10 / 11) ** 0.5)
    assert scores["beside"]["groups"][group][0] == pytest.approx(beside / 2)  # with the 0% step
    assert (scores["window"]["met"], scores["beside"]["met"]) == (True, False)


def test_bench_pass_statistic_scores_every_pass_against_the_fastest(tmp_path):
    """One step saved in two passes: the fastest (10 ms, predicted 15 ms: its probe read
    slow) is 50% off; every pass counted (the other 12 ms, predicted 11 ms) gives the geometric
    mean of 1.5 and 11/12, 17% off; `bench_measure.over_passes` gives the same figures."""
    import json
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import bench_measure
        import bench_pass_statistic as stat
    finally:
        sys.path.remove(str(BENCHMARKS))
    passes = [{"measured_s": 0.010, "predicted_s": 0.015, "drift": 1.5},
              {"measured_s": 0.012, "predicted_s": 0.011, "drift": 1.1}]
    assert stat.step_error(passes, "fastest pass") == pytest.approx(0.5)
    assert stat.step_error(passes, "all passes") == pytest.approx((1.5 * 11 / 12) ** 0.5 - 1)
    measured, drift, predicted = bench_measure.over_passes([(0.010, 0.015, 1.5),
                                                            (0.012, 0.011, 1.1)])
    assert (measured, drift) == (pytest.approx((0.010 * 0.012) ** 0.5),
                                 pytest.approx(1.65 ** 0.5))
    assert predicted / measured == pytest.approx((1.5 * 11 / 12) ** 0.5)
    assert bench_measure.over_passes([(0.010, None, None)]) == (pytest.approx(0.010), None, None)
    path = tmp_path / "run1.json"
    path.write_text(json.dumps({"configurations": [{"group": "2x2x2 decode",
                                                   "passes": passes}]}))
    scores = stat.score(str(path))
    assert scores["fastest pass"]["met"] is False  # worst 50% > 40%
    assert scores["all passes"]["met"] is True
