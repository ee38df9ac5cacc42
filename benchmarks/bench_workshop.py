"""Is the workshop fast enough? Times what a participant waits for, on this machine.

Each figure comes from fresh processes with their own empty tpuinfer cache (a temporary
`TPUINFER_CACHE`; JAX's persistent compilation cache inside it), as on a fresh machine:

1. the layout explorer on 4x8x8 (ws2d/batch decode and ws2d/heads prefill at batch 256): the
   prediction redrawn after each control change, and the measured side landing: cold (nothing
   compiled), then warm (compiled in this process), then in a new process after
   `tpuinfer warmup` (read back from the cache);
2. `tpuinfer demo` on its default: the first run, then a second.

The targets (issue 15) are printed beside each figure. Run it on an otherwise idle machine:

    python benchmarks/bench_workshop.py
"""
import json
import os
import subprocess
import sys
import tempfile
import time

MESH = (4, 8, 8)
TARGETS = {"prediction_s": 0.3, "decode_warm_s": 2.0, "prefill_warm_s": 5.0,
           "decode_cold_s": 15.0, "decode_after_warmup_s": 5.0, "demo_first_s": 45.0,
           "demo_second_s": 25.0}


def explorer_session() -> dict:
    """In this (fresh) process: the explorer's figures, as JSON on stdout."""
    import tpuinfer as ti
    ti.emulate(256)
    from tpuinfer_widgets import LayoutExplorer

    t0 = time.perf_counter()
    ex = LayoutExplorer(mesh=MESH, phase="decode", batch=256, context=8,
                        prefill=ti.Layout("ws2d", "heads"), decode=ti.Layout("ws2d", "batch"))
    opened_s = time.perf_counter() - t0
    ex.wait()
    decode_first_s = time.perf_counter() - t0  # the first measurement: cold or read back
    out = {"opened_s": opened_s, "decode_first_s": decode_first_s}

    def click(name, value):
        """(seconds until the prediction is drawn, seconds until the measurement landed)"""
        t = time.perf_counter()
        ex.controls[name].value = value
        drawn = time.perf_counter() - t
        ex.wait()
        return drawn, time.perf_counter() - t

    predictions = []
    for name, value in [("phase", "prefill"), ("phase", "decode"), ("phase", "prefill"),
                        ("phase", "decode")]:
        drawn, landed = click(name, value)
        predictions.append(drawn)
        out.setdefault(f"{value}_landed_s", []).append(landed)
    out["prediction_s"] = predictions
    out["errors"] = ex.error
    return out


def run(argv, cache, label):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("JAX_COMPILATION_CACHE") and k != "TPUINFER_COMPILE_CACHE"}
    env["TPUINFER_CACHE"] = cache
    t0 = time.perf_counter()
    proc = subprocess.run(argv, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode:
        sys.exit(f"{label} failed:\n{proc.stderr[-3000:]}")
    return proc.stdout, wall


def line(what, value, target):
    verdict = "meets" if value <= target else "MISSES"
    print(f"  {what:55s} {value:7.2f} s   target <= {target:g} s: {verdict}")


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--explorer":
        print(json.dumps(explorer_session()))
        return
    print(f"{os.cpu_count()} cores; each figure from fresh processes with an empty cache")
    explorer = [sys.executable, __file__, "--explorer"]
    with tempfile.TemporaryDirectory() as cache:
        cold = json.loads(run(explorer, cache, "explorer (cold)")[0])
    with tempfile.TemporaryDirectory() as cache:
        _, warmup_s = run([sys.executable, "-m", "tpuinfer", "warmup"], cache, "warmup")
        warm = json.loads(run(explorer, cache, "explorer (after warmup)")[0])
    with tempfile.TemporaryDirectory() as cache:
        demo = [sys.executable, "-m", "tpuinfer", "demo", "--json"]
        out, first_s = run(demo, cache, "demo")
        out2, second_s = run(demo, cache, "demo (second)")
        second = json.loads(out2)

    print("layout explorer, tiny on 4x8x8, batch 256 (ws2d/heads prefill, ws2d/batch decode):")
    line("prediction drawn after a click (worst of 4)", max(cold["prediction_s"] +
                                                           warm["prediction_s"]),
         TARGETS["prediction_s"])
    line("decode measured, cold (fresh cache, compiles)", cold["decode_first_s"],
         TARGETS["decode_cold_s"])
    line(f"decode measured after `tpuinfer warmup` ({warmup_s:.0f} s)", warm["decode_first_s"],
         TARGETS["decode_after_warmup_s"])
    line("decode measured, warm (compiled in this process)", cold["decode_landed_s"][-1],
         TARGETS["decode_warm_s"])
    line("prefill measured, warm (compiled in this process)", cold["prefill_landed_s"][-1],
         TARGETS["prefill_warm_s"])
    print("tpuinfer demo on its default (wall time of the process):")
    line("first run, fresh cache", first_s, TARGETS["demo_first_s"])
    line("second run", second_s, TARGETS["demo_second_s"])
    print("  parts of the second run: " + ", ".join(
        f"{k} {v:.1f} s" for k, v in second["parts_s"].items()))


if __name__ == "__main__":
    main()
