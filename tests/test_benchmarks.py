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
