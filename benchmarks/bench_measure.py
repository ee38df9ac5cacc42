"""How long `measure` takes, and how well the cost model predicts this machine's step time.

1. Latency of `measure` on the full 4x8x8 mesh (tiny model): cold (the first call in a fresh
   process: parameters, compile, read, one warm-up and five timed steps) and warm (the same
   configuration again: the compiled step is reused, five timed steps). Targets: warm < 2 s,
   cold < 15 s.
2. Predicted (the `host` profile, written by `tpuinfer calibrate`) against measured wall time
   over 28 configurations, and the median absolute error. Without a host profile it prints the
   measured times and says so.

    python benchmarks/bench_measure.py
"""
import statistics
import subprocess
import sys
import time

import tpuinfer as ti

LATENCY = [  # (layout, phase, batch): a short prefill, and the paper's decode layout whose
    # 256-way all-to-alls are the slowest thing to compile on XLA:CPU
    (ti.Layout("ws2d", "heads"), "prefill", 4),
    (ti.Layout("ws2d", "batch"), "decode", 256),
]
SWEEP = ([((2, 2, 2), ti.Layout(f, a), ph, 8) for f in ti.FFN_LAYOUTS
          for a in ti.ATTENTION_LAYOUTS for ph in ("prefill", "decode")]
         + [((4, 8, 8), ti.Layout(f, a), ph, 256) for f, a in (
             ("ws2d", "heads"), ("ws1d", "heads"), ("wg-x", "heads"), ("wg-xy", "batch"))
            for ph in ("prefill", "decode")])


def latency(layout: str, phase: str, batch: int) -> None:
    """Run in a fresh process, so that the first call is truly cold."""
    ti.emulate(256)
    from tpuinfer.measure import measure
    mesh = ti.make_mesh((4, 8, 8))
    ffn, attention = layout.split("/")
    runs = []
    for _ in range(2):
        t0 = time.perf_counter()
        m = measure("tiny", mesh, ti.Layout(ffn, attention), phase=phase, batch=int(batch))
        runs.append((time.perf_counter() - t0, m.compile_s, m.measured.time_s))
    (cold, compile_s, step_s), (warm, _, _) = runs
    print(f"{layout:<11} {phase:<8} batch {batch:>3}: cold {cold:5.1f} s "
          f"(compile {compile_s:4.1f} s)  warm {warm:4.2f} s  (5 timed steps of "
          f"{step_s * 1e3:.0f} ms; the cold call also ran one warm-up)", flush=True)


def sweep() -> None:
    ti.emulate(256)
    from tpuinfer.hardware import host_profile_path
    from tpuinfer.measure import measure
    host = host_profile_path().exists()
    print(f"\n{'mesh':<6} {'layout':<13} {'phase':<8} {'batch':>5} {'measured':>10} "
          f"{'predicted':>10} {'error':>7}")
    errors = []
    for shape, layout, phase, batch in SWEEP:
        m = measure("tiny", shape, layout, phase=phase, batch=batch,
                    tokens=8 if phase == "prefill" else None, context=16)
        got, want = m.measured.time_s, m.predicted.time_s
        err = "" if want is None else f"{abs(want - got) / got:7.0%}"
        if want is not None:
            errors.append(abs(want - got) / got)
        print(f"{'x'.join(map(str, shape)):<6} {str(layout):<13} {phase:<8} {batch:>5} "
              f"{got * 1e3:>8.1f}ms {'-' if want is None else f'{want * 1e3:.1f}ms':>10} {err}",
              flush=True)
    if host:
        print(f"\nmedian absolute error of the host prediction over {len(errors)} "
              f"configurations: {statistics.median(errors):.0%}")
    else:
        print(f"\nno host profile at {host_profile_path()}: run `tpuinfer calibrate` for the "
              "predicted column; measured times only")


def main() -> None:
    print("measure latency on 4x8x8 (tiny): targets warm < 2 s, cold < 15 s")
    for layout, phase, batch in LATENCY:
        subprocess.run([sys.executable, __file__, "latency", str(layout), phase, str(batch)],
                       check=True)
    sweep()


if __name__ == "__main__":
    if sys.argv[1:2] == ["latency"]:
        latency(*sys.argv[2:5])
    else:
        main()
