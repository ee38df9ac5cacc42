"""Planner performance against issue 3's targets: `tpuinfer plan` answers in under 2 s; a full
Pareto sweep for PaLM 540B finishes in under 60 s.

    .venv/bin/python benchmarks/bench_planner.py [--skip-pareto]

Prints each figure; the tests never time anything (timings depend on the machine).
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time

PLAN = ["plan", "--model", "palm-540b-64heads", "--chips", "64", "--batch", "64",
        "--input-len", "2048", "--gen-len", "64", "--weights", "int8", "--json"]


def cli_seconds(argv) -> float:
    """Wall time of a fresh `python -m tpuinfer ...`, imports included (what a user waits)."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "tpuinfer", *argv], check=True,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--skip-pareto", action="store_true")
    args = ap.parse_args()

    runs = sorted(cli_seconds(PLAN) for _ in range(3))
    print(f"tpuinfer plan (palm-540b-64heads, 64 chips, prefill 2048 + decode 64), fresh "
          f"process: median {runs[1]:.2f} s (target < 2 s)")

    from tpuinfer.cost import _step_terms
    from tpuinfer.planner import pareto, plan
    plan("tiny", chips=4, input_len=8, gen_len=2)  # imports and JAX start-up out of the way
    _step_terms.cache_clear()
    start = time.perf_counter()
    plan("palm-540b-64heads", "tpu-v4", 64, 64, 2048, 0, 64, "int8")
    print(f"plan() in process, nothing cached: {time.perf_counter() - start:.2f} s")

    if not args.skip_pareto:
        for model, weights in (("palm-540b-64heads", "bf16"), ("palm-540b-64heads", "int8"),
                               ("palm-540b", "int8")):
            _step_terms.cache_clear()
            start = time.perf_counter()
            res = pareto(model, "tpu-v4", weights=weights, progress=False)
            took = time.perf_counter() - start
            print(f"pareto sweep {model} {weights} on tpu-v4 (chips 1, 2, 4 .. 256 that fit, "
                  f"batch 1..1024, "
                  f"every mesh and layout; {res['considered']} configurations): {took:.1f} s "
                  f"(target < 60 s); frontier {len(res['prefill'])} prefill, "
                  f"{len(res['decode'])} decode points")

if __name__ == "__main__":
    main()
