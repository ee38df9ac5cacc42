"""The planner: for a model, a chip and a request, which mesh and layouts each phase should use.

A request is `input_len` new tokens per sequence on top of `history_len` already cached, then
`gen_len` generated tokens, for a batch of B sequences:
- prefill: one step of L = input_len tokens attending over history_len + input_len positions;
- decode: gen_len steps of one token, step i attending over S0 + i positions
  (S0 = history_len + input_len, i = 1..gen_len).

Every term of a decode step is affine in its context (KV bytes and attention FLOPs grow with S,
nothing else changes), so the planner prices the first and the last step and interpolates each
step between them; every step is then combined under the rule and summed, which is the exact
sum over the growing context without pricing each step (`phase_estimate`, checked against the
step-by-step sum in tests/test_planner.py).

Choice: every mesh factorisation the hardware allows times every layout, each plain, looped and
(weight-stationary) bidirectional looped; where a layout splits the heads over more chips than
H divides, H is padded up as the paper pads PaLM 540B's 48 heads to 64 (Section 4.4), and the
padded heads are priced. Attention by batch is a candidate at any batch it can split: below
the chip count it splits the batch over the heads axes the batch divides and keeps the heads
split over the rest (`layouts.attn_batch.split`; the paper's layouts at small batch, Section
3.3), so a batch-16 decode on 64 chips can run by batch. Lowest phase latency among those
that fit in HBM, ties broken by the no-overlap (`sum`) time, then in favour of attention by
batch, then of the plain schedule. Each phase chooses independently (the paper too stores one
weight layout and runs weight-gathered prefill and weight-stationary decode from it).

A mixture of experts is planned over its expert-parallel layouts (ep-x, ep-xy, ep-xyz; plain
schedule) on every mesh, which together weigh every expert-parallel degree against tensor
parallelism; each phase's plan also carries the best configuration at every degree and a
sentence on why its degree won (`tpuinfer.expert_plan`).
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from . import expert_plan
from .config import ModelConfig, get_model
from .cost import Estimate, combine, cost_per_token, estimate, mfu, named_times
from .errors import LayoutError, UsageError
from .hardware import (HardwareProfile, check_mesh, chip_counts, get_hardware, mesh_shapes,
                       wraps)
# re-exported: the maximum-context model lived here, and `planner.max_context` is still asked
from .kv import (ATTENTION_VARIANTS, kv_bytes_per_chip, max_context,  # noqa: F401
                 variant_config)
from .layouts import ATTENTION_LAYOUTS, EXPERT_LAYOUTS, FFN_LAYOUTS, Layout
from .layouts.registry import ATTENTION, FFN, pad_heads
from .quant import check_format

PHASES = ("prefill", "decode")
Progress = Callable[[int, int, str], None]  # (done, total, what is running now)


@dataclass(frozen=True)
class PhaseEstimate:
    """A whole phase (all of prefill; all generated tokens of decode) on one configuration."""
    phase: str
    layout: Layout
    mesh_shape: tuple[int, int, int]
    batch: int
    steps: int
    tokens: int  # tokens the phase processes (B·input_len) or generates (B·gen_len)
    first: Estimate  # the first step (the only one in prefill)
    last: Estimate  # the last step: the longest context, the most memory
    latency_s: float
    compute_s: float  # each term summed over the phase's steps
    weights_s: float
    kv_s: float
    comm_s: float
    mfu: float
    overhead_s: float = 0.0  # dispatch on a host profile (an emulated mesh); else 0
    activations_s: float = 0.0  # the matmuls' activation traffic, where the profile prices it
    padded_heads: int | None = None  # H after padding, when the layout needed it (else None)

    @property
    def chips(self) -> int:
        return math.prod(self.mesh_shape)

    @property
    def memory_per_chip_bytes(self) -> float:
        return self.last.memory_per_chip_bytes

    @property
    def fits(self) -> bool:
        return self.last.fits

    @property
    def per_token_s(self) -> float:
        """Decode: time per generated token (per step); prefill: per input token of a
        sequence."""
        return self.latency_s / (self.tokens / self.batch)

    @property
    def sum_s(self) -> float:
        """The phase with nothing overlapped: the tie-breaker between equal latencies."""
        return (self.compute_s + self.weights_s + self.kv_s + self.activations_s + self.comm_s
                + self.overhead_s)

    @property
    def cost(self) -> float:
        return cost_per_token(self.chips, self.latency_s, self.tokens)

    def times(self) -> dict:
        return named_times(self)

    @property
    def unfit_reason(self) -> str | None:
        """Why it does not fit in memory (None when it does)."""
        if self.fits:
            return None
        return (f"{self.layout} on {'x'.join(map(str, self.mesh_shape))} needs "
                f"{self.memory_per_chip_bytes / 2**30:.1f} GiB per chip, {self.last.hardware} "
                f"has {self.last.hbm_bytes / 2**30:.1f} GiB")

    def to_json(self) -> dict:
        out = {"mesh": list(self.mesh_shape), "ffn": self.layout.ffn,
               "attention": self.layout.attention, "looped": self.layout.looped,
               "bidirectional": self.layout.bidirectional, "schedule": self.layout.schedule,
               "padded_heads": self.padded_heads, "latency_s": self.latency_s, "mfu": self.mfu,
               "memory_per_chip_bytes": self.memory_per_chip_bytes, "fits": self.fits,
               "terms": self.times(), "cost_chip_s_per_token": self.cost}
        if not self.fits:
            out["unfit_reason"] = self.unfit_reason
        if self.phase == "decode":
            out["per_token_s"] = self.per_token_s
        return out


def phase_estimate(cfg: ModelConfig | str, layout: Layout, mesh_shape, phase: str, *,
                   batch: int, input_len: int, history_len: int = 0, gen_len: int = 0,
                   weights: str = "bf16", hardware: HardwareProfile | str = "tpu-v4",
                   rule: str | None = None, pad: bool = False) -> PhaseEstimate:
    """One phase on one configuration. `pad`: where the layout splits H over more chips than
    H divides, pad H up as the paper does (`layouts.registry.pad_heads`) and price the padded
    model; without it such a layout is an error naming the heads."""
    cfg, hw, mesh_shape = get_model(cfg), get_hardware(hardware), tuple(mesh_shape)
    rule = rule or hw.rule
    padded = pad_heads(cfg, layout, mesh_shape) if pad else cfg
    cfg, padded_heads = padded, (padded.H if padded.H != cfg.H else None)
    if (phase == "prefill" and input_len < 1) or (phase == "decode" and gen_len < 1):
        raise UsageError(f"a {phase} needs at least one token; got input_len={input_len}, "
                         f"gen_len={gen_len}")
    run = dict(batch=batch, weights=weights, hardware=hw, rule=rule)
    if phase == "prefill":
        first = last = estimate(cfg, layout, mesh_shape, tokens=input_len,
                                context=history_len + input_len, **run)
        steps, tokens = 1, batch * input_len
    elif phase == "decode":
        s0 = history_len + input_len
        first = estimate(cfg, layout, mesh_shape, tokens=1, context=s0 + 1, **run)
        last = first if gen_len == 1 else estimate(cfg, layout, mesh_shape, tokens=1,
                                                   context=s0 + gen_len, **run)
        steps, tokens = gen_len, batch * gen_len
    else:
        raise UsageError(f"unknown phase {phase!r}; one of {PHASES}")
    # Each part of step i, interpolated between the first and the last step (exact: affine).
    frac = np.linspace(0.0, 1.0, steps) if steps > 1 else np.zeros(1)
    part = {k: getattr(first, k) + (getattr(last, k) - getattr(first, k)) * frac
            for k in ("compute_s", "weights_s", "kv_s", "activations_s", "comm_s", "hidden_s",
                      "overhead_s")}
    step_s = combine(rule, part["compute_s"],
                     part["weights_s"] + part["kv_s"] + part["activations_s"], part["comm_s"],
                     part["hidden_s"], part["overhead_s"])
    latency = float(np.sum(step_s))
    total = {k: float(np.sum(v)) for k, v in part.items()}
    return PhaseEstimate(
        phase=phase, layout=layout, mesh_shape=tuple(mesh_shape), batch=batch, steps=steps,
        tokens=tokens, first=first, last=last, latency_s=latency,
        compute_s=total["compute_s"], weights_s=total["weights_s"], kv_s=total["kv_s"],
        comm_s=total["comm_s"], mfu=mfu(cfg, tokens, math.prod(mesh_shape), hw, latency),
        overhead_s=total["overhead_s"], activations_s=total["activations_s"],
        padded_heads=padded_heads)


# ---- choosing -----------------------------------------------------------------------------
@dataclass(frozen=True)
class PhasePlan:
    best: PhaseEstimate
    runner_up: PhaseEstimate | None  # the best fitting configuration with another layout
    considered: int  # configurations priced
    rejected: tuple[str, ...]  # why the others were not candidates (distinct reasons)
    # a mixture of experts: the best configuration at each expert-parallel degree (fitting
    # where one does), the chosen one's expert facts, and why its degree won; else empty
    per_degree: tuple[PhaseEstimate, ...] = ()
    experts: dict | None = None

    def to_json(self) -> dict:
        out = self.best.to_json()
        if self.runner_up is not None:
            r = self.runner_up
            out["runner_up"] = {"mesh": list(r.mesh_shape), "ffn": r.layout.ffn,
                                "attention": r.layout.attention, "looped": r.layout.looped,
                                "bidirectional": r.layout.bidirectional,
                                "latency_s": r.latency_s, "terms": r.times()}
        if self.experts is not None:
            out["experts"] = self.experts | {"per_degree": [
                {"expert_parallel": ep, "tensor_parallel": tp, "ffn": q.layout.ffn,
                 "attention": q.layout.attention, "mesh": list(q.mesh_shape),
                 "latency_s": q.latency_s, "fits": q.fits,
                 "memory_per_chip_bytes": q.memory_per_chip_bytes, "terms": q.times()}
                for q in self.per_degree for ep, tp in [expert_plan.degrees(q)]]}
        return out


LOOPED = ("auto", "yes", "no")


def _layouts(ffn: str, attention: str, looped: str = "auto", cfg=None) -> list[Layout]:
    """The layouts a plan weighs: a mixture of experts' are the expert-parallel ones (`cfg`),
    which have no looped schedule."""
    if cfg is not None and cfg.n_experts:
        ffns = EXPERT_LAYOUTS if ffn == "auto" else (ffn,)
        attns = sorted(ATTENTION_LAYOUTS, key=_attention_rank) if attention == "auto" \
            else (attention,)
        return [Layout(f, a) for f, a in itertools.product(ffns, attns)]
    ffns = FFN_LAYOUTS if ffn == "auto" else (ffn,)
    # the preferred attention layout first, so that an exact tie (wg-xyz runs one program
    # under both) keeps the name `_preference` gives it in the Pareto sweep too
    attns = sorted(ATTENTION_LAYOUTS, key=_attention_rank) if attention == "auto" \
        else (attention,)
    loops = {"no": [(False, False)], "yes": [(True, False), (True, True)],
             "auto": [(False, False), (True, False), (True, True)]}[looped]
    # the weight-gathered layouts loop their weights one way only (`registry.check`)
    return [Layout(f, a, lp, bi) for f, a, (lp, bi) in itertools.product(ffns, attns, loops)
            if not (bi and FFN[f].GATHER)]


def candidates(cfg, hw, chips, phase, *, ffn="auto", attention="auto", looped="auto",
               mesh=None, **request):
    """Every (layout, mesh) priced for one phase: a PhaseEstimate, or the reason it cannot
    run (a `LayoutError`: a mesh that does not divide a dimension, a batch smaller than its
    sharding). Any other exception is a bug and propagates."""
    meshes = [tuple(mesh)] if mesh is not None else mesh_shapes(hw, chips)
    for m, layout in itertools.product(meshes, _layouts(ffn, attention, looped, cfg)):
        try:
            yield layout, m, phase_estimate(cfg, layout, m, phase, hardware=hw, **request)
        except LayoutError as err:
            yield layout, m, str(err)


def _attention_rank(name: str) -> bool:
    """False (first) for an attention layout whose chips each hold 1/n of the KV cache."""
    return not ATTENTION[name].CACHE_OVER_ALL_CHIPS


def _preference(p: PhaseEstimate, hw: HardwareProfile):
    """Lowest latency; exact ties to the no-overlap time, then the attention layout that
    splits the KV cache over every chip (under wg-xyz both attention layouts run the same
    program, every chip owning whole sequences, and the paper calls that one by batch), then
    the plain schedule over the looped ones (fewer collectives for the same time), then a
    slice with wraparound (ties between meshes arise where nothing crosses the links, as in
    an XYZ-weight-gathered step looped)."""
    def same(t):  # equal up to floating-point rounding: the same sum taken in another order
        return float(f"{t:.9g}")
    return (same(p.latency_s), same(p.sum_s), _attention_rank(p.layout.attention),
            p.layout.looped, p.layout.bidirectional, not wraps(hw, p.mesh_shape))


def choose(cfg, hw, chips, phase, *, allow_unfit=False, **kw) -> PhasePlan:
    """The best configuration that fits. With a layout fixed (`ffn` or `attention` not
    auto) and nothing of it fitting, the best of it is still priced and returned, with
    `fits` false and the reason: a chapter can compare it all the same."""
    priced, unfit, reasons, considered = [], [], [], 0
    for layout, m, result in candidates(cfg, hw, chips, phase, **kw):
        considered += 1
        if isinstance(result, str):
            reasons.append(result)
        elif result.fits or allow_unfit:
            priced.append(result)
        else:
            unfit.append(result)
            reasons.append(result.unfit_reason)
    fixed = kw.get("ffn", "auto") != "auto" or kw.get("attention", "auto") != "auto"
    if not priced and unfit and fixed:
        priced = unfit
    if not priced:
        raise UsageError(_nothing_runs(cfg, hw, chips, phase, kw, reasons, unfit))
    priced.sort(key=lambda p: _preference(p, hw))
    best = priced[0]
    runner = next((p for p in priced[1:] if (p.layout.ffn, p.layout.attention)
                   != (best.layout.ffn, best.layout.attention)), None)
    if not cfg.n_experts:
        return PhasePlan(best, runner, considered, tuple(dict.fromkeys(reasons)))
    per_degree = expert_plan.best_per_degree(priced, unfit)
    return PhasePlan(best, runner, considered, tuple(dict.fromkeys(reasons)),
                     tuple(per_degree.values()),
                     expert_plan.summary(cfg, best) | {"why": expert_plan.why(best, per_degree)})


def _nothing_runs(cfg, hw, chips, phase, kw, reasons, unfit) -> str:
    fixed = "".join(f", {k} {kw[k]}" for k in ("ffn", "attention") if kw.get(k, "auto") != "auto")
    head = (f"no configuration of {cfg.name} on {chips} {hw.name} chips runs the {phase} "
            f"(batch {kw['batch']}, {kw['weights']} weights{fixed})")
    if unfit:
        least = min(unfit, key=lambda p: p.memory_per_chip_bytes)
        int8 = "" if kw["weights"] == "int8" else " int8 weights,"
        return (f"{head}: nothing fits in memory; the smallest, {least.unfit_reason}. "
                f"Use more chips,{int8} a smaller batch or a shorter context")
    others = len(reasons) - 1
    return f"{head}: {reasons[0]}" + (f" (and {others} other configurations cannot run either)"
                                      if others else "")


# ---- the plan -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Plan:
    model: str
    hardware: str
    chips: int
    batch: int
    weights: str
    input_len: int
    history_len: int
    gen_len: int
    rule: str
    prefill: PhasePlan | None
    decode: PhasePlan | None
    mfu_flops_per_token: float
    peak_flops: float

    @property
    def phases(self) -> list[PhasePlan]:
        return [p for p in (self.prefill, self.decode) if p is not None]

    @property
    def total_latency_s(self) -> float:
        return sum(p.best.latency_s for p in self.phases)

    @property
    def mfu(self) -> float:
        """The paper's MFU (Section 2) over the whole request: all input and generated tokens."""
        tokens = self.batch * (self.input_len + self.gen_len)
        return (self.mfu_flops_per_token * tokens
                / (self.chips * self.peak_flops * self.total_latency_s))

    @property
    def fits(self) -> bool:
        return all(p.best.fits for p in self.phases)

    def to_json(self) -> dict:
        return {"model": self.model, "hardware": self.hardware, "chips": self.chips,
                "batch": self.batch, "weights": self.weights, "input_len": self.input_len,
                "history_len": self.history_len, "gen_len": self.gen_len, "rule": self.rule,
                "prefill": self.prefill.to_json() if self.prefill else None,
                "decode": self.decode.to_json() if self.decode else None,
                "total_latency_s": self.total_latency_s, "mfu": self.mfu, "fits": self.fits}


def plan(model: ModelConfig | str, hardware: HardwareProfile | str = "tpu-v4", chips: int = 64,
         batch: int = 1, input_len: int = 2048, history_len: int = 0, gen_len: int = 64,
         weights: str = "bf16", ffn: str = "auto", attention: str = "auto", *,
         looped: str = "auto", pad: bool = True, rule: str | None = None, mesh=None,
         allow_unfit: bool = False) -> Plan:
    """Choose mesh and layouts per phase (see the module docstring). `looped`: weigh plain,
    looped and bidirectional looped schedules (`auto`), only the looped ones (`yes`) or only
    plain (`no`). `pad`: pad H where a layout splits more chips than H divides. Raises
    UsageError naming the problem when nothing runs, or (auto layouts) nothing fits;
    `allow_unfit` keeps unfitting configurations as candidates."""
    cfg, hw = get_model(model), get_hardware(hardware)
    check_format(weights)
    _check_request(chips, batch, input_len, history_len, gen_len, ffn, attention, looped)
    if mesh is not None:
        mesh = check_mesh(hw, mesh)
        if math.prod(mesh) != chips:
            raise UsageError(f"mesh {'x'.join(map(str, mesh))} has {math.prod(mesh)} chips, "
                             f"not {chips}; pass --chips {math.prod(mesh)} or another mesh")
    rule = rule or hw.rule
    kw = dict(batch=batch, input_len=input_len, history_len=history_len, gen_len=gen_len,
              weights=weights, rule=rule, ffn=ffn, attention=attention, looped=looped,
              pad=pad, mesh=mesh, allow_unfit=allow_unfit)
    mesh_shapes(hw, chips)  # a chip count no mesh allows fails here, before any pricing
    return Plan(cfg.name, hw.name, chips, batch, weights, input_len, history_len, gen_len,
                rule,
                prefill=choose(cfg, hw, chips, "prefill", **kw) if input_len else None,
                decode=choose(cfg, hw, chips, "decode", **kw) if gen_len else None,
                mfu_flops_per_token=cfg.mfu_flops_per_token(), peak_flops=hw.peak_flops)


def _check_request(chips, batch, input_len, history_len, gen_len, ffn, attention,
                   looped="auto"):
    for name, v in (("chips", chips), ("batch", batch)):
        if v < 1:
            raise UsageError(f"{name} must be at least 1, got {v}")
    for name, v in (("input_len", input_len), ("history_len", history_len),
                    ("gen_len", gen_len)):
        if v < 0:
            raise UsageError(f"{name} must be 0 or more, got {v}")
    if input_len == 0 and gen_len == 0:
        raise UsageError("nothing to run: input_len and gen_len are both 0; give input tokens "
                         "to prefill or tokens to generate")
    if ffn != "auto" and ffn not in FFN_LAYOUTS + EXPERT_LAYOUTS:
        raise UsageError(f"unknown ffn layout {ffn!r}; choose auto or one of "
                         f"{', '.join(FFN_LAYOUTS)} (a mixture of experts: "
                         f"{', '.join(EXPERT_LAYOUTS)})")
    if attention != "auto" and attention not in ATTENTION_LAYOUTS:
        raise UsageError(f"unknown attention layout {attention!r}; choose auto or one of "
                         f"{', '.join(ATTENTION_LAYOUTS)}")
    if looped not in LOOPED:
        raise UsageError(f"looped {looped!r}; choose {', '.join(LOOPED)} (auto weighs plain and "
                         "looped schedules)")


# ---- the Pareto frontier (the paper's Figure 1) -------------------------------------------
def pareto(model: ModelConfig | str, hardware: HardwareProfile | str = "tpu-v4", *,
           chips: list[int] | None = None, batches: list[int] | None = None,
           input_len: int = 2048, history_len: int = 0, gen_len: int = 64,
           weights: str = "bf16", ffn: str = "auto", attention: str = "auto",
           looped: str = "auto", pad: bool = True, rule: str | None = None,
           progress: Progress | None = None) -> dict:
    """Latency against cost (chip-seconds per token) over chip counts, batches, meshes and
    layouts (plain and looped, as `plan` weighs them); per phase, the points no other point
    beats on both. Prefill latency is the whole prefill; decode latency is per generated token
    (as the paper's Figure 1 plots them). `progress(done, total, what)`, when given, is called
    after each layout on each mesh: the library prints nothing itself."""
    cfg, hw = get_model(model), get_hardware(hardware)
    check_format(weights)
    _check_request(1, 1, input_len, history_len, gen_len, ffn, attention, looped)
    # default: the powers of two up to 256 the hardware allows (the paper's range)
    chips = chips or [n for n in chip_counts(hw, 1, 256) if n & (n - 1) == 0]
    batches = batches or [2**k for k in range(11)]  # 1 .. 1024
    for n in chips:
        mesh_shapes(hw, n)
    # No layout stores less than its share of the weights: skip chip counts that cannot fit.
    chips = [n for n in chips if cfg.weight_bytes(weights) / n <= hw.hbm_bytes]
    if not chips:
        raise UsageError(f"{cfg.name} ({weights}) does not fit on any of those chip counts of "
                         f"{hw.name}; use more chips or int8 weights")
    work = [(n, b, m) for n in chips for b in batches for m in mesh_shapes(hw, n)]
    layouts = _layouts(ffn, attention, looped, cfg)
    total = len(work) * len(layouts)
    points = {"prefill": [], "decode": []}
    request = dict(input_len=input_len, history_len=history_len, gen_len=gen_len,
                   weights=weights, hardware=hw, rule=rule, pad=pad)
    done = 0
    for (n, b, m), layout in itertools.product(work, layouts):
        for phase in PHASES:
            if (phase == "prefill" and not input_len) or (phase == "decode" and not gen_len):
                continue
            try:
                p = phase_estimate(cfg, layout, m, phase, batch=b, **request)
            except LayoutError:  # this layout cannot split this batch or mesh: no point
                continue
            if p.fits:
                latency = p.per_token_s if phase == "decode" else p.latency_s
                points[phase].append((latency, p.cost, p))
        if progress:
            done += 1
            progress(done, total, f"{layout} on {'x'.join(map(str, m))}, batch {b}")
    return {"model": cfg.name, "hardware": hw.name, "weights": weights,
            "input_len": input_len, "history_len": history_len, "gen_len": gen_len,
            "considered": total,
            **{ph: [_point(p, lat) for lat, _, p in frontier(points[ph])] for ph in PHASES}}


def frontier(points: list[tuple]) -> list[tuple]:
    """The (latency, cost, ...) points that no other point beats in both, by latency."""
    out = []
    for pt in sorted(points, key=lambda t: (t[0], t[1])):
        if not out or pt[1] < out[-1][1]:
            out.append(pt)
    return out


def _point(p: PhaseEstimate, latency: float) -> dict:
    return {"chips": p.chips, "batch": p.batch, "mesh": list(p.mesh_shape),
            "ffn": p.layout.ffn, "attention": p.layout.attention, "looped": p.layout.looped,
            "bidirectional": p.layout.bidirectional, "schedule": p.layout.schedule,
            "padded_heads": p.padded_heads, "latency_s": latency,
            "cost_chip_s_per_token": p.cost, "mfu": p.mfu}
