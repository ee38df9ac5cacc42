"""Compile and step time of every layout on the full 4x8x8 mesh (tiny model, 256 emulated
devices), prefill and decode, and the wall time of `tpuinfer demo`. Prints a table.

    python benchmarks/bench_layouts.py
"""
import json
import subprocess
import sys
import time

import numpy as np

import tpuinfer as ti

ti.emulate(256)


def main():
    cfg = ti.MODELS["tiny"]
    params = ti.init_params(cfg, seed=0)
    mesh = ti.make_mesh((4, 8, 8))
    prompt = np.random.default_rng(0).integers(0, cfg.V, (256, 16))
    print(f"{'layout':<14} {'prefill compile s':>18} {'prefill step s':>15} "
          f"{'decode compile s':>17} {'decode step s':>14}")
    for ffn in ti.FFN_LAYOUTS:
        for attention in ti.ATTENTION_LAYOUTS:
            layout = ti.Layout(ffn, attention)
            out = ti.generate(params, cfg, prompt, steps=6, mesh=mesh, prefill=layout,
                              decode=layout)
            p, d = out.timings["prefill"], out.timings["decode"]
            print(f"{str(layout):<14} {p['compile_s']:>18.2f} {p['step_s']:>15.3f} "
                  f"{d['compile_s']:>17.2f} {d['step_s']:>14.3f}", flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "tpuinfer", "demo", "--json"],
                          capture_output=True, text=True, check=True)
    report = json.loads(proc.stdout)
    print(f"\ntpuinfer demo: {time.perf_counter() - t0:.1f} s end to end "
          f"(its own wall_s {report['wall_s']:.1f} s), tokens_match={report['tokens_match']}")


if __name__ == "__main__":
    main()
