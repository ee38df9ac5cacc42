"""Planner performance against issue 11's targets: `tpuinfer plan` answers in under 2 s; a full
PaLM 540B Pareto sweep, looped schedules included, finishes in under 30 s on 2 cores.

    .venv/bin/python benchmarks/bench_planner.py [--skip-pareto]

Prints each figure (wall and CPU seconds: on a shared machine the CPU time is the one to
compare); the tests never time anything (timings depend on the machine).
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time

PLAN = ["plan", "--model", "palm-540b", "--chips", "64", "--batch", "64",
        "--input-len", "2048", "--gen-len", "64", "--weights", "int8", "--json"]


def cli_seconds(argv) -> float:
    """Wall time of a fresh `python -m tpuinfer ...`, imports included (what a user waits)."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "tpuinfer", *argv], check=True,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--skip-pareto", action="store_true")
    args = ap.parse_args()

    runs = sorted(cli_seconds(PLAN) for _ in range(3))
    print(f"tpuinfer plan (palm-540b, 64 chips, prefill 2048 + decode 64, int8), fresh "
          f"process, imports included: median {runs[1]:.2f} s (target < 2 s)")

    from tpuinfer.planner import pareto, plan
    plan("tiny", chips=4, input_len=8, gen_len=2)  # imports out of the way
    p, wall, cpu = timed(lambda: plan("palm-540b", "tpu-v4", 64, 64, 2048, 0, 64, "int8"))
    print(f"plan() in process, caches cold for this model: {wall:.2f} s wall, {cpu:.2f} s CPU; "
          f"{p.prefill.considered + p.decode.considered} configurations")

    if not args.skip_pareto:
        for model, weights in (("palm-540b", "bf16"), ("palm-540b", "int8")):
            res, wall, cpu = timed(lambda: pareto(model, "tpu-v4", weights=weights,
                                                  progress=False))
            print(f"pareto sweep {model} {weights} on tpu-v4 (chips 1, 2, 4 .. 256 that fit, "
                  f"batch 1..1024, every mesh, layout and schedule, plain and looped; "
                  f"{res['considered']} configurations): {wall:.1f} s wall, {cpu:.1f} s CPU "
                  f"(target < 30 s); frontier {len(res['prefill'])} prefill, "
                  f"{len(res['decode'])} decode points")


if __name__ == "__main__":
    main()
