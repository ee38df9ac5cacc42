"""Plain data for the book's plots: sweeps over the library's own functions.

Each function here calls `step_terms`, `cost.estimate`, `measure` or the planner and returns
lists and dicts, nothing drawn. The widgets (`tpuinfer_widgets`) plot exactly what these
return and compute nothing themselves, so a chapter can print, check or test the same numbers.
A configuration the library rejects keeps the library's ValueError message, word for word.
What a measurement flags (`measure.Flag`) is returned as flags; `tpuinfer.report` words them.
"""
from __future__ import annotations

import functools
import math

import numpy as np

from .config import ModelConfig, get_model
from .cost import estimate
from .errors import LayoutError, UsageError
from .hardware import HardwareProfile, get_hardware
from .kv import ATTENTION_VARIANTS, VARIANTS, kv_bytes_per_chip, max_context, variant_config
from .layouts import FFN_LAYOUTS, Layout, step_terms
from .measure import PRECISE, Flag, count_by_kind, measure
from .planner import Progress, pareto, plan
from .quant import activation_dtype, check_format

# Real steps on the emulated CPU mesh are for small models: every one of the 256 devices
# holds its own buffers, and init_params builds the whole model in f32 first. The tiny preset
# holds 15 MB; PaLM 8B would need 34 GB.
HOST_MODEL_BYTES = 128 * 2**20


def why_not_run(cfg: ModelConfig | str) -> str | None:
    """None when this machine runs real steps of `cfg`; otherwise why only the cost model
    can show it."""
    cfg = get_model(cfg)
    need = cfg.weight_bytes("f32")
    if need <= HOST_MODEL_BYTES:
        return None
    return (f"{cfg.name} holds {need / 2**30:.3g} GiB of f32 weights; real steps on this "
            f"machine's emulated mesh are for models up to {HOST_MODEL_BYTES / 2**20:.0f} MiB "
            "(the tiny preset), so only the cost model's prediction is shown")


def activation_bytes(weights: str) -> int:
    """Bytes per activation element as the engine computes in this weight format
    (`quant.activation_dtype`), as `measure` predicts it."""
    return np.dtype(activation_dtype(check_format(weights))).itemsize


# ---- one step: predicted against measured (the layout explorer) ----------------------------
def _side(collectives, flops, attention_flops, memory_bytes, weight_bytes, time_s) -> dict:
    by_kind = count_by_kind(collectives)
    return {"collective_bytes": {k: b for k, (_, b) in by_kind.items()},
            "collective_counts": {k: n for k, (n, _) in by_kind.items()},
            "flops": {"weight matmuls": flops, "attention": attention_flops},
            "memory_bytes": {"per device": memory_bytes, "weights held": weight_bytes},
            "time_s": time_s}


def step_comparison(cfg: ModelConfig | str, mesh_shape, layout: Layout, *, phase: str,
                    batch: int, context: int, weights: str = "f32",
                    hardware: str = "tpu-v4", repeats: int = 3,
                    budget_s: float | None = None) -> dict:
    """One step (a prefill of `context` prompt tokens, or a decode step over a cache of
    `context` positions) as up to three sides in the same units:

    - "predicted (this CPU)" and "measured (this CPU)": `measure.measure`'s two sides, when
      this machine runs the model (`why_not_run`);
    - "predicted (<hardware>)": `cost.estimate` on the chosen profile (bf16 activations, as
      the chip runs them): a prediction, never a measurement.

    Each side: collective bytes and counts per kind, FLOPs, memory per device and the step
    time in seconds (None where there is none: no host profile yet). Beside them: `ran`,
    `why_not_run` (None when it ran), the measurement's `flags` (`measure.Flag` values), its
    `runs` and `spread`, `host_error` (the host prediction's |predicted - measured| /
    measured, `Measurement.host_error`; None without a host profile), and the profile's
    `rule`. Raises the library's ValueError for a
    configuration the layout or the mesh cannot run. `step_prediction` then
    `with_measurement` are its two halves: the first at once, the second compiles and runs."""
    out = step_prediction(cfg, mesh_shape, layout, phase=phase, batch=batch, context=context,
                          weights=weights, hardware=hardware)
    return with_measurement(out, layout, repeats=repeats, budget_s=budget_s)


def step_prediction(cfg: ModelConfig | str, mesh_shape, layout: Layout, *, phase: str,
                    batch: int, context: int, weights: str = "f32",
                    hardware: str = "tpu-v4") -> dict:
    """`step_comparison` without this machine's sides (`ran` False): the cost model alone,
    computed at once, for a widget to draw before the measurement lands."""
    cfg = get_model(cfg)
    mesh_shape = tuple(int(s) for s in mesh_shape)
    tokens = context if phase == "prefill" else 1
    est = estimate(cfg, layout, mesh_shape, batch=batch, tokens=tokens, context=context,
                   weights=weights, hardware=hardware)
    t = est.terms
    return {"model": cfg.name, "mesh": list(mesh_shape), "layout": str(layout), "phase": phase,
            "batch": batch, "tokens": tokens, "context": context, "weights": weights,
            "hardware": est.hardware, "rule": est.rule,
            "hardware_times_s": est.times() | {"step_s": est.step_s},
            "ran": False, "why_not_run": why_not_run(cfg), "compile_s": 0.0, "flags": [],
            "runs": 0, "spread": None, "host_error": None,
            "sides": {f"predicted ({est.hardware})": _side(
                t.collectives, t.flops, t.attention_flops, est.memory_per_chip_bytes,
                t.stored_weight_bytes, est.step_s)}}


def with_measurement(prediction: dict, layout: Layout, *, repeats: int = 3,
                     budget_s: float | None = None, progress=None) -> dict:
    """`prediction` (from `step_prediction` for `layout`) with this machine's two sides, when
    it runs the model: compiles (once per configuration) and times the step. `progress` goes
    to `measure`, and may stop it by raising."""
    out = dict(prediction)
    if out["why_not_run"] is not None:
        return out
    m = measure(out["model"], tuple(out["mesh"]), layout, phase=out["phase"],
                batch=out["batch"], tokens=out["tokens"] if out["phase"] == "prefill" else None,
                context=out["context"], weights=out["weights"], repeats=repeats,
                budget_s=budget_s, progress=progress)
    here = {name: _side(side.collectives, side.flops, side.attention_flops, side.memory_bytes,
                        side.weight_bytes_per_device, side.time_s)
            for name, side in (("predicted (this CPU)", m.predicted),
                               ("measured (this CPU)", m.measured))}
    out.update(ran=True, compile_s=m.compile_s, flags=_flag_values(m.flags), runs=m.runs,
               spread=m.spread, host_error=m.host_error, sides=here | prediction["sides"])
    return out


def _flag_values(flags) -> list[str]:
    """`measure.Flag`s as their JSON values, in the enum's order."""
    return [f.value for f in Flag if f in flags]


# ---- communication against tokens per batch (the paper's Figure 3) ------------------------
def batch_and_length(tokens: int, chips: int) -> tuple[int, int]:
    """B·L tokens as B sequences of L: as many sequences as chips (so that every layout can
    split the batch), one token each below that."""
    if tokens < 1 or chips < 1:
        raise UsageError(f"tokens per batch and chips must be positive, got {tokens}, {chips}")
    batch = min(tokens, chips)
    if tokens % batch:
        raise UsageError(f"{tokens} tokens per batch do not split into {batch} sequences of "
                         f"equal length; choose a multiple of {batch}")
    return batch, tokens // batch


def crossover(cfg: ModelConfig | str, mesh_shape, tokens_per_batch, *,
              attention: str = "heads", weights: str = "bf16") -> dict:
    """Communication per chip of one prefill step (all layers, `step_terms`) against tokens
    per batch B·L, for every feed-forward layout. A point a layout cannot run (a batch smaller
    than its sharding) is None; a layout that runs nowhere is left out and its reason kept in
    `errors`. Raises the first ValueError when no layout runs at all."""
    cfg = get_model(cfg)
    mesh_shape = tuple(int(s) for s in mesh_shape)
    chips = math.prod(mesh_shape)
    tokens = [int(n) for n in tokens_per_batch]
    act = activation_bytes(weights)
    out = {"model": cfg.name, "mesh": list(mesh_shape), "attention": attention,
           "weights": weights, "tokens": tokens, "comm_bytes": {}, "errors": {}}
    for ffn in FFN_LAYOUTS:
        ys, first_error = [], None
        for n in tokens:
            try:
                b, length = batch_and_length(n, chips)
                terms = step_terms(cfg, Layout(ffn, attention), mesh_shape, batch=b,
                                   tokens=length, context=length, weights=weights,
                                   act_bytes=act)
                ys.append(terms.comm_bytes)
            except LayoutError as err:
                ys.append(None)
                first_error = first_error or str(err)
        if any(y is not None for y in ys):
            out["comm_bytes"][ffn] = ys
        else:
            out["errors"][ffn] = first_error
    if not out["comm_bytes"]:
        raise ValueError(next(iter(out["errors"].values())))
    return out


def prefill_mfu(cfg: ModelConfig | str, mesh_shape, batches, *, input_len: int = 2048,
                weights: str = "bf16", hardware: str = "tpu-v4") -> dict:
    """Predicted MFU of a whole prefill of `input_len` tokens against the batch, per feed-
    forward layout on a fixed mesh, each with the attention layout and schedule the planner
    prefers for it (`planner.plan`, heads padded where a layout needs it). A point the layout
    cannot run (a batch smaller than its sharding, or no fit in memory) is None."""
    cfg = get_model(cfg)
    mesh_shape = tuple(int(s) for s in mesh_shape)
    batches = [int(b) for b in batches]
    out = {"model": cfg.name, "mesh": list(mesh_shape), "weights": weights,
           "hardware": hardware, "input_len": input_len, "batches": batches,
           "tokens": [b * input_len for b in batches], "mfu": {}, "layouts": {}}
    for ffn in FFN_LAYOUTS:
        mfus, chosen = [], []
        for b in batches:
            try:
                best = plan(cfg, hardware, math.prod(mesh_shape), b, input_len=input_len,
                            gen_len=0, weights=weights, ffn=ffn, mesh=mesh_shape).prefill.best
            except UsageError:  # nothing runs there: no fit, or a batch below its sharding
                best = None
            mfus.append(None if best is None or not best.fits else best.mfu)
            chosen.append(None if best is None else str(best.layout))
        out["mfu"][ffn], out["layouts"][ffn] = mfus, chosen
    return out


def measured_crossover(cfg: ModelConfig | str, mesh_shape, tokens_per_batch, *,
                       attention: str = "heads", weights: str = "bf16",
                       progress: Progress | None = None) -> dict:
    """Real steps for `crossover`'s points: `measure` of the same prefill for every layout at
    each B·L, the communication per chip read from the compiled program beside its
    prediction for this backend, and `flags`: what any of the measurements flagged
    (`measure.Flag` values). Raises UsageError when this machine cannot run `cfg`."""
    cfg = get_model(cfg)
    reason = why_not_run(cfg)
    if reason:
        raise UsageError(reason)
    mesh_shape = tuple(int(s) for s in mesh_shape)
    tokens = [int(n) for n in tokens_per_batch]
    out = {"model": cfg.name, "mesh": list(mesh_shape), "attention": attention,
           "weights": weights, "tokens": tokens, "comm_bytes": {}, "predicted_comm_bytes": {},
           "errors": {}, "flags": []}
    flags = set()
    total, done = len(FFN_LAYOUTS) * len(tokens), 0
    for ffn in FFN_LAYOUTS:
        measured, predicted = [], []
        for n in tokens:
            if progress:
                progress(done, total, f"{ffn} at {n} tokens per batch")
            try:
                b, length = batch_and_length(n, math.prod(mesh_shape))
                m = measure(cfg, mesh_shape, Layout(ffn, attention), phase="prefill", batch=b,
                            tokens=length, context=length, weights=weights, repeats=1)
                measured.append(m.measured.comm_bytes)
                predicted.append(m.predicted.comm_bytes)
                flags |= m.flags
            except LayoutError as err:
                measured.append(None)
                predicted.append(None)
                out["errors"].setdefault(ffn, str(err))
            done += 1
        out["comm_bytes"][ffn], out["predicted_comm_bytes"][ffn] = measured, predicted
    if progress:
        progress(total, total, "done")
    out["flags"] = _flag_values(flags)
    return out


# ---- latency against cost (the paper's Figure 1) ------------------------------------------
@functools.lru_cache(maxsize=64)
def _pareto(model, weights, hardware: HardwareProfile, input_len, gen_len, chips, batches,
            kv=None, replicas=1) -> dict:
    # A full sweep takes seconds to a minute: each curve is priced once per session. Keyed by
    # the profile itself (its every constant), not its name: a `host` profile recalibrated
    # since is a new key, never served a curve priced on the old one.
    return pareto(model, hardware, chips=list(chips) if chips else None,
                  batches=list(batches) if batches else None, input_len=input_len,
                  gen_len=gen_len, weights=weights, kv=kv, replicas=replicas)


def pareto_curves(models, weights, *, hardware: str = "tpu-v4", input_len: int = 2048,
                  gen_len: int = 64, chips=None, batches=None,
                  progress: Progress | None = None, kv: str | None = None,
                  replicas: int | str = 1) -> dict:
    """`planner.pareto` for every (model, weight format), with the KV cache in `kv` and
    `replicas` as `planner.pareto` takes them, in the paper's units: latency in ms
    (prefill: the whole prefill; decode: per generated token) and cost in chip-ms per token.
    Each point keeps its chips, batch, mesh and layouts. A combination that cannot run (it
    fits on none of the chip counts) is left out with its reason in `errors`; raises the
    first ValueError when none runs."""
    profile = get_hardware(hardware)  # an unknown profile is one error, not one per curve
    combos = [(m, w) for m in models for w in weights]
    out = {"hardware": hardware, "prefill": {}, "decode": {}, "errors": {}}
    for i, (model, fmt) in enumerate(combos):
        label = f"{model} {fmt}"
        if progress:
            progress(i, len(combos), label)
        try:
            result = _pareto(model, fmt, profile, input_len, gen_len,
                             tuple(chips) if chips else None,
                             tuple(batches) if batches else None, kv, replicas)
        except UsageError as err:  # e.g. does not fit on any chip count in that format
            out["errors"][label] = str(err)
            continue
        for phase in ("prefill", "decode"):
            points = result[phase]
            out[phase][label] = {
                "latency_ms": [p["latency_s"] * 1e3 for p in points],
                "cost_chip_ms_per_token": [p["cost_chip_s_per_token"] * 1e3 for p in points],
                "points": [dict(p) for p in points]}
    if progress:
        progress(len(combos), len(combos), "done")
    if combos and len(out["errors"]) == len(combos):
        raise ValueError(next(iter(out["errors"].values())))
    return out


# ---- KV cache and the longest context (the attention chapter) ------------------------------
def context_curves(model: ModelConfig | str, chips: int, batch: int, contexts, batches, *,
                   kv_fraction: float = 0.3, hardware: str = "tpu-v4",
                   kv: str | None = None) -> dict:
    """For each attention variant (multihead, multiquery by heads, multiquery by batch):
    KV-cache bytes per chip against context length at `batch` (`planner.kv_bytes_per_chip`),
    and the longest context that fits in `kv_fraction` of HBM against batch
    (`planner.max_context`), the cache in format `kv` (None: bf16). A point a variant cannot
    shard is None, and the reason for the chosen batch is kept in `errors`. Raises the
    library's ValueError for a bad request."""
    cfg = get_model(model)
    # multihead runs at any batch: its error is the request's (chips, kv_fraction, hardware)
    at_batch = {"multihead": max_context(cfg, chips, batch, "multihead", kv_fraction,
                                         hardware, kv)}
    out = {"model": cfg.name, "chips": chips, "batch": batch, "kv_fraction": kv_fraction,
           "kv": kv or "bf16",
           "hardware": get_hardware(hardware).name, "contexts": [int(s) for s in contexts],
           "batches": [int(b) for b in batches], "kv_bytes_per_chip": {}, "max_context": {},
           "max_context_at_batch": at_batch, "errors": {}}
    for variant in ATTENTION_VARIANTS:
        try:
            at_batch[variant] = max_context(cfg, chips, batch, variant, kv_fraction, hardware,
                                            kv)
            out["kv_bytes_per_chip"][variant] = [kv_bytes_per_chip(cfg, variant, chips, batch, s,
                                                                   kv)
                                                 for s in out["contexts"]]
        except LayoutError as err:
            at_batch[variant] = None
            out["kv_bytes_per_chip"][variant] = [None] * len(out["contexts"])
            out["errors"][variant] = str(err)
        out["max_context"][variant] = [_or_none(max_context, cfg, chips, b, variant,
                                                kv_fraction, hardware, kv)
                                       for b in out["batches"]]
    return out


def _or_none(fn, *args):
    try:
        return fn(*args)
    except LayoutError:
        return None


# ---- one number of one step: what a prediction lock reveals --------------------------------
STEP_QUANTITIES = {"flops": ("weight-matmul FLOPs per device", "FLOPs"),
                   "weight_bytes": ("weight bytes each device holds", "bytes"),
                   "time_s": ("the step's time on this CPU", "s")}


def _quantity(side, quantity: str):
    if quantity.startswith(("calls:", "bytes:")):
        what, kind = quantity.split(":", 1)
        calls, nbytes = side.by_kind().get(kind, (0, 0.0))
        return calls if what == "calls" else nbytes
    return {"flops": side.flops, "weight_bytes": side.weight_bytes_per_device,
            "time_s": side.time_s}[quantity]


def step_quantity(cfg: ModelConfig | str, mesh, layout: Layout, *, phase: str,
                  batch: int, quantity: str, tokens: int | None = None,
                  context: int | None = None, weights: str = "f32", params=None) -> dict:
    """One number of one step, as the cost model predicts it beside what the compiled step on
    the emulated mesh says: what a prediction lock (`tpuinfer_widgets.PredictionLock`)
    reveals. `mesh`: a mesh from `make_mesh`, or its shape. `quantity`: "calls:<kind>"
    (collective calls of that kind over the step), "bytes:<kind>" (their bytes per device,
    under `tpuinfer.terms`' convention), "flops"
    (weight-matmul FLOPs per device), "weight_bytes" (weight bytes each device holds), or
    "time_s" (the step's time on this CPU: the host profile's prediction beside the median of
    timed runs; the prediction is None before `tpuinfer calibrate`).

    Returns {"what", "unit", "predicted", "predicted_by", "measured", "measured_by"}; the
    arguments are `measure.measure`'s, whose errors (a UsageError, a LayoutError) it raises."""
    kinds = ("calls:", "bytes:")
    if quantity not in STEP_QUANTITIES and not quantity.startswith(kinds):
        raise UsageError(f"unknown quantity {quantity!r}; choose one of "
                         f"{', '.join(STEP_QUANTITIES)}, calls:<kind> or bytes:<kind> "
                         f"(kind: all-gather, reduce-scatter, all-reduce, all-to-all, "
                         f"collective-permute)")
    timed = quantity == "time_s"
    m = measure(cfg, mesh, layout, phase=phase, batch=batch, tokens=tokens,
                context=context, weights=weights, params=params,
                **(PRECISE if timed else {"repeats": 0}))
    if quantity.startswith(kinds):
        kind = quantity.split(":", 1)[1]
        what = f"{kind} {'calls' if quantity.startswith('calls') else 'bytes per device'}"
        unit = "calls" if quantity.startswith("calls") else "bytes"
    else:
        what, unit = STEP_QUANTITIES[quantity]
    mesh = "x".join(map(str, m.mesh_shape))
    step = f"{m.model} {m.phase}, {m.layout}, batch {m.batch}, on {mesh}"
    if timed:
        host = get_hardware("host") if m.predicted.time_s is not None else None
        predicted_by = ("cost model, host profile (not calibrated yet: run tpuinfer calibrate)"
                        if host is None else f"cost model, host profile (rule {host.rule})")
        measured_by = f"measured on this CPU, median of {m.runs} runs"
    else:
        predicted_by = "cost model: the layout's step terms (a count: no hardware profile)"
        measured_by = f"the compiled step on the emulated {mesh} mesh ({m.backend})"
    return {"what": f"{what}: {step}", "unit": unit,
            "predicted": _quantity(m.predicted, quantity), "predicted_by": predicted_by,
            "measured": _quantity(m.measured, quantity), "measured_by": measured_by}


# ---- the paper's Figures 6 and 8, as the cost model draws them -----------------------------
def _decode_points(plans) -> dict:
    """Per-token latency, layout, mesh and fit of each planned decode (None: nothing runs)."""
    best = [None if p is None else p.decode.best for p in plans]
    return {"per_token_s": [None if e is None else e.per_token_s for e in best],
            "layout": [None if e is None else str(e.layout) for e in best],
            "mesh": [None if e is None else list(e.mesh_shape) for e in best],
            "fits": [False if e is None else e.fits for e in best]}


def _plan_or_none(*args, **kw):
    try:
        return plan(*args, **kw)
    except UsageError:
        return None


def ffn_scaling(model: ModelConfig | str, chips, *, batch: int, context: int = 2048,
                gen_len: int = 64, weights: str = "bf16", hardware: str = "tpu-v4",
                ffns=("ws1d", "ws2d")) -> dict:
    """Decode latency per generated token against the chip count, one curve per feed-forward
    layout (the comparison of the paper's Figure 6, as the cost model prices it): for each
    chip count the planner's best mesh, attention layout and schedule with that FFN layout
    (`plan(..., ffn=...)`, heads padded where needed). A point where nothing fits in memory
    keeps the planner's least bad configuration with `fits` False."""
    chips = [int(n) for n in chips]
    out = {"model": get_model(model).name, "hardware": get_hardware(hardware).name,
           "batch": batch, "context": context, "weights": weights, "chips": chips, "ffn": {}}
    for ffn in ffns:
        out["ffn"][ffn] = _decode_points(
            _plan_or_none(model, hardware, n, batch, input_len=0, history_len=context,
                          gen_len=gen_len, weights=weights, ffn=ffn, allow_unfit=True)
            for n in chips)
    return out


def context_latency(model: ModelConfig | str, contexts, *, chips: int = 64, batch: int,
                    weights: str = "bf16", hardware: str = "tpu-v4", mesh=None,
                    ffn: str = "ws2d") -> dict:
    """Decode latency per generated token against the context length, for each of the paper's
    attention variants (multihead, multiquery by heads, multiquery by batch: the comparison of
    its Figure 8, as the cost model prices it): the model under the variant
    (`kv.variant_config`) planned with its attention layout and `ffn`, one token generated
    after `context` cached. `fits` says where the cache still fits in memory."""
    contexts = [int(s) for s in contexts]
    out = {"model": get_model(model).name, "hardware": get_hardware(hardware).name,
           "chips": chips, "batch": batch, "weights": weights, "contexts": contexts,
           "variants": {}}
    for variant in ATTENTION_VARIANTS:
        cfg = variant_config(model, variant)
        attention = VARIANTS[variant][1].attention
        out["variants"][variant] = _decode_points(
            _plan_or_none(cfg, hardware, chips, batch, input_len=0, history_len=s, gen_len=1,
                          weights=weights, ffn=ffn, attention=attention, mesh=mesh,
                          allow_unfit=True) for s in contexts)
    return out


# ---- one planned number, where nothing was measured: what a prediction lock reveals --------
PLAN_QUANTITIES = {"per_token_s": ("time per generated token", "s"),
                   "latency_s": ("the phase's latency", "s")}


def _planned(predicted, what: str, unit: str, hardware) -> dict:
    hw = get_hardware(hardware)
    return {"what": what, "unit": unit, "predicted": predicted,
            "predicted_by": f"cost model and planner, {hw.name} profile (rule {hw.rule})",
            "measured": None, "measured_by": "not measured"}


def plan_quantity(model: ModelConfig | str, hardware, chips: int, batch: int, *,
                  quantity: str = "per_token_s", phase: str = "decode", **request) -> dict:
    """One number of the planner's best configuration for one phase of a request (`plan`'s
    arguments; `quantity`: "per_token_s" or "latency_s"), in the form `step_quantity` returns,
    with nothing measured beside it: a prediction lock for a configuration nobody ran."""
    if quantity not in PLAN_QUANTITIES or phase not in ("prefill", "decode"):
        raise UsageError(f"quantity {quantity!r} of phase {phase!r}; choose a quantity of "
                         f"{', '.join(PLAN_QUANTITIES)} and the phase prefill or decode")
    best = getattr(plan(model, hardware, chips, batch, **request), phase).best
    what, unit = PLAN_QUANTITIES[quantity]
    return _planned(getattr(best, quantity),
                    f"{what}: {get_model(model).name} {phase}, batch {batch}, {chips} chips, "
                    f"{best.layout} on {'x'.join(map(str, best.mesh_shape))}", unit, hardware)


def replica_crossover(model: ModelConfig | str, hardware, chips: int, batches,
                      **request) -> dict:
    """The smallest of `batches` at which the planner, free to choose (`replicas="auto"`),
    decodes as data-parallel replicas rather than one group over all `chips` (None: at none),
    in the form `plan_quantity` returns. `request`: the rest of `plan`'s arguments."""
    first = next((b for b in sorted(batches)
                  if plan(model, hardware, chips, b, replicas="auto", **request)
                  .decode.best.replicas > 1), None)
    return _planned(first, f"the smallest batch decoded as replicas: {get_model(model).name}, "
                           f"{chips} chips, batches {', '.join(map(str, sorted(batches)))}",
                    "sequences", hardware)
