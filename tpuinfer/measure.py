"""Measurement: what the compiler emits for one step, beside what the cost model predicts.

`measure` compiles the very step the engine runs (`engine.compiled_step`, cached per
configuration and shared with `generate`), reads the optimised HLO of the compiled executable
(`tpuinfer.hlo`), its memory analysis and the placed parameters, times the step, and puts all
of it beside `tpuinfer.layouts.step_terms` for the same configuration.

Units and names are the cost model's (`tpuinfer.terms`), so the two sides compare directly:
- collective `bytes` are per device, under the convention written once in tpuinfer/terms.py:
  an all-gather counts its output, a reduce-scatter its input, an all-reduce, all-to-all or
  collective-permute its input. `count` is how many times the step runs it. `axes` are the
  mesh axes a group spans, in mesh order, axes of size 1 left out (a group over them is the
  same group; the compiled program never names them);
- `flops` are the weight matmuls' FLOPs per device (2 · N per token; attention's QK^T and PV
  are `attention_flops`);
- `memory_bytes` per device, what it holds from step to step: predicted, its weights and KV
  cache; measured, the compiled step's arguments and outputs (the donated cache counted once);
- `transient_bytes` per device, what the step adds while it runs: predicted, its largest
  activation plus the weights it holds gathered at once (one layer's, or the gathered table;
  `cost.memory_per_chip` adds them to the memory held); measured, the compiled step's
  temporaries. The engine compiles for XLA:CPU's memory-minimising scheduler
  (`engine.compiler_options`), so a weight-gathered layout gathers each weight just before
  its matmul, as on a device;
- `weight_bytes_per_device`: the parameters each device holds;
- `kv_bytes_per_device`: the KV cache each device holds: measured, the compiled step's cache
  arguments on one device (their shapes as the executable shards them, `Compiled.
  input_shardings`); predicted, the terms' stored KV bytes (`StepTerms.stored_kv_bytes`, in
  the cache's format: `kv`);
- `time_s`: measured, the median step; predicted, the cost model on the `host` profile that
  `tpuinfer calibrate` writes (None until it has run), with the TPU v4 prediction beside it,
  labelled as such;
- a mixture of experts: the prediction is of the compiled program, every local expert over its
  whole capacity buffer (`step_terms(..., experts="all")`); `dropped` is the routes the last
  timed run dropped over capacity, every sequence and layer (None when nothing ran).

One thing of the emulated machine is modelled here, not in the layouts: XLA:CPU has no bf16
or fp8 collectives; it widens every bf16 collective to f32 and every fp8 one to f16 (a convert
on each side). The prediction for a CPU-compiled step therefore counts them at the widened
size, and flags it (`Flag.COLLECTIVES_WIDENED`). Flags are facts; `tpuinfer.report` words
them.

On a mesh of replicas (`make_mesh(shape, replicas=R)`) the prediction is one replica's step
(its x, y, z and B/R sequences), and each measured collective's `axes` name every mesh axis
its groups span, 'r' included: a collective inside one replica's group never names 'r'.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import statistics
import time
import weakref
from collections import defaultdict

import jax
import jax.numpy as jnp
import numpy as np

from . import caches, drift, engine, hlo, placement
from .config import ModelConfig, get_model
from .cost import estimate
from .errors import UsageError
from .hardware import get_hardware, host_profile_path
from .kv_formats import check_kv
from .kv_formats import resolve as kv_format
from .layouts import Layout, step_terms
# what a measurement is (its sides, in the cost model's units, and its flags) imports no JAX;
# asked of `measure` too
from .measurement import (PHASES, WIDENED, Flag, Measurement, Memory, Side, count_by_kind,
                          relative_error, spread)
from .mesh import AXES, group_size, make_mesh, mesh_shape, replica_count
from .model import init_params
from .placement import global_array
from .quant import activation_dtype, check_format, prepare
from .terms import Collective, StepTerms

__all__ = ["measure", "PRECISE", "cache_bytes_per_device", "group_axes", "on_backend",
           "PHASES", "WIDENED", "Flag", "Measurement", "Memory", "Side", "count_by_kind",
           "relative_error", "spread"]

PROMPT, CACHE = 8, 16  # default prompt length (prefill) and cache length (decode)


def measure(cfg: ModelConfig | str, mesh, layout: Layout, *, phase: str = "prefill",
            batch: int, tokens: int | None = None, context: int | None = None,
            weights: str = "f32", params=None, seed: int = 0, repeats: int = 5,
            budget_s: float | None = None, progress=None, warmup_s: float = 0.0,
            min_runs: int | None = None, kv: str | None = None,
            drift_probe: bool = True) -> Measurement:
    """Compile (once per configuration), read and time one step, beside its prediction.

    `mesh`: a mesh from `make_mesh` (of replicas too: `batch` is then all replicas', and the
    prediction one replica's step on B/R of them), or its shape. `kv`: the KV cache's format
    (None: the activation dtype; "bf16", "int8", "fp8"). `tokens`: the prompt length of a prefill
    (default: `context`, else 8); a decode step processes 1. `context`: the cache length
    (default: the prompt in prefill, 16 in decode). `params`: unquantized parameters (default:
    `init_params(cfg, seed)`). The time is the median of the timed runs after one warm-up:
    at most `repeats`, fewer once the last `STABLE_RUNS` agree within `STABLE_SPREAD` or the
    timed runs have spent `budget_s` seconds (at least one runs); `runs` and `spread` say
    how many ran and how far apart. `warmup_s` warms the step for that many seconds of
    untimed runs first (at least one), and `min_runs` timed runs must pass before the last
    ones agreeing may stop timing: `PRECISE` sets both for a prediction's error, where the
    first runs' slowness would count as the model's. `repeats=0` reads the compiled step
    without running it (measured `time_s` is None). With a host profile, the drift probe
    (`tpuinfer.drift`) is timed before and after the step, and the host prediction scaled by
    how it compares with its time at calibration (`Measurement.drift`); `drift_probe=False`
    leaves it out (the calibration, which times the probe itself). `progress(done, total,
    what)` is called before the compile and before each run; an exception it raises stops the
    measurement (a widget's cancel).
    """
    cfg = get_model(cfg)
    mesh = mesh if not isinstance(mesh, (tuple, list)) else make_mesh(tuple(mesh))
    shape, replicas = mesh_shape(mesh), replica_count(mesh)
    tokens, context = _step_shape(phase, tokens, context)
    check_format(weights)
    check_kv(kv)
    if repeats < 0:
        raise UsageError(f"repeats must be >= 0 (timed runs after the warm-up), got {repeats}")
    if budget_s is not None and not budget_s > 0:
        raise UsageError(f"budget_s must be a positive number of seconds, got {budget_s}")
    if warmup_s < 0:
        raise UsageError(f"warmup_s must be >= 0 seconds of untimed runs, got {warmup_s}")
    engine.check_on(cfg, layout, mesh, batch)  # the engine's own errors, before any work
    per_replica = batch // replicas

    placed = _placed(cfg, layout.ffn, mesh, weights, seed) if params is None else \
        engine.place(prepare(params, weights), mesh, engine.param_specs(cfg, layout, weights,
                                                                     mesh_shape(mesh)))
    tokens_BL = global_array(np.zeros((batch, tokens), np.int32), mesh,
                             engine.token_spec_on(layout, mesh))
    cache = engine.init_cache(cfg, layout, mesh, batch, context, weights, kv)
    pos = jnp.int32(0 if phase == "prefill" else context - 1)
    progress = progress or (lambda done, total, what: None)
    progress(0, repeats + 1, "compiling")
    exe, compile_s = engine.compiled_step(cfg, layout, mesh, weights, placed, tokens_BL,
                                          cache, pos)
    drops = []  # a mixture of experts': each run's routes over capacity
    host, host_flag = _host_profile()
    probing = bool(repeats) and drift_probe and host is not None and host.probe_s > 0
    probe_s = [drift.probe_seconds()] if probing else []  # beside the step: before and after
    times = _time(exe, placed, tokens_BL, cache, pos, repeats, budget_s, progress, warmup_s,
                  STABLE_RUNS if min_runs is None else min_runs, drops) if repeats else []
    if probing:
        probe_s.append(drift.probe_seconds())
    machine = drift.factor(statistics.mean(probe_s), host.probe_s) if probing else None

    backend = mesh.devices.flat[0].platform
    act = jnp.dtype(activation_dtype(weights)).itemsize
    kv_name = kv_format(kv, act).name
    terms = step_terms(cfg, layout, shape, batch=per_replica, tokens=tokens, context=context,
                       weights=weights, act_bytes=act, kv=kv_name, experts="all")
    compiled, matmuls, memory, compiler_flops = _read(exe, mesh.size)
    full_shape = tuple(mesh.shape[a] for a in mesh.axis_names)

    measured = Side(
        collectives=_grouped(Collective(x.kind, group_axes(x.groups, full_shape,
                                                           mesh.axis_names),
                                        x.group_size, x.bytes, x.count, x.name, x.dtype)
                             for x in compiled),
        flops=sum(m.flops * m.count for m in matmuls if m.reads_argument),
        attention_flops=sum(m.flops * m.count for m in matmuls if not m.reads_argument),
        memory_bytes=float(memory.held), transient_bytes=float(memory.temporaries),
        weight_bytes_per_device=float(engine.local_bytes(placed)),
        time_s=statistics.median(times) if times else None,
        kv_bytes_per_device=float(cache_bytes_per_device(exe, cache)))
    kw = dict(batch=per_replica, tokens=tokens, context=context, weights=weights,
              replicas=replicas)
    host_time = None if host is None else estimate(
        cfg, layout, shape, **kw, kv=kv_name, hardware=host,
        terms=on_backend(terms, shape, backend)).step_s * (machine or 1.0)
    # The chip's own step: bf16 activations, and the cache asked for (else bf16 too). TPU v4
    # has no fp8 matmul: no chip prediction for fp8 weights.
    tpu_time = None if weights == "fp8" else estimate(cfg, layout, shape, **kw, kv=kv,
                                                      hardware="tpu-v4").step_s
    predicted = _predicted_side(terms, shape, backend, host_time)
    flags = _flags(terms, backend, predicted, measured) | host_flag | (
        {Flag.FLOPS_MISREAD} if hlo.flops_disagree(matmuls, compiler_flops) else set())
    return Measurement(cfg.name, shape, layout, phase, batch, tokens, context, weights, backend,
                       predicted, measured, terms, compiled, memory, tuple(times), compile_s,
                       tpu_time, flags, compiler_flops, kv_name, replicas,
                       int(np.sum(np.asarray(drops[-1]))) if drops else None, machine)


def cache_bytes_per_device(exe, cache) -> int:
    """Bytes of the KV cache one device holds, as the compiled step takes it: each cache
    argument's shard shape under the executable's own input shardings (arguments: params,
    tokens, cache, pos), every layer's K and V and an int8 cache's scales."""
    shardings = jax.tree.leaves(exe.input_shardings[0][2])
    return sum(math.prod(s.shard_shape(x.shape)) * x.dtype.itemsize
               for x, s in zip(jax.tree.leaves(cache), shardings, strict=True))


# what measure read from each compiled step, held weakly: gone when the engine's cache drops it
_READ: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _read(exe, devices: int):
    """(collectives, matmuls, memory, the compiler's FLOPs) of a compiled step, read once per
    executable: parsing the HLO text of a 4x8x8 step took 0.7-1.0 s of a warm measurement's
    2.1 s (a batch-256 decode, on 2 cores)."""
    if exe not in _READ:
        module = hlo.parse(exe.as_text())
        stats = exe.memory_analysis()
        _READ[exe] = (tuple(hlo.collectives(module, devices)), tuple(hlo.matmuls(module)),
                      Memory(stats.argument_size_in_bytes, stats.output_size_in_bytes,
                             stats.alias_size_in_bytes, stats.temp_size_in_bytes),
                      _compiler_flops(exe))
    return _READ[exe]


def _compiler_flops(exe) -> float | None:
    """`cost_analysis()["flops"]` of a compiled step (a dict, or a list of one per program in
    older JAX); None where the backend gives none."""
    try:
        analysis = exe.cost_analysis()
    except Exception:  # noqa: BLE001 - some backends implement no cost analysis
        return None
    if isinstance(analysis, (list, tuple)):
        analysis = analysis[0] if analysis else {}
    flops = (analysis or {}).get("flops")
    return float(flops) if flops is not None and flops >= 0 else None


# ---- the step's inputs ----------------------------------------------------------------------
def _step_shape(phase, tokens, context) -> tuple[int, int]:
    if phase not in PHASES:
        raise UsageError(f"unknown phase {phase!r}; choose prefill or decode")
    if phase == "decode":
        if tokens not in (None, 1):
            raise UsageError(f"a decode step processes 1 token per sequence, got tokens={tokens}; "
                             "leave tokens out, or measure a prefill of that length")
        tokens, context = 1, context or CACHE
    else:
        tokens = tokens or context or PROMPT
        context = context or tokens
    if tokens < 1 or context < tokens:
        raise UsageError(f"a step needs tokens >= 1 and a cache of at least that many positions, "
                         f"got tokens={tokens}, context={context}")
    return tokens, context


@functools.lru_cache(maxsize=8)
def _placed(cfg, ffn: str, mesh, weights: str, seed: int):
    """`init_params(cfg, seed)` in a weight format, placed for a feed-forward layout (the
    parameter specs depend on nothing else), kept for the next measurement. On real devices
    the parameters are created in their shards; on the emulated mesh on the host, whose
    initializers compile once for every mesh (`placement`)."""
    layout = Layout(ffn)
    shards = None if placement.through_host(mesh) else engine.param_shardings(cfg, layout, mesh)
    params = prepare(init_params(cfg, seed, shardings=shards), weights)
    return engine.place(params, mesh, engine.param_specs(cfg, layout, weights, mesh_shape(mesh)))


# the executables `_time` has run, held weakly: gone when the engine's cache drops them
_RAN: weakref.WeakSet = caches.register("tpuinfer.measure._RAN", weakref.WeakSet())


# Timed runs stop early once the last STABLE_RUNS lie within STABLE_SPREAD of their median.
# Five runs of one step on an idle 2-core machine spread over 11% (a batch-256 decode on 4x8x8,
# 0.56-0.63 s): three within 5% is as settled as the median gets here, and saves the rest.
STABLE_RUNS, STABLE_SPREAD = 3, 0.05
# For a prediction's error (`benchmarks/bench_measure.py`, `tpuinfer calibrate`'s steps): the
# first runs of a short step are slow (on 2 cores a 2x2x2 decode's first ten ran 9 ms down to
# 5 ms, as its threads and caches settle), and three runs agreeing within 5% by chance left
# a 2x2x2 ws2d decode's median anywhere from 4.1 to 7.8 ms from one call to the next; six calls
# of 41 runs each gave 4.4 to 5.3 ms. A long step stops at the budget (at least one run).
PRECISE = {"repeats": 41, "warmup_s": 0.2, "min_runs": 15, "budget_s": 3.0}


def _time(exe, params, tokens_BL, cache, pos, repeats, budget_s=None,
          progress=lambda done, total, what: None, warmup_s=0.0,
          min_runs=STABLE_RUNS, drops=None) -> list[float]:
    """Seconds per step: warm-up runs (one, unless an earlier measurement ran this very
    executable; more until `warmup_s` has passed), then up to `repeats` runs, each blocking on
    every output, until the last STABLE_RUNS agree (once `min_runs` have run) or `budget_s` is
    spent. The step donates its cache, so each run feeds the cache the previous one
    returned. A mixture of experts' step also returns its drops: each run's go to `drops`."""
    drops = [] if drops is None else drops
    t_warm = time.perf_counter()
    while exe not in _RAN or time.perf_counter() - t_warm < warmup_s:
        logits, cache, *dropped = exe(params, tokens_BL, cache, pos)
        jax.block_until_ready((logits, cache))
        _RAN.add(exe)
    times = []
    for k in range(repeats):
        progress(k + 1, repeats + 1, f"running step {k + 1} of at most {repeats}")
        t0 = time.perf_counter()
        logits, cache, *dropped = exe(params, tokens_BL, cache, pos)
        jax.block_until_ready((logits, cache))
        times.append(time.perf_counter() - t0)
        drops += dropped
        last = times[-STABLE_RUNS:]
        if len(times) >= min_runs and len(last) == STABLE_RUNS and spread(last) <= STABLE_SPREAD:
            break
        if budget_s is not None and sum(times) >= budget_s:
            break
    return times


# ---- the two sides in one vocabulary --------------------------------------------------------
def group_axes(groups, shape, axes=AXES) -> tuple[str, ...]:
    """The mesh axes along which the members of a collective's groups differ (device ids are
    positions in the mesh, row-major over `axes`: x, y, z, or r, x, y, z on a mesh of
    replicas)."""
    coords = np.stack(np.unravel_index(np.asarray(groups), shape), axis=-1)  # [G, K, axes]
    return tuple(a for i, a in enumerate(axes) if (coords[:, :, i] != coords[:, :1, i]).any())


def _grouped(collectives) -> tuple[Collective, ...]:
    """One entry per distinct (kind, axes, group, bytes, dtype), counts summed, largest first."""
    merged: dict[tuple, list] = defaultdict(lambda: [0, []])
    for x in collectives:
        entry = merged[(x.kind, x.axes, x.group, x.bytes, x.dtype)]
        entry[0] += x.count
        entry[1].append(x.what)
    out = [Collective(kind, axes, group, nbytes, count, "; ".join(dict.fromkeys(what)), dtype)
           for (kind, axes, group, nbytes, dtype), (count, what) in merged.items()]
    return tuple(sorted(out, key=lambda x: (x.kind, -x.bytes, x.axes)))


def on_backend(terms: StepTerms, shape, backend: str) -> StepTerms:
    """The terms as `backend` compiles them: axes of size 1 dropped, and bf16 collectives
    widened to f32 where the backend has none (XLA:CPU)."""
    widen = WIDENED.get(backend, {})

    def one(x: Collective) -> Collective:
        axes = tuple(a for a in AXES if a in x.axes and group_size(shape, (a,)) > 1)
        if x.dtype in widen:
            size = hlo.ITEMSIZE[widen[x.dtype]] / hlo.ITEMSIZE[x.dtype]
            return dataclasses.replace(x, axes=axes, bytes=x.bytes * size, dtype=widen[x.dtype])
        return dataclasses.replace(x, axes=axes)
    return dataclasses.replace(terms, collectives=tuple(one(x) for x in terms.collectives))


def _predicted_side(terms: StepTerms, shape, backend, host_time) -> Side:
    return Side(collectives=_grouped(on_backend(terms, shape, backend).collectives),
                flops=terms.flops, attention_flops=terms.attention_flops,
                memory_bytes=terms.stored_weight_bytes + terms.stored_kv_bytes,
                transient_bytes=float(terms.transient_bytes),
                weight_bytes_per_device=terms.stored_weight_bytes, time_s=host_time,
                kv_bytes_per_device=terms.stored_kv_bytes)


def _host_profile():
    """(the `host` profile or None, the flag that says why there is none)."""
    if not host_profile_path().exists():
        return None, {Flag.HOST_PROFILE_MISSING}
    try:  # an unreadable profile must not stop a measurement (or the calibration that
        return get_hardware("host"), set()  # measures steps to write a new one)
    except ValueError:
        return None, {Flag.HOST_PROFILE_UNREADABLE}


def _flags(terms: StepTerms, backend: str, predicted: Side, measured: Side) -> frozenset[Flag]:
    flags = set()
    if any(x.dtype in WIDENED.get(backend, {}) for x in terms.collectives):
        flags.add(Flag.COLLECTIVES_WIDENED)
    if measured.transient_bytes > 1.1 * predicted.transient_bytes:
        flags.add(Flag.TRANSIENT_ABOVE_PREDICTION)
    return frozenset(flags)
