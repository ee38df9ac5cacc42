"""A workshop's widget session: does memory stay bounded?

Drives the layout explorer (widgets/layout_explorer.py) through 200 control changes, as a
student's clicks would, on 8-device meshes of the 256 emulated devices: mesh, phase, ffn,
attention, looped, batch, context, weights, and now and then a model too large to run here
(the cost model alone). Steps are compiled and read, not timed (`repeats=0`), so the session
takes minutes. Every 20 changes it prints the process's resident memory and the compiled
steps held; at the end, its peak RSS and every cache's size (`ti.cache_sizes()`), then the
memory after `ti.clear_caches()`.

    python benchmarks/bench_widget_session.py [CHANGES] [SEED]
"""
import random
import resource
import sys
import time

import tpuinfer as ti

ti.emulate(256)

from tpuinfer.mesh import factorizations  # noqa: E402
from tpuinfer_widgets import LayoutExplorer  # noqa: E402

CHANGES = int(sys.argv[1]) if len(sys.argv) > 1 else 200
SEED = int(sys.argv[2]) if len(sys.argv) > 2 else 0
CHOICES = {
    "mesh": [m for m in factorizations(8) if max(m) <= 4],  # 8 devices: 2x2x2, 1x2x4, ...
    "phase": ["prefill", "decode"],
    "ffn": list(ti.FFN_LAYOUTS),
    "attention": list(ti.ATTENTION_LAYOUTS),
    "looped": [False, True],
    "batch": [8, 16],
    "context": [8, 16],
    "weights": ["f32", "bf16"],
    "model": ["tiny"] * 5 + ["palm-62b"],  # now and then: the cost model alone
}


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10  # kB on Linux


def main():
    rng = random.Random(SEED)
    ex = LayoutExplorer(mesh=(2, 2, 2), batch=8, context=8, repeats=0)
    print(f"start: RSS {rss_mib():.0f} MiB", flush=True)
    t0, failed, compiled = time.perf_counter(), 0, 0
    for i in range(1, CHANGES + 1):
        name = rng.choice(list(CHOICES))
        options = [v for v in CHOICES[name] if v != ex.controls[name].value] or CHOICES[name]
        ok = ex.set(**{name: rng.choice(options)})
        failed += not ok
        compiled += bool(ok and ex.data["compile_s"])
        if i % 20 == 0:
            sizes = ti.cache_sizes()
            print(f"{i:4d} changes, {time.perf_counter() - t0:6.0f} s: RSS {rss_mib():6.0f} MiB, "
                  f"compiled steps held {sizes['tpuinfer.engine._COMPILED']:3d} "
                  f"(compiled so far {compiled}), refused {failed}", flush=True)
    print(f"\n{CHANGES} control changes in {time.perf_counter() - t0:.0f} s "
          f"({compiled} steps compiled, {failed} choices refused with a message)")
    print(f"peak RSS {peak_rss_mib():.0f} MiB, RSS now {rss_mib():.0f} MiB")
    print("cache sizes (entries):")
    for name, size in ti.cache_sizes().items():
        print(f"  {name:50s} {size:5d}")
    ti.clear_caches()
    print(f"after ti.clear_caches(): RSS {rss_mib():.0f} MiB, "
          f"{sum(ti.cache_sizes().values())} entries held")


if __name__ == "__main__":
    main()
