"""Fit `tpu-v5e-calibrated`: three named constants of the TPU v5e datasheet profile, to
exactly three public measurements.

    .venv/bin/python benchmarks/fit_v5e.py

The rows (`tpuinfer/data/measurements.json`, `fitted_by` tpu-v5e-calibrated): Llama 3.1 70B
decode on a TPU v5e-16 (4x4), tensor parallel over 16 chips, int8 weights and an int8 KV
cache, context length 2048, batch 8, 32 and 128: 6.29, 9.26 and 25.4 ms a step
(jax-ml/jax-llm-examples, llama3/README.md). The benchmark as it ran: 1D weight-stationary
with attention by heads (its `q_heads` over all 16 chips, `kv_heads` over 8 of them), plain
collectives, on the logical mesh 1x8x2 of its `jax.make_mesh((1, 8, 2))`, the cache filled to
1,024 positions (the data file's reading of "context length").

The three: the achieved fraction of peak FLOP/s (`flops_efficiency`), of the ICI links'
bandwidth (`link_efficiency`), and the latency of one hop (`hop_latency_s`); HBM stays at its
datasheet bandwidth. The script then prints every held-out v5e row: the other 16-chip rows
and the two-replica (2 x tensor parallel 8) table.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import _fit  # noqa: E402  (the shared fit, beside this script)

NAME = "tpu-v5e-calibrated"
NAMES = ("flops_efficiency", "link_efficiency", "hop_latency_s")
LOWER, UPPER, START = (0.05, 0.05, 0.0), (1.0, 1.0, 1e-5), (0.5, 0.5, 5e-7)


def fit():
    return _fit.fit(NAME, NAMES, LOWER, UPPER, START)


def main():
    params, res = fit()
    _fit.report(NAME, NAMES, params, res)


if __name__ == "__main__":
    main()
