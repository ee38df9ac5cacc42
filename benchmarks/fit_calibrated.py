"""Fit `tpu-v4-calibrated`: three named constants of the TPU v4 datasheet profile, to Table 2.

    .venv/bin/python benchmarks/fit_calibrated.py

The three: the achieved fraction of peak FLOP/s (`flops_efficiency`), of the ICI links'
bandwidth (`link_efficiency`), and the latency of one hop of a collective (`hop_latency_s`).
HBM stays at its datasheet bandwidth, and no fixed time per layer remains: what Table 2's
decode spends beyond its weight reads is priced as its collectives' hops, which scale with the
layout's calls and the slice, not with PaLM 540B. Each Table 2 column (Pope et al. 2022, arXiv
2211.05102) is priced as the paper ran it: PaLM 540B with its heads padded to 64, the column's
FFN and attention layouts on the 4x4x4 slice, with the schedule (plain or looped) the planner
prefers for that layout (`tpuinfer/data/measurements.json`, the rows `fitted_by`
tpu-v4-calibrated). The script then prints every held-out TPU v4 row: the paper's other
measurements and its PaLM 62B table.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import _fit  # noqa: E402  (the shared fit, beside this script)

NAME = "tpu-v4-calibrated"
NAMES = ("flops_efficiency", "link_efficiency", "hop_latency_s")
LOWER, UPPER, START = (0.05, 0.05, 0.0), (1.0, 1.0, 1e-4), (0.7, 0.6, 3e-6)


def fit():
    return _fit.fit(NAME, NAMES, LOWER, UPPER, START)


def main():
    params, res = fit()
    _fit.report(NAME, NAMES, params, res)


if __name__ == "__main__":
    main()
