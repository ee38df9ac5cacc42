"""`tpuinfer calibrate`: micro-benchmarks of this machine's emulated mesh, fitted into the `host`
hardware profile with which `measure` and the cost model predict wall time here.

An emulated mesh is not a set of chips: its devices are threads taking turns on the same few
cores. So the host profile is a shared-host profile (`interconnect="host"`, priced by
`cost.estimate`): the host's FLOP/s and memory bandwidth are shared by every device of the mesh,
so a step's per-device work costs `chips` times its one-device time; every device pays a fixed
dispatch cost per step and per layer; and one call of a collective of each kind costs

    call_s + chips·device_s + chips·group·member_s + chips·bytes·byte_s

a fixed part, a rendezvous part per device taking part, a part per message (each device
exchanges one with every member of its group in an all-to-all), and the copy of every device's
`bytes` (per device, under `tpuinfer.terms`' convention) through the one shared memory.

Each constant is fitted (non-negative least squares on relative error) to programs that do only
that one thing, timed as `measure` times a step (a warm-up, then the median of five runs, each
blocking on its output):
1. launch: an elementwise op on meshes of 8, 64 and 256 devices: a fixed part and per device;
2. matmul: a chain of f32 matmuls on every device of a 2x2x2 mesh: the host's FLOP/s;
3. memory: a vector times a matrix far larger than the caches: the host's bytes/s;
4. collectives: each kind over groups of 2 to 256 devices, at two sizes.
Programs that do one thing at a time run faster than a step, where 8 to 256 device threads
interleave small matmuls, copies and rendezvous on the same cores. So, as `tpu-v4-calibrated`
fits efficiencies to the paper's measured steps, the last stage times eight real steps of
the engine (two layouts, prefill and decode, on meshes of 8 and 64 devices: 1x4x2 and 4x4x4,
meshes `benchmarks/bench_measure.py` does not check against) and fits four numbers to them:
the FLOP/s and bytes/s efficiencies, one factor on every collective's time, and the dispatch
cost of one layer per device.
Everything runs in f32, as `measure` does by default. XLA:CPU has no bf16 matrix unit, so a bf16
or int8 step runs slower than this profile predicts.
"""
from __future__ import annotations

import functools
import math
import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from .config import get_model
from .hardware import HOST_KINDS, HardwareProfile, save_host_profile
from .mesh import make_mesh

REPEATS = 5
FULL = (4, 8, 8)  # calibration needs the paper's largest mesh: 256 emulated devices
# f32 elements per device of a collective's input: small (1 KiB: latency) and large (128 KiB:
# 32 MiB over the 256 devices, past the caches, as the tiny model's larger steps move)
SMALL, LARGE = 256, 32768
# (mesh, axes, elements): groups of 2 to 256 devices, meshes of 8 and 256, two sizes
COLLECTIVE_POINTS = [
    ((2, 2, 2), ("x", "y", "z"), SMALL), ((2, 2, 2), ("x", "y", "z"), LARGE),
    (FULL, ("z",), SMALL), (FULL, ("z",), LARGE),
    (FULL, ("y", "z"), SMALL), (FULL, ("x", "y", "z"), SMALL),
]
PERMUTE_POINTS = [((2, 2, 2), ("z",), SMALL), ((2, 2, 2), ("z",), LARGE),
                  (FULL, ("z",), SMALL), (FULL, ("z",), LARGE), (FULL, ("x",), SMALL)]


def timed(fn, *args) -> float:
    """Seconds per call: compile and one warm-up, then the median of REPEATS runs."""
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


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
        out.append((mesh.size, timed(_on_each_device(mesh, lambda x: x + 1), _per_device(mesh, 8))))
    return out


def per_call(mesh, one, x) -> float:
    """Seconds of one call of `one` (x -> x of the same shape) on every device of `mesh`: the
    difference between chains of 1 and 4 dependent calls, so the program's launch cancels."""
    def chain(n):
        def body(x):
            for _ in range(n):  # dependent: nothing overlaps its neighbour
                x = one(x)
            return x
        return timed(_on_each_device(mesh, body), x)
    return max((chain(4) - chain(1)) / 3, 1e-7)


def matmul_flops_per_s() -> float:
    """The host's f32 matmul FLOP/s, all devices of a 2x2x2 mesh at once."""
    mesh, m, k = make_mesh((2, 2, 2)), 256, 512
    w = jnp.full((k, k), 1.0 / k, jnp.float32)
    t = per_call(mesh, lambda x: (x.reshape(m, k) @ w).reshape(-1), _per_device(mesh, m * k))
    return 2 * m * k * k * mesh.size / t


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
        return timed(_on_each_device(mesh, body), _per_device(mesh, k * k))
    return 4 * k * k * mesh.size / max((chain(4) - chain(1)) / 3, 1e-7)


# ---- 5: collectives --------------------------------------------------------------------------
def _collective_body(kind: str, axes, mesh):
    """One collective of `kind` over `axes` as a map x -> x of the same shape (so calls chain),
    and its bytes per device under the convention of `tpuinfer.terms` for e f32 elements.
    What brings the result back to x's shape is a slice, a tile or an add of a per-device
    number (which keeps XLA from folding an all-reduce of an all-reduced value)."""
    group = math.prod(mesh.shape[a] for a in axes)
    mine = lambda: jax.lax.axis_index(axes[0]).astype(jnp.float32) * 1e-30
    if kind == "all-gather":
        return ((lambda x: jax.lax.all_gather(x, axes, tiled=True)[:x.shape[0]] + mine()),
                lambda e: 4 * e * group)
    if kind == "reduce-scatter":
        return (lambda x: jnp.tile(jax.lax.psum_scatter(x, axes, tiled=True), group),
                lambda e: 4 * e)
    if kind == "all-reduce":
        return (lambda x: jax.lax.psum(x, axes) + mine()), lambda e: 4 * e
    if kind == "all-to-all":
        return (lambda x: jax.lax.all_to_all(x, axes, 0, 0, tiled=True)), lambda e: 4 * e
    (axis,) = axes  # a ring shift round one axis, as Looped CollectiveEinsum sends
    n = mesh.shape[axis]
    return (lambda x: jax.lax.ppermute(x, axis, [(i, (i + 1) % n) for i in range(n)]),
            lambda e: 4 * e)


def collective_samples(kind: str) -> list[tuple[int, int, float, float]]:
    """(devices, group, bytes per device, seconds of one call)."""
    out = []
    for shape, axes, elems in (PERMUTE_POINTS if kind == "collective-permute"
                               else COLLECTIVE_POINTS):
        mesh = make_mesh(shape)
        body, nbytes = _collective_body(kind, axes, mesh)
        group = math.prod(mesh.shape[a] for a in axes)
        out.append((mesh.size, group, float(nbytes(elems)),
                    per_call(mesh, body, _per_device(mesh, elems))))
    return out


def fit_collective(samples) -> tuple[float, float, float, float]:
    """(call_s, device_s, member_s, byte_s) of one kind."""
    from scipy.optimize import nnls
    rows = np.array([[1.0, n, n * g, n * b] for n, g, b, _ in samples])
    t = np.array([s[3] for s in samples])
    w = 1.0 / np.maximum(t, 1e-6)  # relative error: small and large calls weigh alike
    coef, _ = nnls(rows * w[:, None], t * w)
    return tuple(float(c) for c in coef)


def fit_launch(samples) -> tuple[float, float]:
    """(fixed s, s per device) through the (devices, seconds) samples."""
    n = np.array([s[0] for s in samples], float)
    t = np.array([s[1] for s in samples])
    per_device, fixed = np.polyfit(n, t, 1)
    return max(float(fixed), 0.0), max(float(per_device), 0.0)


# ---- the whole calibration --------------------------------------------------------------------
def calibrate(progress=print) -> HardwareProfile:
    """Run every micro-benchmark on the emulated mesh and return the `host` profile (not yet
    saved: `save_host_profile` writes it). Needs 256 emulated devices (`tpuinfer.emulate`)."""
    if jax.device_count() < math.prod(FULL):
        raise ValueError(f"calibration runs on the 4x8x8 mesh but JAX has {jax.device_count()} "
                         "device(s); restart and call tpuinfer.emulate(256) first (the "
                         "`tpuinfer calibrate` command does)")
    t0 = time.perf_counter()
    fixed, per_device = fit_launch(launch_times())
    progress(f"launch: {fixed * 1e6:.0f} µs + {per_device * 1e6:.1f} µs per device")
    flops = matmul_flops_per_s()
    progress(f"matmul: {flops / 1e9:.1f} GFLOP/s (f32, whole host)")
    memory = memory_bytes_per_s()
    progress(f"memory: {memory / 1e9:.2f} GB/s (whole host)")
    collectives = []
    for kind in HOST_KINDS:
        coef = fit_collective(collective_samples(kind))
        collectives.append((kind, *coef))
        gb_per_s = 1 / coef[3] / 1e9 if coef[3] else math.inf
        progress(f"{kind}: {coef[0] * 1e6:.0f} µs + {coef[1] * 1e6:.2f} µs/device + "
                 f"{coef[2] * 1e9:.1f} ns/device/member + {gb_per_s:.2f} GB/s")
    cores = os.cpu_count() or 1
    micro = HardwareProfile(
        name="host",
        description=f"this machine ({cores} cores) as an emulated mesh, calibrated by "
                    "`tpuinfer calibrate`",
        peak_flops=flops, hbm_bytes=_memory_bytes(), hbm_bandwidth=memory,
        interconnect="host", link_bandwidth=0.0, hop_latency_s=0.0, max_chips=jax.device_count(),
        device_overhead_s=per_device, host_collectives=tuple(collectives), rule="sum")
    profile = fit_steps(micro, progress)
    progress(f"calibrated in {time.perf_counter() - t0:.0f} s")
    return profile


# ---- the efficiencies, from real steps --------------------------------------------------------
STEP_POINTS = [(shape, ffn, attention, phase) for shape in ((1, 4, 2), (4, 4, 4))
               for ffn, attention in (("ws2d", "heads"), ("wg-xy", "batch"))
               for phase in ("prefill", "decode")]
STEP_BATCH, STEP_TOKENS, STEP_CONTEXT = 64, 8, 16


def step_samples(micro: HardwareProfile) -> list[tuple[list[float], float, float]]:
    """Per real step: (the micro profile's [compute, memory, collectives, chips·layers] seconds
    or units, the launch seconds, the measured seconds)."""
    from .cost import estimate
    from .layouts import Layout
    from .measure import measure, on_backend
    out = []
    for shape, ffn, attention, phase in STEP_POINTS:
        layout = Layout(ffn, attention)
        tokens = STEP_TOKENS if phase == "prefill" else None
        m = measure("tiny", shape, layout, phase=phase, batch=STEP_BATCH, tokens=tokens,
                    context=STEP_CONTEXT, repeats=REPEATS)
        terms = on_backend(m.terms, shape, m.backend)  # priced as compiled here
        e = estimate(m.model, layout, shape, batch=m.batch, tokens=m.tokens, context=m.context,
                     weights=m.weights, hardware=micro, terms=terms)
        layers = math.prod(shape) * get_model(m.model).n_layers
        out.append(([e.compute_s, e.memory_s, e.comm_s, layers], e.overhead_s,
                    m.measured.time_s))
    return out


def fit_steps(micro: HardwareProfile, progress=print) -> HardwareProfile:
    """`micro` with the four numbers fitted to real steps (see the module docstring)."""
    from scipy.optimize import nnls
    samples = step_samples(micro)
    rows = np.array([s[0] for s in samples])
    t = np.array([s[2] - s[1] for s in samples])
    w = 1.0 / np.array([s[2] for s in samples])  # relative error
    (slow_flops, slow_memory, slow_comm, layer_s), _ = nnls(rows * w[:, None], t * w)
    predicted = rows @ [slow_flops, slow_memory, slow_comm, layer_s] + [s[1] for s in samples]
    worst = float(np.max(np.abs(predicted - [s[2] for s in samples]) * w))
    progress(f"steps: FLOP/s x{1 / max(slow_flops, 1e-3):.2f}, bytes/s "
             f"x{1 / max(slow_memory, 1e-3):.2f}, collectives x{slow_comm:.2f}, "
             f"{layer_s * 1e6:.1f} µs per layer per device; worst residual {worst:.0%} over "
             f"{len(samples)} steps")
    scaled = tuple((kind, *(slow_comm * x for x in coef))
                   for kind, *coef in micro.host_collectives)
    return micro.replace(flops_efficiency=1 / max(slow_flops, 1e-3),
                         hbm_efficiency=1 / max(slow_memory, 1e-3),
                         host_collectives=scaled, layer_overhead_s=float(layer_s))


def _memory_bytes() -> float:
    """The host's memory (every emulated device shares it)."""
    try:
        return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 0.0


# ---- command line ----------------------------------------------------------------------------
def register(sub) -> None:
    from .cli import add_json_flag
    p = sub.add_parser("calibrate", help="micro-benchmark this machine's emulated mesh and write "
                                         "the `host` hardware profile (under a minute)")
    add_json_flag(p)
    p.set_defaults(func=run)


def run(args):
    import dataclasses
    from .mesh import EmulationError, emulate
    try:
        emulate(math.prod(FULL))
    except EmulationError:
        pass  # already running: calibrate() says if it has too few devices
    lines = []  # with --json, the progress lines go into the object instead of the screen
    profile = calibrate(progress=lines.append if args.json else
                        functools.partial(print, flush=True))
    path = save_host_profile(profile)
    obj = dataclasses.asdict(profile) | {"path": str(path), "log": lines}
    return obj, f"wrote the host profile to {path}"
