"""How fast this machine runs now against when it was calibrated: the drift factor.

A host profile (`tpuinfer calibrate`) is a snapshot of a shared machine whose speed moves minute
to minute: on this project's 2-core machine, idle, the calibration's own steps came out 15-57%
slower in one run than in the next. So every measurement on the host also times a short fixed
probe beside the step it measures, and its host prediction is the model's time scaled by

    drift = probe's time now / probe's time at calibration

reported as its own number ("machine 1.23x slower than at calibration"), so that the model's
error and the machine's drift are shown apart (`Measurement.drift`).

What it buys, measured: over ten runs of `benchmarks/bench_measure.py runs` (each a fresh
calibration and a sweep of 55 steps), the per-configuration median error was 8-13% per run with
the factor and 9-23% without it. What it does not: the factor carries the probe's own noise. On
an idle machine this machine's speed moves from one second to the next: the probe's median of
nine runs read 49-63 ms over three rounds a few seconds apart in one fresh process, and a
2,048-token prefill beside it 299-341 ms (`benchmarks/bench_drift_probe.py --history`). A
factor from two readings of three runs scales a step by its probe's luck as well as by the
machine: in those ten runs, the misses sat on steps whose own factor was an outlier beside its
neighbours'. Whether a process's own past slows it (the calibration runs its 19 steps in one
process; a chapter's kernel has run few) is not settled: in two of four tries (two ad hoc
scripts) a process ran the probe and chapter 5's 2,048-token prefill about 1.35x slower after
the calibration's steps than fresh, the two together (which the factor follows); in the other
two (`bench_drift_probe.py --history`) neither moved beyond the rounds' own spread. In the
book, the factor has helped and hurt: in a notebook kernel the probe ran 1.2-1.6x faster than
during the calibration (drift x0.62-0.83), and so did the book's small steps (chapters 1, 7 and
8, 4-20 ms: errors 4-41% with the factor, 23-75% without, the same measurements), but not its
2,048-token prefills (chapter 5: 17-42% off with the factor, 0-9% without; in a script, on
another calibration, 13-41% with it and 2-33% without; where the probe read as at calibration,
60-66 ms, the model priced them 5-30% short: a miss of the model, not only of the factor; with
attention's scores priced (`HardwareProfile.score_bandwidth`), four rebuilds of chapter 5 on
one calibration gave 23%, 25%, 24% and 14% median with the factor, its steps' drift x0.80-1.28
and the same step measured 271-450 ms from one rebuild to the next). Over
the book's 14 host-timed steps, three rebuilds gave a median error of 18%, 15% and 18% with the
factor against 27%, 19% and 13% without. The factor is applied because the benchmark's runs and
two rebuilds of three were better for it, and shown because it can mislead.

The probe is a real decode step of the tiny model (2D weight-stationary, attention by heads,
batch 64 on a 4x4x4 mesh: about 50 ms on 2 idle cores), chosen from evidence
(`benchmarks/bench_drift_probe.py`: five candidates timed beside five kinds of step the book
and the benchmark run, four rounds idle, four with one core kept busy by another process, four
with both). How far log(step / probe) moved over the twelve rounds (standard deviation, median
over the five steps; the steps alone, unscaled, moved 0.158):

    numpy matmul on one thread       0.166  (cannot see a busy core: 1.2-1.3 ms throughout)
    a launch on 4x8x8                0.263  (slowed 2-3x where the steps slowed 1.2-1.9x)
    decode 2x2x2, batch 8 (5 ms)     0.183  (slowed 1.5-2x: more than the larger steps)
    a matmul chain on 2x2x2          0.141
    decode 4x4x4, batch 64 (50 ms)   0.103  (slowed 1.36x with one core busy, 1.56x with two)

No probe tracks every step exactly: with a core busy, a 10 ms step slowed 1.4-1.9x and a
300 ms one 1.15-1.25x. The 4x4x4 decode sits between them, as its 64 device threads and its mix
of matmuls and collectives sit between the book's small and large steps. Its time is the
median of `RUNS` runs (a warm-up first, once per process): about 150 ms, timed before and
after the step a measurement times, whose mean counts (a change of speed while the step ran
counts by half).

Why the step's own two readings and not a smoother estimate, measured: a rule that averages
one reading's noise away, the median of the process's last five readings within 20 s, was run
live in ten consecutive runs of `bench_measure.py runs 10 --save` (6 of 10 met every group),
and scored beside this rule and no factor on the same saved steps
(`benchmarks/bench_drift_rules.py`): every group met in 7 of ten runs with the step's own two
readings, 6 with the window, 3 with no factor. One run in ten is no strong preference; the
simpler rule stays (a likely reason it does no worse: a step's own speed moves with the second
its readings are taken in, which a window averages away with the noise). Those counts scored
each step by its fastest pass; with every pass counted (`bench_measure.over_passes`, issue 37's
fourth session), a batch of ten live runs with this rule met every group in 9, and scored on
its saved steps the window met 7 and no factor 1.
"""
from __future__ import annotations

import functools
import statistics
import time
from collections import deque
from collections.abc import Callable

RUNS = 3  # runs of the probe per timing (about 150 ms on 2 idle cores)
# the probe: a decode of the tiny model, ws2d/heads, batch 64, on 4x4x4 (module docstring)
MESH, FFN, ATTENTION, BATCH, CONTEXT = (4, 4, 4), "ws2d", "heads", 64, 16
# this process's last readings, (when on `time.monotonic`, seconds), newest last: what a
# benchmark keeps beside each step to compare rules offline (`benchmarks/bench_drift_rules.py`)
LOG: deque[tuple[float, float]] = deque(maxlen=64)
# A profile without a probe time (written before the probe existed) gets no drift factor:
# its predictions are the model's alone, as before.
NO_PROBE = 0.0


def median_seconds(run: Callable[[], object], runs: int = RUNS,
                   clock: Callable[[], float] = time.perf_counter, warm_up: bool = True) -> float:
    """The median seconds of `runs` calls of `run` (each blocking on its result), after one
    untimed call (with `warm_up`). `clock` is the time source (a test passes a fake one)."""
    if runs < 1:
        raise ValueError(f"runs must be at least 1, got {runs}")
    if warm_up:
        run()
    times = []
    for _ in range(runs):
        t0 = clock()
        run()
        times.append(clock() - t0)
    return statistics.median(times)


def factor(now_s: float, calibrated_s: float) -> float | None:
    """How many times slower the machine runs the probe now than at calibration (below 1:
    faster); None when the profile has no probe time (`NO_PROBE`) or the probe took no time."""
    if not calibrated_s > 0 or not now_s > 0:
        return None
    return now_s / calibrated_s


def words(drift: float | None) -> str:
    """A drift factor in words, for tables and the command line."""
    if drift is None:
        return "no drift probe (a host profile calibrated before it existed)"
    if abs(drift - 1) < 0.005:
        return "machine as fast as at calibration (1.00x)"
    return (f"machine {drift:.2f}x slower than at calibration" if drift > 1 else
            f"machine {1 / drift:.2f}x faster than at calibration")


class Probe:
    """The probe step, compiled once and ready to time (`seconds`). JAX is imported here, not
    at the module's import: the cost path reads `factor` and `words` without it."""

    def __init__(self, shape=MESH, layout=None, batch: int = BATCH, model: str = "tiny"):
        # the engine's side (JAX, numpy), loaded when a probe is built: not on the cost path
        import jax.numpy as jnp  # the engine's side
        import numpy as np  # the engine's side

        from . import engine  # the engine's side
        from .config import get_model  # beside the engine's names it needs
        from .layouts import Layout  # beside the engine's names it needs
        from .measure import _placed  # the same placed parameters a measurement would use
        from .mesh import make_mesh  # the engine's side
        from .placement import global_array  # the engine's side
        cfg, self.layout = get_model(model), layout or Layout(FFN, ATTENTION)
        mesh = make_mesh(tuple(shape))
        self.params = _placed(cfg, self.layout.ffn, mesh, "f32", 0)
        self.tokens = global_array(np.zeros((batch, 1), np.int32), mesh,
                                   engine.token_spec_on(self.layout, mesh))
        self.cache = engine.init_cache(cfg, self.layout, mesh, batch, CONTEXT, "f32")
        self.pos = jnp.int32(CONTEXT - 1)
        self.exe, _ = engine.compiled_step(cfg, self.layout, mesh, "f32", self.params,
                                           self.tokens, self.cache, self.pos)

    def run_once(self) -> None:
        import jax  # the engine's side (see __init__)
        logits, self.cache, *_ = self.exe(self.params, self.tokens, self.cache, self.pos)
        jax.block_until_ready((logits, self.cache))  # the step donates its cache: keep the new

    warmed = False

    def seconds(self, runs: int = RUNS, clock: Callable[[], float] = time.perf_counter) -> float:
        """The probe's median time now (warmed up on the first call only)."""
        t = median_seconds(self.run_once, runs, clock, warm_up=not self.warmed)
        self.warmed = True
        return t


@functools.cache
def _probe() -> Probe:
    return Probe()  # built and compiled on first use, once per process


def probe_seconds(runs: int = RUNS) -> float:
    """The probe's median seconds now (`Probe`, built and compiled on the first call), kept
    in `LOG`."""
    seconds = _probe().seconds(runs)
    LOG.append((time.monotonic(), seconds))
    return seconds
