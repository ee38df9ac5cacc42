"""Micro-benchmarks of this machine's emulated mesh, fitted into the `host` hardware profile with
which `measure` and the cost model predict wall time here (`tpuinfer calibrate` runs them:
`tpuinfer.cli.calibrate`).

An emulated mesh is not a set of chips: its devices are threads taking turns on the same few
cores. So the host profile is a shared-host profile (`interconnect="host"`, priced by
`cost.estimate`): the host's FLOP/s and memory bandwidth are shared by every device of the mesh,
so a step's per-device work costs `chips` times its one-device time; every device pays a fixed
dispatch cost per step and per layer; and one call of a collective of each kind costs

    call_s + chips·device_s + chips·group·member_s + chips·bytes·byte_s

a fixed part, a rendezvous part per device taking part, a part per message (each device
exchanges one with every member of its group in an all-to-all), and the copy of every device's
`bytes` (per device, under `tpuinfer.terms`' convention) through the one shared memory.

What a chip's model leaves out, a host cannot: how an operation's shape sets its speed. Three
effects, each measured by its own micro-benchmark:
- the activations a matmul reads and writes (`StepTerms.activation_traffic_bytes`). On 256
  emulated devices a thin per-device slice of a matmul (ws1d gives each device 4 columns of
  F) reads a whole [B·L, E] activation to compute a sliver, and the mesh's activations (512 MiB
  of them in a 4x8x8 ws1d prefill at batch 256) stream from DRAM: XLA:CPU ran such a matmul at
  15-25 GFLOP/s, a sixth of the host's matmul rate. Priced at `activation_bandwidth`;
- the weights of a matmul of more than one row (`StepTerms.multirow_weight_bytes`): XLA:CPU
  packs them into panels before multiplying, and read them at 3-12 GB/s where a one-row
  product streams them at 35. Priced at `multirow_weight_bandwidth`;
- attention's f32 scores (`StepTerms.score_bytes`): with tiny's 8-dimensional heads, QK^T and
  PV are thin matmuls around a softmax, and XLA:CPU went through the scores at 1.3-2.3 GB/s,
  their FLOPs at the matmul rate a tenth of the time. A 2,048-token prefill writes 128 MiB
  of them: left out, the model priced those prefills 7-18% short in the step fit, and the
  fit made up for them by slowing every matmul (fitted with a column of their own, one
  calibration's steps put them at 1.3 GB/s, where the micro-benchmark measured 1.3-2.3).
  Priced at `score_bandwidth`, kept as the micro-benchmark measured it.

Each constant is fitted (non-negative least squares on relative error) to programs that do only
that one thing, timed after a warm-up as the fastest of five runs (a collective's chains: of
three, `COLLECTIVE_REPEATS`), each blocking on its output (what the machine can do: on a shared
machine interference only adds):
1. launch: an elementwise op on meshes of 8, 64 and 256 devices: a fixed part and per device;
2. matmul: a chain of f32 matmuls on every device of a 2x2x2 mesh: the host's FLOP/s;
3. memory: a vector times a matrix far larger than the caches: the host's bytes/s, at which
   one-row matmuls read their weights and attention its KV cache;
4. multi-row weights: eight rows times the same matrix: bytes/s once its FLOPs are taken out;
5. activations: a thin matmul pair ([2048, 256]·[256, 4]·[4, 256]) on every device of a 4x4x4
   mesh, 270 MB of activations, past any cache: bytes/s once its FLOPs are taken out;
6. attention scores: the engine's attention (`model.attend`) of 32 sequences of 32 queries on
   32 heads against 32 positions on every device of a 2x2x2 mesh, 32 MiB of scores: bytes/s
   once its FLOPs are taken out;
7. collectives: each kind over groups of 2 to 256 devices, at two sizes, each call on its own
   input and into its own output, one after another, as a step calls them (`per_step_call`).
Programs that do one thing at a time run faster than a step, where 8 to 256 device threads
interleave small matmuls, copies and rendezvous on the same cores. So, as `tpu-v4-calibrated`
fits efficiencies to the paper's measured steps, the last stage times 19 real steps of the
engine (`STEP_POINTS`: ws2d/heads, ws1d/heads and wg-xy/batch, prefill and decode, on 1x4x2
and 4x4x4 at batch 64; wg-xyz/heads on 1x4x2 at batch 8; ws2d/batch decode, ws1d/batch
prefill and wg-xy/heads decode on 4x8x8 at batch 64; ws1d/heads and wg-xy/batch prefills of
64 x 32 tokens on 1x4x2. None is a configuration
`benchmarks/bench_measure.py` checks against, though the 1x4x2 wg-xyz steps share their 8
devices and batch with its 2x2x2 wg-xyz steps and the 4x8x8 ones their mesh with its batch-256
steps; 2x4x8 is a mesh it never runs) and fits seven numbers to them: the efficiencies of the
FLOP/s, the multi-row weight bytes/s and the activation bytes/s; one factor on every
collective's time but its fixed part, and one on the fixed part (`call_s`: what one call
costs whatever the devices, which a lone chain of calls pays in full but a step's other work
can fill: 7 of 10 fits on this project's machine put it at 0, the others at 0.04-0.28); the
dispatch cost of one layer per device; and the rate of the copies that put gathered weights
in place (`StepTerms.relayout_bytes`: the engine gathers a weight along a new first
dimension, then transposes it into place). That rate has no micro-benchmark: a copy's speed
depends on the weight's shape (a [2048, 1024] weight's went at 2-5 GB/s, run to run; the tiny
model's, in its steps, at 6-11). One-row weight reads and the KV cache keep the
micro-benchmark's rate: the steps have too few of them to fit it.

Steps as large as the book's (chapter 5's 2,048-token prefills) are among the fitted steps, and
every step's time is scaled by the drift probe timed beside it (`tpuinfer.drift`, `step_samples`):
the profile keeps the probe's time, so a later measurement can say how much faster or slower
the machine runs than when it was calibrated.

What a layer costs a device beyond its matmuls and collectives grows with the devices sharing
the cores (2- against 6-layer ws1d/heads decodes: 28-96 µs per device on 8 devices, 80-151 on
256). The profile prices it as one cost per layer per device (`layer_overhead_s`), not as a term
that grows with the devices, because the steps cannot tell such a term from the collectives':
fitted with a column growing as log2(devices) beside it, one calibration's 19 steps gave the
whole per-layer cost to that column and halved the collectives' factor (0.85 to 0.42: a call's
rendezvous, chips·device_s + chips·group·member_s, already grows with the devices), and the
held-out 2x2x2 decodes went from 5% to 17% median error (a column growing as the devices did
no better). The growth is priced where the steps can pin it: in the collectives' terms.

Everything runs in f32, as `measure` does by default. XLA:CPU has no bf16 matrix unit, so a bf16
or int8 step runs slower than this profile predicts.

A fit outside physical bounds (an efficiency the steps did not pin down, say 1000x the
micro-benchmark's rate) fails with `CalibrationError`, and nothing is written: a profile that
predicts nonsense is worse than none. So does a micro-benchmark whose difference of chains is
not positive (the chain of four calls no slower than one), one whose FLOPs at the matmul rate
leave no time for the bytes it measures, and a launch fit whose fixed or per-device part is
negative: each error names the fit it stopped. A rate the steps leave out altogether (the fit zeroes
its column) keeps its micro-benchmark's value instead, and the command says so. The library
reports progress through a callback; the command line draws it and words the fitted numbers.
"""
from __future__ import annotations

import dataclasses
import math
import os
import statistics
import time
from collections.abc import Callable
from typing import NamedTuple, TypeVar

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from . import drift, model  # model: the engine's attention, for its micro-benchmark
from .config import get_model
from .cost import estimate
from .errors import TpuinferError, UsageError
from .hardware import HOST_KINDS, HardwareProfile
from .layouts import Layout
from .measure import PRECISE, measure, on_backend
from .mesh import make_mesh
from .planner import Progress

T = TypeVar("T")
REPEATS = 5
# The collectives' chains, timed 2 x 41 times, most on 256 devices (a 256-member all-to-all
# runs about 0.2 s a call here): three runs each, not five, to keep the calibration under a
# minute (20-23 s -> 16-17 s). Four fits of every kind on one idle machine, two with each
# count, moved as much between the two with five runs (one all-gather's fixed part 44 and
# 479 µs) as between five and three; the step fit scales every collective by its own factor.
COLLECTIVE_REPEATS = 3
# Physical bounds of a fit to real steps: a step's matmuls or weight reads can run at most 4x the
# rate of the one-thing-at-a-time micro-benchmark (whose bytes come from DRAM; a small step's
# weights can sit in the last-level cache) and at least 1/100 of it; its collectives and
# dispatch likewise. Outside them the steps did not separate the terms.
EFFICIENCY_BOUNDS = (0.01, 4.0)  # FLOP/s and bytes/s, as fractions of the micro-benchmarks'
COLLECTIVE_FACTOR_BOUNDS = (0.1, 100.0)  # every collective's time in a step, x the benchmark's
LAYER_S_BOUNDS = (0.0, 0.01)  # seconds per layer per device outside matmuls and collectives


class CalibrationError(TpuinferError):
    """The measurements did not give a physical host profile; nothing was written."""


BUSY = ("a busy machine does this: run `tpuinfer calibrate` again on an idle one. No host "
        "profile written.")


def per_call_s(chain_s: float, one_s: float, calls: int, what: str) -> float:
    """Seconds of one call, from a chain of `calls` dependent calls and a chain of one (the
    program's launch cancels in their difference). A difference that is not positive says
    the timing was lost in noise: `CalibrationError` naming `what`."""
    t = (chain_s - one_s) / (calls - 1)
    if not t > 0:
        raise CalibrationError(
            f"calibration failed: {what}: {calls} chained calls took {chain_s * 1e6:.0f} µs, "
            f"one {one_s * 1e6:.0f} µs, so one call's time cannot be fitted; {BUSY}")
    return t


def without_flops(t: float, flops_s: float, what: str) -> float:
    """The part of a micro-benchmark's `t` seconds its bytes took, once its FLOPs' time at the
    matmul rate (`flops_s`) is taken out. Under a tenth of `t` the two rates were not told
    apart: `CalibrationError` naming `what`."""
    if not t - flops_s >= t / 10:
        raise CalibrationError(
            f"calibration failed: {what}: its FLOPs at the measured matmul rate take "
            f"{flops_s * 1e6:.0f} µs of its {t * 1e6:.0f} µs, leaving too little for its bytes "
            f"to be fitted; {BUSY}")
    return t - flops_s
FULL = (4, 8, 8)  # calibration needs the paper's largest mesh: 256 emulated devices
# f32 elements per device of a collective's input: small (1 KiB: latency) and large (128 KiB:
# 32 MiB over the 256 devices, past the caches, as the tiny model's larger steps move)
SMALL, LARGE = 256, 32768
# (mesh, axes, elements): groups of 2 to 256 devices, meshes of 8, 64 and 256, two sizes. Small
# groups on each mesh separate a call's cost per device from its cost per member (a step's
# weight gathers run in groups of 2 to 8): a group of 4 on 4x8x8 cost 14 µs per device, one of
# 8 25 µs, one of 64 on 4x4x4 107 µs. Both sizes in groups of 4 and 8: an all-gather's bytes
# grow with its group, so at one size its cost per member and per byte cannot be told apart.
COLLECTIVE_POINTS = [
    ((2, 2, 2), ("x",), SMALL),
    ((2, 2, 2), ("x", "y", "z"), SMALL), ((2, 2, 2), ("x", "y", "z"), LARGE),
    ((4, 4, 4), ("x",), SMALL), ((4, 4, 4), ("x",), LARGE),
    (FULL, ("x",), SMALL), (FULL, ("z",), LARGE),
    (FULL, ("y", "z"), SMALL), (FULL, ("x", "y", "z"), SMALL),
]
PERMUTE_POINTS = [((2, 2, 2), ("z",), SMALL), ((2, 2, 2), ("z",), LARGE),
                  (FULL, ("z",), SMALL), (FULL, ("z",), LARGE), (FULL, ("x",), SMALL)]


def timed(fn, *args, fastest: bool = False, repeats: int = REPEATS) -> float:
    """Seconds per call: compile and one warm-up, then the median of `repeats` runs, or with
    `fastest` the fastest of them (the micro-benchmarks: what the machine can do; on a shared
    machine interference only adds, and a difference of two medians was noise-bound)."""
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return min(times) if fastest else statistics.median(times)


def _per_device(mesh, elems: int, dtype=jnp.float32):
    """An array of `elems` elements on every device of `mesh`."""
    sharding = NamedSharding(mesh, P(mesh.axis_names))
    return jax.device_put(np.ones(mesh.size * elems, dtype), sharding)


def _on_each_device(mesh, body):
    spec = P(mesh.axis_names)
    return jax.jit(jax.shard_map(body, mesh=mesh, in_specs=spec, out_specs=spec,
                                 check_vma=False))


# ---- 1-4: what one device does ---------------------------------------------------------------
def launch_times() -> list[tuple[int, float]]:
    """(devices, seconds) of a program that adds one to a small vector on every device."""
    out = []
    for shape in ((2, 2, 2), (4, 4, 4), FULL):
        mesh = make_mesh(shape)
        out.append((mesh.size, timed(_on_each_device(mesh, lambda x: x + 1), _per_device(mesh, 8),
                                     fastest=True)))
    return out


def per_call(mesh, one, x, what: str) -> float:
    """Seconds of one call of `one` (x -> x of the same shape) on every device of `mesh`: the
    difference between chains of 1 and 4 dependent calls, so the program's launch cancels
    (`per_call_s`; `what` names the benchmark if that fails)."""
    def chain(n):
        def body(x):
            for _ in range(n):  # dependent: nothing overlaps its neighbour
                x = one(x)
            return x
        return timed(_on_each_device(mesh, body), x, fastest=True)
    return per_call_s(chain(4), chain(1), 4, what)


def matmul_flops_per_s() -> float:
    """The host's f32 matmul FLOP/s, all devices of a 2x2x2 mesh at once."""
    mesh, m, k = make_mesh((2, 2, 2)), 256, 512
    w = jnp.full((k, k), 1.0 / k, jnp.float32)
    t = per_call(mesh, lambda x: (x.reshape(m, k) @ w).reshape(-1), _per_device(mesh, m * k),
                 "matmul FLOP/s")
    return 2 * m * k * k * mesh.size / t


ACTIVATION_SHAPE = (2048, 256, 4)  # rows, E, columns: a ws1d slice of F on a large mesh


def activation_bytes_per_s(flops_per_s: float) -> float:
    """The host's bytes/s through thin matmuls: x[m, k]·w[k, n]·w2[n, k] on every device of a
    4x4x4 mesh (64 x 4 MiB of activations in and out, past the caches), counted as
    `StepTerms.activation_traffic_bytes` counts them, its FLOPs' time (at `flops_per_s`)
    taken out."""
    mesh, (m, k, n) = make_mesh((4, 4, 4)), ACTIVATION_SHAPE
    w, w2 = jnp.full((k, n), 1.0 / k, jnp.float32), jnp.full((n, k), 1.0 / n, jnp.float32)
    what = "activation bytes/s"
    t = per_call(mesh, lambda x: ((x.reshape(m, k) @ w) @ w2).reshape(-1),
                 _per_device(mesh, m * k), what)
    flops_s = 4 * m * k * n * mesh.size / flops_per_s
    return 2 * m * (k + n) * 4 * mesh.size / without_flops(t, flops_s, what)


# sequences, queries, heads, cached positions of a chip's attention: half the 2,048-token
# prefill's on 8 devices by heads (64 sequences of 32 queries, 32 of tiny's 256 heads): 32 MiB of
# scores over 2x2x2, past the caches, timed in about a second
SCORE_SHAPE = (32, 32, 32, 32)


def score_bytes_per_s(flops_per_s: float) -> float:
    """The host's bytes/s through attention's f32 scores (`StepTerms.score_bytes`): the
    engine's own attention (`model.attend`, multiquery, tiny's 8-dimensional heads) on every
    device of a 2x2x2 mesh, its QK^T and PV FLOPs' time (at `flops_per_s`) taken out."""
    mesh, (b, l, h, s), d = make_mesh((2, 2, 2)), SCORE_SHAPE, get_model("tiny").D
    cache = {"k": jnp.full((b, s, 1, d), 0.1, jnp.float32),
             "v": jnp.full((b, s, 1, d), 0.1, jnp.float32)}
    what = "attention score bytes/s"
    t = per_call(mesh, lambda q: model.attend(q.reshape(b, l, h, d), cache,
                                              jnp.int32(s - l)).reshape(-1),
                 _per_device(mesh, b * l * h * d), what)
    scores = b * l * h * s * mesh.size
    return 4 * scores / without_flops(t, 4 * scores * d / flops_per_s, what)


def multirow_weight_bytes_per_s(flops_per_s: float) -> float:
    """The host's bytes/s reading weights in matmuls of more than one row: x[8, k]·W[k, k]
    with a 16 MiB W on every device of a 2x2x2 mesh (chains of 1 and 4, so the launch
    cancels), its FLOPs' time (at `flops_per_s`) taken out. XLA:CPU packs W into panels
    first; a one-row product (`memory_bytes_per_s`) streams it 3-10x faster."""
    mesh, m, k = make_mesh((2, 2, 2)), 8, 2048
    w = jnp.full((k, k), 1.0 / k, jnp.float32)
    what = "multi-row weight bytes/s"
    t = per_call(mesh, lambda x: (x.reshape(m, k) @ w).reshape(-1), _per_device(mesh, m * k),
                 what)
    flops_s = 2 * m * k * k * mesh.size / flops_per_s
    return 4 * k * k * mesh.size / without_flops(t, flops_s, what)


def memory_bytes_per_s() -> float:
    """The host's bytes/s reading weights: vector-matrix products with a 16 MiB matrix on each
    device, each product feeding the next (chains of 1 and 4, so the launch cancels)."""
    mesh, k = make_mesh((2, 2, 2)), 2048

    def chain(n):
        def body(w):
            v = jnp.ones((1, k), w.dtype)
            for _ in range(n):
                v = v @ w.reshape(k, k)
            return v.reshape(-1)
        return timed(_on_each_device(mesh, body), _per_device(mesh, k * k), fastest=True)
    return 4 * k * k * mesh.size / per_call_s(chain(4), chain(1), 4, "memory bytes/s")


# ---- 5: collectives --------------------------------------------------------------------------
def _collective(kind: str, axes, mesh):
    """One collective of `kind` over `axes`, x -> its result, and its bytes per device under the
    convention of `tpuinfer.terms` for e f32 elements of x."""
    group = math.prod(mesh.shape[a] for a in axes)
    if kind == "all-gather":
        return (lambda x: jax.lax.all_gather(x, axes, tiled=True)), lambda e: 4 * e * group
    if kind == "reduce-scatter":
        return (lambda x: jax.lax.psum_scatter(x, axes, tiled=True)), lambda e: 4 * e
    if kind == "all-reduce":
        return (lambda x: jax.lax.psum(x, axes)), lambda e: 4 * e
    if kind == "all-to-all":
        return (lambda x: jax.lax.all_to_all(x, axes, 0, 0, tiled=True)), lambda e: 4 * e
    (axis,) = axes  # a ring shift round one axis, as Looped CollectiveEinsum sends
    n = mesh.shape[axis]
    return (lambda x: jax.lax.ppermute(x, axis, [(i, (i + 1) % n) for i in range(n)]),
            lambda e: 4 * e)


CHAIN = 4  # calls in the longer chain of `per_step_call`


def per_step_call(mesh, one, elems: int) -> float:
    """Seconds of one call of the collective `one` on every device of `mesh`, called as a step
    calls it: each call on its own input and into its own output (a step's collectives move
    different tensors one after another; one buffer passed round a chain stays in the cache
    and ran twice as fast), the calls in order. The difference between chains of 1 and
    `CHAIN` calls, so the program's launch cancels: a call cheaper than the timing's noise
    may come out at or below zero, which `fit_collective` leaves out as it leaves out every
    call below `NOISE_S`."""
    spec = P(mesh.axis_names)
    xs = [_per_device(mesh, elems) for _ in range(CHAIN)]

    def chain(n):
        def body(*xs):
            first = jnp.zeros((), jnp.float32)
            for x in xs[:n]:
                # the barrier orders each call after the last (it reads one number of it)
                # without copying x: the calls run one after another, as in a step
                x, first = jax.lax.optimization_barrier((x, first))
                first = first + one(x).reshape(-1)[0]
            return jnp.full((1,), first)
        program = jax.jit(jax.shard_map(body, mesh=mesh, in_specs=(spec,) * CHAIN,
                                        out_specs=spec, check_vma=False))
        return timed(program, *xs, fastest=True, repeats=COLLECTIVE_REPEATS)
    return (chain(CHAIN) - chain(1)) / (CHAIN - 1)


def collective_samples(kind: str) -> list[tuple[int, int, float, float]]:
    """(devices, group, bytes per device, seconds of one call)."""
    out = []
    for shape, axes, elems in (PERMUTE_POINTS if kind == "collective-permute"
                               else COLLECTIVE_POINTS):
        mesh = make_mesh(shape)
        one, nbytes = _collective(kind, axes, mesh)
        group = math.prod(mesh.shape[a] for a in axes)
        out.append((mesh.size, group, float(nbytes(elems)), per_step_call(mesh, one, elems)))
    return out


NOISE_S = 50e-6  # a call's time below this is within the noise of `per_step_call`


def fit_collective(samples, kind: str = "collective") -> tuple[float, float, float, float]:
    """(call_s, device_s, member_s, byte_s) of one kind (`kind` names it in an error)."""
    from scipy.optimize import nnls  # scipy is slow to import and needed only to calibrate
    # a call timed below NOISE_S says only that it is cheap: one all-reduce on 8 devices came
    # out at 1 µs, and at its relative weight outweighed the rest 1000 times (the fit zeroed
    # every cost but the bytes'). The others weigh by relative error, small and large alike.
    kept = [s for s in samples if s[3] >= NOISE_S] or [s for s in samples if s[3] > 0]
    if len(kept) < 2:
        raise CalibrationError(
            f"calibration failed: {kind}: {len(kept)} of {len(samples)} timed calls came out "
            f"above zero, too few to fit a call's cost; {BUSY}")
    rows = np.array([[1.0, n, n * g, n * b] for n, g, b, _ in kept])
    t = np.array([s[3] for s in kept])
    w = 1.0 / t
    coef, _ = nnls(rows * w[:, None], t * w)
    return tuple(float(c) for c in coef)


def fit_launch(samples) -> tuple[float, float]:
    """(fixed s, s per device) through the (devices, seconds) samples. A negative part (a
    launch that costs less on more devices) is `CalibrationError`."""
    n = np.array([s[0] for s in samples], float)
    t = np.array([s[1] for s in samples])
    per_device, fixed = (float(c) for c in np.polyfit(n, t, 1))
    if fixed < 0 or per_device < 0:
        raise CalibrationError(
            f"calibration failed: launch: the fit through {len(samples)} meshes gives "
            f"{fixed * 1e6:.0f} µs + {per_device * 1e6:.2f} µs per device, a negative part; "
            f"{BUSY}")
    return fixed, per_device


# ---- the whole calibration --------------------------------------------------------------------
# A micro-benchmark whose fit is not physical (a negative part, a difference lost in noise) is
# timed again, up to this many times in all, before the calibration gives up: each takes a
# second or less, and one noisy second of a shared machine refused a whole calibration (1 of
# 3 runs of `bench_measure.py runs`, its launch fit -157 µs + 32 µs per device)
MICRO_TRIES = 3


def again(stage: Callable[[], T], tries: int = MICRO_TRIES) -> T:
    """`stage()`, called again while it raises `CalibrationError`, `tries` calls at most;
    the last error, saying how many times it was timed, if none succeeds."""
    for _ in range(tries - 1):
        try:
            return stage()
        except CalibrationError:
            pass  # a noisy reading: timed again below
    try:
        return stage()
    except CalibrationError as e:
        raise CalibrationError(str(e).replace("calibration failed: ",
                                              f"calibration failed ({tries} tries): ", 1)) from e


@dataclasses.dataclass(frozen=True)
class Calibration:
    """The fitted `host` profile (not yet saved: `save_host_profile` writes it) and the fit's
    numbers that the profile does not keep, for the command line to report."""
    profile: HardwareProfile
    launch_fixed_s: float  # a program's fixed launch (the profile keeps the per-device part)
    collective_factor: float  # every collective's benchmark time x this in a real step
    activation_efficiency: float  # the steps' activation bytes/s over the micro-benchmark's
    multirow_efficiency: float  # and their multi-row weight bytes/s
    worst_residual: float  # the step fit's largest relative error
    steps: int  # real steps fitted
    seconds: float  # the calibration's wall time
    unpinned: tuple[str, ...] = ()  # rates the steps left out: the micro-benchmarks' kept
    call_factor: float = 1.0  # every collective's fixed part in a real step, x the benchmark's
    micro_collectives: tuple = ()  # the collectives as benchmarked, before the step fit
    probe_spread: float = 0.0  # the drift probe's slowest time beside a step over its fastest


STAGES = ("launch", "matmul", "memory", "multi-row weights", "activations",
          "attention scores", *HOST_KINDS, "steps")


def calibrate(progress: Progress | None = None) -> Calibration:
    """Run every micro-benchmark on the emulated mesh and fit the `host` profile. Needs 256
    emulated devices (`tpuinfer.emulate`). `progress(done, total, what)` before each stage.
    Raises CalibrationError when the fit is not physical (nothing is saved here anyway)."""
    if jax.device_count() < math.prod(FULL):
        raise UsageError(f"calibration runs on the 4x8x8 mesh but JAX has {jax.device_count()} "
                         "device(s); restart and call tpuinfer.emulate(256) first (the "
                         "`tpuinfer calibrate` command does)")
    machine_bytes = _memory_bytes()
    if machine_bytes is None:  # before a minute of benchmarks, not after
        raise CalibrationError("calibration failed: cannot read this machine's memory size "
                               "(os.sysconf SC_PAGE_SIZE, SC_PHYS_PAGES); the host profile needs "
                               "it to say what fits. No host profile written.")
    step = progress or (lambda done, total, what: None)
    t0 = time.perf_counter()
    step(0, len(STAGES), "launch")
    fixed, per_device = again(lambda: fit_launch(launch_times()))
    step(1, len(STAGES), "matmul")
    flops = again(matmul_flops_per_s)
    step(2, len(STAGES), "memory")
    memory = again(memory_bytes_per_s)
    step(3, len(STAGES), "multi-row weights")
    multirow = again(lambda: multirow_weight_bytes_per_s(flops))
    step(4, len(STAGES), "activations")
    activations = again(lambda: activation_bytes_per_s(flops))
    step(5, len(STAGES), "attention scores")
    scores = again(lambda: score_bytes_per_s(flops))
    collectives = []
    for i, kind in enumerate(HOST_KINDS):
        step(6 + i, len(STAGES), kind)
        collectives.append((kind, *again(lambda: fit_collective(collective_samples(kind),
                                                                  kind))))
    micro = HardwareProfile(
        name="host",
        description=f"this machine ({os.cpu_count() or 1} cores) as an emulated mesh, "
                    "calibrated by `tpuinfer calibrate`",
        peak_flops=flops, hbm_bytes=memory_per_device(machine_bytes, jax.device_count()),
        hbm_bandwidth=memory, interconnect="host", link_bandwidth=0.0, hop_latency_s=0.0,
        max_chips=jax.device_count(), device_overhead_s=per_device,
        host_collectives=tuple(collectives), rule="sum", activation_bandwidth=activations,
        multirow_weight_bandwidth=multirow, score_bandwidth=scores)
    step(len(STAGES) - 1, len(STAGES), "steps")
    samples = step_samples(micro)
    fit = fit_steps(micro, samples.rows)
    step(len(STAGES), len(STAGES), "done")
    profile = fit.profile.replace(probe_s=samples.probe_s)
    return Calibration(profile, fixed, fit.collective_factor,
                       profile.activation_bandwidth / activations,
                       profile.multirow_weight_bandwidth / multirow, fit.worst, len(STEP_POINTS),
                       time.perf_counter() - t0, fit.unpinned, fit.call_factor,
                       micro.host_collectives, samples.probe_spread)


# ---- the efficiencies, from real steps --------------------------------------------------------
STEP_TOKENS, STEP_CONTEXT = 8, 16
# (mesh, batch, ffn, attention, phase, prompt tokens of a prefill; None in decode)
STEP_POINTS = [(shape, batch, ffn, attention, phase, STEP_TOKENS if phase == "prefill" else None)
               for shape, batch in (((1, 4, 2), 64), ((4, 4, 4), 64))
               for ffn, attention in (("ws2d", "heads"), ("ws1d", "heads"), ("wg-xy", "batch"))
               for phase in ("prefill", "decode")] + [
    # gathers every weight and copies it into place: the steps above alone left the copies'
    # rate unpinned. At batch 8 each chip's decode is one row, so these copies are not tied
    # to multi-row weight reads (at batch 64 they were, and the fit lost one of the two)
    ((1, 4, 2), 8, "wg-xyz", "heads", phase, STEP_TOKENS if phase == "prefill" else None)
    for phase in ("prefill", "decode")] + [
    # 256 device threads on the same cores: what a layer costs beyond its matmuls and
    # collectives grows with them (2- against 6-layer ws1d/heads decodes: 96 µs per device
    # on 1x4x2, 151 on 4x8x8), and fitted on 8 and 64 devices alone the model priced 4x8x8
    # steps 13-36% short. At batch 64 and in layouts `bench_measure.py` does not run there
    ((4, 8, 8), 64, "ws2d", "batch", "decode", None),
    ((4, 8, 8), 64, "ws1d", "batch", "prefill", STEP_TOKENS),
    ((4, 8, 8), 64, "wg-xy", "heads", "decode", None)] + [
    # steps as large as the book's largest (chapter 5's prefills of 64 sequences of 32 tokens,
    # 2,048 tokens a step, on 2x2x2): fitted on steps of 512 tokens at most, the model priced
    # those 24-33% short. On 1x4x2, the same devices and size, so chapter 5's stay held out
    ((1, 4, 2), 64, "ws1d", "heads", "prefill", 32),
    ((1, 4, 2), 64, "wg-xy", "batch", "prefill", 32)]
# the copies of gathered weights into place: their column in the fit is seconds at this rate
RELAYOUT_NOMINAL = 10e9
RELAYOUT_BOUNDS = (0.2e9, 200e9)  # bytes/s, the whole host's
# timed as the benchmark times (`measure.PRECISE`), within shorter budgets, twice
# (`step_samples`): under a minute in all
STEP_TIMING = PRECISE | {"budget_s": 0.25, "warmup_s": 0.1, "min_runs": 6,
                         "drift_probe": False}  # the calibration times the probe itself
STEP_PASSES = 2
# A pass after the first runs each step without a warm-up (`measure` warms up only an
# executable this process has not run): it ran seconds before. Measured over three rounds of
# the 19 steps, each timed both ways back to back in alternating order: unwarmed / warmed
# 0.997 (geometric mean; 0.64-1.43, the spread of any two back-to-back timings here), and a
# pass 11.3 s -> 7.5 s.
LATER_PASS_WARMUP_S = 0.0
# the drift probe's runs between two steps: two, not `drift.RUNS`, to keep the calibration
# under a minute (it is timed 40 times: before each pass and after each step)
CALIBRATION_PROBE_RUNS = 2


class StepSamples(NamedTuple):
    """What `step_samples` timed: the fit's rows, and the drift probe's time beside them."""
    rows: list  # per step: (columns, seconds taken as measured, measured seconds): see below
    probe_s: float  # the drift probe's median time over the whole calibration
    probe_spread: float  # its slowest time beside a step over its fastest, less one


def step_samples(micro: HardwareProfile, points=None, probe=None) -> StepSamples:
    """Per real step of `points` (default `STEP_POINTS`): (the micro profile's [compute,
    multi-row weights, activations, collectives but their fixed part, chips·layers] seconds or
    units, the gathered weights' copies into place at `RELAYOUT_NOMINAL` and the collectives'
    fixed part (`call_s` of each call), the seconds taken as measured (dispatch, and the
    one-row weight and KV reads: streamed at the micro-benchmark's rate), the measured
    seconds).

    This machine's speed moves by up to 40% for tens of seconds at a time (seen from one pass
    over the same steps to the next, nothing else running). So the drift probe
    (`tpuinfer.drift`; `probe`, a function of no arguments returning its seconds, replaces it
    in tests) is timed between every two steps, each step's time is scaled to the probe's
    median over the whole calibration (`probe_s`, which the profile keeps: a measurement
    scales its prediction by the probe's time then against it), and each step is timed in
    `STEP_PASSES` passes over all of them (warmed up in the first only), the faster of its
    scaled medians kept."""
    points = STEP_POINTS if points is None else points
    probe = probe or (lambda: drift.probe_seconds(CALIBRATION_PROBE_RUNS))
    steps = [[] for _ in points]  # each step's (measurement, probe beside it) in every pass
    for k in range(STEP_PASSES):
        before = probe()
        warmup_s = STEP_TIMING["warmup_s"] if k == 0 else LATER_PASS_WARMUP_S
        for runs, point in zip(steps, points):
            m = _step(*point, warmup_s=warmup_s)
            after = probe()
            runs.append((m, (before + after) / 2))
            before = after
    probes = [p for runs in steps for _, p in runs]
    reference = statistics.median(probes)
    out = []
    for runs, (shape, *_) in zip(steps, points):
        m = runs[-1][0]  # every pass has the same terms
        terms = on_backend(m.terms, shape, m.backend)  # priced as compiled here
        e = estimate(m.model, m.layout, shape, batch=m.batch, tokens=m.tokens,
                     context=m.context, weights=m.weights, hardware=micro, terms=terms)
        chips = math.prod(shape)
        multirow_s = chips * terms.multirow_weight_bytes / micro.multirow_weight_bandwidth
        layers = chips * get_model(m.model).n_layers
        relayout_s = chips * terms.relayout_bytes / RELAYOUT_NOMINAL
        call_s = sum(t.rounds * micro.host_collective(t.collective.kind)[0]
                     for t in e.collectives)
        # attention's scores at their micro-benchmark's rate, as measured: the fit's column of
        # activations is the matmuls' alone
        scores_s = chips * terms.score_bytes / micro.score_bandwidth if micro.score_bandwidth else 0
        out.append(([e.compute_s, multirow_s, e.activations_s - scores_s, e.comm_s - call_s,
                     layers, relayout_s, call_s],
                    e.overhead_s + e.weights_s - multirow_s + e.kv_s + scores_s,
                    min(r.measured.time_s * reference / p for r, p in runs)))
    return StepSamples(out, reference, max(probes) / min(probes) - 1)


def _step(shape, batch, ffn, attention, phase, tokens=None, warmup_s=STEP_TIMING["warmup_s"]):
    return measure("tiny", shape, Layout(ffn, attention), phase=phase, batch=batch,
                   tokens=tokens, context=max(STEP_CONTEXT, tokens or 0),
                   **STEP_TIMING | {"warmup_s": warmup_s})


# the step fit's columns (`step_samples`) that a micro-benchmark measured, by name: the fit
# keeps that rate where the steps leave the column out
KEEP_IF_UNPINNED = {0: "FLOP/s", 1: "multi-row weight bytes/s", 2: "activation bytes/s",
                    3: "collective times"}
LEFT_OUT = 1e-6  # a column's fitted factor below this: nnls left it out (0 up to rounding)


class StepFit(NamedTuple):
    profile: HardwareProfile  # the micro-benchmarks' profile with the step fit's numbers
    collective_factor: float  # a collective's time but its fixed part, x the benchmark's
    call_factor: float  # and its fixed part (`call_s`), x the benchmark's
    worst: float  # the largest relative residual
    unpinned: tuple[str, ...]  # rates the steps left out: the micro-benchmarks' kept


def fit_steps(micro: HardwareProfile, samples) -> StepFit:
    """`micro` with the seven numbers fitted to real steps' `samples` (`step_samples`; see the
    module docstring). Raises CalibrationError when a fitted number lies outside its physical
    bounds."""
    from scipy.optimize import nnls  # scipy is slow to import and needed only to calibrate
    rows = np.array([s[0] for s in samples])
    t = np.array([s[2] - s[1] for s in samples])
    w = 1.0 / np.array([s[2] for s in samples])  # relative error
    coef, _ = nnls(rows * w[:, None], t * w)
    # A rate the fit zeroes (the steps explained without it: of seven fits this way, one left
    # the multi-row weights out, one on a busy machine the collectives) would be an infinite
    # one. It keeps its micro-benchmark's rate instead, as one-row reads do (the collectives
    # are timed as a step calls them), and the rest are fitted again around it.
    unpinned: list[int] = []
    while zeroed := [j for j in KEEP_IF_UNPINNED if coef[j] < LEFT_OUT and j not in unpinned]:
        unpinned += zeroed
        free = [j for j in range(rows.shape[1]) if j not in unpinned]
        rest, _ = nnls(rows[:, free] * w[:, None], (t - rows[:, unpinned].sum(axis=1)) * w)
        coef = np.ones(rows.shape[1])
        coef[free] = rest
    slow_flops, slow_multirow, slow_activations, slow_comm, layer_s, slow_relayout, call = (
        float(c) for c in coef)
    predicted = rows @ coef + [s[1] for s in samples]
    worst = float(np.max(np.abs(predicted - [s[2] for s in samples]) * w))
    fitted = {"FLOP/s efficiency": _inverse(slow_flops),
              "multi-row weight bytes/s efficiency": _inverse(slow_multirow),
              "activation bytes/s efficiency": _inverse(slow_activations)}
    wrong = [f"{name} {value:.3g} (physical: {EFFICIENCY_BOUNDS[0]} to {EFFICIENCY_BOUNDS[1]})"
             for name, value in fitted.items() if not _within(value, EFFICIENCY_BOUNDS)]
    if not _within(slow_comm, COLLECTIVE_FACTOR_BOUNDS):
        wrong.append(f"collectives x{slow_comm:.3g} (physical: {COLLECTIVE_FACTOR_BOUNDS[0]} to "
                     f"{COLLECTIVE_FACTOR_BOUNDS[1]})")
    if not _within(call, (0.0, COLLECTIVE_FACTOR_BOUNDS[1])):
        wrong.append(f"collectives' fixed part x{call:.3g} (physical: up to "
                     f"{COLLECTIVE_FACTOR_BOUNDS[1]})")
    if not _within(layer_s, LAYER_S_BOUNDS):
        wrong.append(f"{layer_s:.3g} s per layer per device (physical: up to "
                     f"{LAYER_S_BOUNDS[1]} s)")
    relayout = _inverse(slow_relayout) * RELAYOUT_NOMINAL
    if not _within(relayout, RELAYOUT_BOUNDS):
        wrong.append(f"copies of gathered weights at {relayout / 1e9:.3g} GB/s (physical: "
                     f"{RELAYOUT_BOUNDS[0] / 1e9:.3g} to {RELAYOUT_BOUNDS[1] / 1e9:.3g})")
    if wrong:
        raise CalibrationError(
            f"calibration failed: the fit to {len(samples)} real steps is not physical: "
            f"{'; '.join(wrong)}. The steps did not separate compute, memory and collectives "
            "(a busy machine does this); run `tpuinfer calibrate` again on an idle one. "
            "No host profile written.")
    scaled = tuple((kind, call * call_s, *(slow_comm * x for x in c))
                   for kind, call_s, *c in micro.host_collectives)
    profile = micro.replace(
        flops_efficiency=1 / slow_flops,
        multirow_weight_bandwidth=micro.multirow_weight_bandwidth / slow_multirow,
        activation_bandwidth=micro.activation_bandwidth / slow_activations,
        host_collectives=scaled, layer_overhead_s=layer_s, relayout_bandwidth=relayout)
    return StepFit(profile, slow_comm, call, worst, tuple(KEEP_IF_UNPINNED[j] for j in unpinned))


def _inverse(x: float) -> float:
    return 1 / x if x > 0 else math.inf  # nnls left the term out: an unbounded efficiency


def _within(x: float, bounds: tuple[float, float]) -> bool:
    return bounds[0] <= x <= bounds[1]


def memory_per_device(machine_bytes: float, devices: int) -> float:
    """A host profile's `hbm_bytes`: each emulated device's share of the machine's memory, so
    that `fits` compares a device's bytes with a device's memory, as on every chip (every
    device of the emulation may hold its part at once)."""
    return machine_bytes / devices


def _memory_bytes() -> float | None:
    """The host's memory (every emulated device shares it); None when the OS does not say."""
    try:
        return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):  # no sysconf (Windows), or no such name
        return None
