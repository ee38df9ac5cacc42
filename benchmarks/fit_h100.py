"""Fit `h100-calibrated`: two named constants of the H100 SXM datasheet profile, to two of
NVIDIA's published Llama 3 70B serving measurements.

    .venv/bin/python benchmarks/fit_h100.py

The rows (`tpuinfer/data/measurements.json`, `fitted_by` h100-calibrated): NVIDIA NIM 1.8.0
serving Llama 3.3 70B (Llama 3.1 70B's architecture) on two H100 80 GB with fp8 weights,
tensor parallel 2, 5,000 input and 500 output tokens per request, at concurrency 1 and 50:
inter-token latency 18.58 and 59.73 ms (docs.nvidia.com/nim/benchmarking/llm, "Performance").
Each is priced as `tpuinfer.accuracy` prices a server's inter-token latency: the decode step
of the whole batch at the mean context, plus the share of one prefill each step waits for.

The two: the achieved fraction of HBM bandwidth (`hbm_efficiency`: the concurrency-1 row is
a weight read) and of peak FLOP/s (`flops_efficiency`: the prefills the concurrency-50 row
waits for). NVLink and its latency stay at the datasheet's. The script then prints every
held-out H100 row: concurrency 5 and 25, and the 500-input / 2,000-output row.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import _fit  # noqa: E402  (the shared fit, beside this script)

NAME = "h100-calibrated"
NAMES = ("hbm_efficiency", "flops_efficiency")
LOWER, UPPER, START = (0.05, 0.05), (1.0, 1.0), (0.6, 0.6)


def fit():
    return _fit.fit(NAME, NAMES, LOWER, UPPER, START)


def main():
    params, res = fit()
    _fit.report(NAME, NAMES, params, res)


if __name__ == "__main__":
    main()
