"""Which short probe tracks the speed of the steps `measure` times? The evidence behind
the probe `tpuinfer.drift` times.

A host prediction is scaled by how a short probe's time now compares with its time at
calibration (`tpuinfer.drift`). That is right only if the probe slows down when the steps do,
and by as much. This benchmark times every candidate probe beside a set of target steps, round
after round, while the machine's speed is moved on purpose: idle, one of its cores kept busy by
another process, then both. A good probe keeps target / probe constant across the rounds; the
table prints, per candidate, how far that ratio moves (its standard deviation in log terms,
per target, then the median over targets) and the slope of log(target) against log(probe)
(1: the probe slows exactly as the steps do).

    python benchmarks/bench_drift_probe.py              # 4 rounds in each of 3 conditions
    python benchmarks/bench_drift_probe.py --rounds 6
    python benchmarks/bench_drift_probe.py --history    # one process: fresh, after the
                                                        # calibration's steps, after clearing

`--history` asks another question: does a process's own past move its speed, on an idle
machine? The calibration runs its 19 steps in one process and a notebook kernel has run
little; if the probe and the steps slow together as a process ages, the drift factor follows
it (a fresh process is then simply a faster machine); if only the probe does, the factor
misleads. It times the probe (the one `tpuinfer.drift` uses) and three targets in a fresh
process, again after running the calibration's steps (`tpuinfer.calibrate.STEP_POINTS`, as
`tpuinfer calibrate` times them), and again after `tpuinfer.clear_caches()`.
"""
import argparse
import math
import multiprocessing
import os
import statistics
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # numpy's matmul on one thread: a probe
import numpy as np  # noqa: E402 - that cannot see a busy core, as a candidate to rule out

import tpuinfer as ti

CANDIDATES = ("numpy matmul (1 thread)", "matmul on 2x2x2", "launch on 4x8x8",
              "decode 2x2x2 (tiny, batch 8)", "decode 4x4x4 (tiny, batch 64)")
# (what, mesh, layout, phase, batch, tokens): the kinds of step the benchmark and the book time
TARGETS = [("2x2x2 prefill", (2, 2, 2), ti.Layout("ws1d", "heads"), "prefill", 8, 8),
           ("2x2x2 decode", (2, 2, 2), ti.Layout("ws2d", "batch"), "decode", 8, None),
           ("2x2x2 prefill 2048 tok", (2, 2, 2), ti.Layout("wg-xy", "heads"), "prefill", 64, 32),
           ("2x4x8 prefill", (2, 4, 8), ti.Layout("wg-xy", "batch"), "prefill", 64, 8),
           ("4x8x8 decode b256", (4, 8, 8), ti.Layout("ws2d", "heads"), "decode", 256, None)]
CONDITIONS = ("idle", "one core busy", "two cores busy")


def _spin():  # another process keeping one core busy
    while True:
        pass


def _median_time(fn, runs: int) -> float:
    fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def candidates():
    """name -> a function of no arguments that runs the candidate once, blocking."""
    import jax
    import jax.numpy as jnp
    from tpuinfer import drift
    from tpuinfer.calibrate import _on_each_device, _per_device
    a = np.random.default_rng(0).standard_normal((384, 384)).astype(np.float32)
    mesh8, mesh256 = ti.make_mesh((2, 2, 2)), ti.make_mesh((4, 8, 8))
    w = jnp.full((512, 512), 1.0 / 512, jnp.float32)
    mm = _on_each_device(mesh8, lambda x: (x.reshape(256, 512) @ w).reshape(-1))
    x8 = _per_device(mesh8, 256 * 512)
    launch = _on_each_device(mesh256, lambda x: x + 1)
    x256 = _per_device(mesh256, 8)
    steps = {name: drift.Probe(shape, layout, batch)
             for name, shape, layout, batch in (
                 (CANDIDATES[3], (2, 2, 2), ti.Layout("ws2d", "heads"), 8),
                 (CANDIDATES[4], (4, 4, 4), ti.Layout("ws2d", "heads"), 64))}
    return {CANDIDATES[0]: lambda: a @ a,
            CANDIDATES[1]: lambda: jax.block_until_ready(mm(x8)),
            CANDIDATES[2]: lambda: jax.block_until_ready(launch(x256)),
            **{name: p.run_once for name, p in steps.items()}}


def main(rounds: int) -> None:
    ti.emulate(256)
    from tpuinfer.measure import measure
    probes = candidates()
    records = []  # (condition, {candidate: s}, {target: s})
    busy = []
    for condition in CONDITIONS:
        while len(busy) < CONDITIONS.index(condition):
            busy.append(multiprocessing.Process(target=_spin, daemon=True))
            busy[-1].start()
        time.sleep(1.0)
        for r in range(rounds):
            probe_s = {name: _median_time(fn, 9) for name, fn in probes.items()}
            target_s = {}
            for what, shape, layout, phase, batch, tokens in TARGETS:
                m = measure("tiny", shape, layout, phase=phase, batch=batch, tokens=tokens,
                            context=16 if phase == "decode" else None, repeats=9,
                            warmup_s=0.05, min_runs=5, drift_probe=False)
                target_s[what] = m.measured.time_s
            # the probes again after the targets: a round's probe is the mean of both ends
            probe_s = {name: (t + _median_time(probes[name], 9)) / 2 for name, t in probe_s.items()}
            records.append((condition, probe_s, target_s))
            print(f"{condition:<15} round {r + 1}: " + "  ".join(
                f"{k.split(' (')[0]} {v * 1e3:.2f}ms" for k, v in probe_s.items()), flush=True)
    for p in busy:
        p.terminate()
    print("\nper round, ms (probes | targets):")
    print(" | ".join(CANDIDATES) + " || " + " | ".join(t[0] for t in TARGETS))
    for condition, probe_s, target_s in records:
        print(f"{condition:<15} " + " ".join(f"{probe_s[c] * 1e3:7.3f}" for c in CANDIDATES)
              + " || " + " ".join(f"{target_s[t[0]] * 1e3:8.2f}" for t in TARGETS))
    print("\nhow well each candidate tracks the targets over every round and condition: the "
          "standard deviation of log(target / probe) (0: the ratio never moved), and the slope "
          "of log(target) on log(probe) (1: the probe slowed exactly as the target did)")
    print(f"{'candidate':<32} {'sd (median over targets)':>25} {'worst target':>13} "
          f"{'slope (median)':>15}")
    for c in CANDIDATES:
        sds, slopes = [], []
        for what, *_ in TARGETS:
            lp = np.log([rec[1][c] for rec in records])
            lt = np.log([rec[2][what] for rec in records])
            sds.append(float(np.std(lt - lp)))
            slopes.append(float(np.polyfit(lp, lt, 1)[0]) if np.ptp(lp) > 0 else math.nan)
        print(f"{c:<32} {statistics.median(sds):>25.3f} {max(sds):>13.3f} "
              f"{statistics.median(slopes):>15.2f}")
    untracked = [float(np.std(np.log([rec[2][what] for rec in records]))) for what, *_ in TARGETS]
    print(f"{'(no probe: the targets alone)':<32} {statistics.median(untracked):>25.3f} "
          f"{max(untracked):>13.3f}")


HISTORY_TARGETS = [TARGETS[0], TARGETS[1],  # the book's and the benchmark's small steps, and
                   # chapter 5's 2,048-token prefill
                   ("2x2x2 prefill 2048 tok", (2, 2, 2), ti.Layout("ws1d", "heads"), "prefill",
                    64, 32)]


def history(rounds: int) -> None:
    """The probe and `HISTORY_TARGETS` in one process: fresh, after the calibration's steps,
    after clearing every cache (`--history`)."""
    ti.emulate(256)
    from tpuinfer import caches, drift
    from tpuinfer.calibrate import STEP_POINTS, _step
    from tpuinfer.measure import measure

    def readings(stage: str) -> None:
        for r in range(rounds):
            probe_s = drift.probe_seconds(9)
            target_s = [measure("tiny", shape, layout, phase=phase, batch=batch, tokens=tokens,
                                context=16 if phase == "decode" else None, repeats=9,
                                warmup_s=0.05, min_runs=5, drift_probe=False).measured.time_s
                        for _, shape, layout, phase, batch, tokens in HISTORY_TARGETS]
            probe_s = (probe_s + drift.probe_seconds(9)) / 2
            print(f"{stage:<32} {r + 1:>5} {probe_s * 1e3:>9.1f} " +
                  " ".join(f"{t * 1e3:>22.1f}" for t in target_s), flush=True)

    print(f"{'stage':<32} {'round':>5} {'probe ms':>9} " +
          " ".join(f"{t[0] + ' ms':>22}" for t in HISTORY_TARGETS))
    readings("fresh process")
    for point in STEP_POINTS:
        _step(*point)
    readings("after the calibration's steps")
    caches.clear_caches()
    readings("after clear_caches()")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=None,
                        help="rounds per condition (4), or per stage with --history (3)")
    parser.add_argument("--history", action="store_true",
                        help="one process, idle machine: fresh, after the calibration's steps, "
                             "after clearing its caches")
    a = parser.parse_args()
    if a.history:
        history(a.rounds or 3)
    else:
        main(a.rounds or 4)
