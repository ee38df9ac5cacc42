"""Benchmark scripts that must stay runnable where their hardware is missing."""
import os
import re
import subprocess
import sys
from pathlib import Path

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
    each step's fastest pass is scored, and the table says which rule met the group."""
    import json
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import bench_drift_rules as rules
    finally:
        sys.path.remove(str(BENCHMARKS))

    def step(readings, measured_s):  # the model's time 10 ms, the live rule's factor 1
        return {"measured_s": measured_s, "predicted_s": 0.010, "drift": 1.0,
                "readings": readings}
    # the probe took 4 ms at calibration; beside the second step it read 4 and 12 ms (one
    # slow reading), and that step took 10 ms: beside says 8 ms (x2), the window 4 ms (x1)
    group = "2x2x2 decode"
    saved = {"host_profile": {"probe_s": 0.004}, "configurations": [
        {"group": group, "passes": [step([[0.0, 0.004], [1.0, 0.004]], 0.010)]},
        {"group": group, "passes": [step([[2.0, 0.004], [3.0, 0.012]], 0.010),
                                    step([[4.0, 0.004], [5.0, 0.004]], 0.011)]}]}
    path = tmp_path / "run1.json"
    path.write_text(json.dumps(saved))
    f = rules.factors(saved["configurations"])
    assert f[(1, 0)] == {"beside": 0.008, "window": 0.004}
    assert f[(1, 1)]["window"] == 0.004  # the last five: 4, 4, 12, 4, 4 ms
    scores = rules.score(str(path))
    assert scores["beside"]["groups"][group] == (0.5, 1.0)  # the fastest pass, x2: +100%
    assert scores["window"]["groups"][group] == (0.0, 0.0)
    assert (scores["window"]["met"], scores["beside"]["met"]) == (True, False)
