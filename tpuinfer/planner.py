"""The planner: for a model, a chip and a request, which mesh and layouts each phase should use.

A request is `input_len` new tokens per sequence on top of `history_len` already cached, then
`gen_len` generated tokens, for a batch of B sequences, each phase priced whole by
`tpuinfer.phase.phase_estimate` (re-exported here).

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

Replicas (`replicas="auto"` or R; default 1, one group over every chip): R data-parallel
replicas of n/R chips each, the batch split R ways and the weights held R times (each
replica's memory is the whole model on its own n/R chips). A phase on R replicas is one
replica's phase (its mesh, its B/R sequences, `PhaseEstimate.first` and `.last` its steps):
- its latency is one replica's: the R replicas run side by side on their own sequences;
- its MFU is one replica's too: R times the tokens on R times the chips in the same time;
- its cost per token counts all n chips: n · latency / (B · tokens per sequence), which is
  again one replica's n/R chips over its B/R sequences.
`auto` weighs every R that divides the chips and the batch and for which the hardware has a
mesh of n/R chips, beside R = 1; each phase chooses its own R as it chooses its own mesh, ties
going to fewer replicas (the model held fewer times). The plan's JSON says `replicas` at its
top level (what was asked: "auto" or a count) and in each phase (what that phase chose, with
`batch_per_replica` and `chips_per_replica`).

The KV cache's format (`kv`: "bf16", "int8", "fp8", `tpuinfer.kv_formats`) sets the bytes it
holds and each decode step reads; fp8 weights are priced only on chips with an fp8 matmul
(`hardware.require_fp8`).

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

from . import expert_plan
from .config import ModelConfig, get_model
from .errors import LayoutError, UsageError
from .hardware import (HardwareProfile, check_mesh, chip_counts, get_hardware, mesh_shapes,
                       wraps)
# re-exported (`__all__`): the maximum-context model lived here, and `planner.max_context` is
# still asked
from .kv import ATTENTION_VARIANTS, kv_bytes_per_chip, max_context, variant_config
from .kv_formats import check_kv
from .layouts import ATTENTION_LAYOUTS, EXPERT_LAYOUTS, FFN_LAYOUTS, Layout
from .layouts.registry import ATTENTION, FFN
# a phase priced whole lives in its own module; `planner.phase_estimate` is still asked
from .phase import PHASES, PhaseEstimate, phase_estimate
from .weight_formats import check_format

__all__ = ["Progress", "PhasePlan", "Plan", "candidates", "choose", "plan", "replica_counts",
           "pareto", "frontier",
           # re-exported: asked of the planner by the chapters, the widgets and the tests
           "ATTENTION_VARIANTS", "kv_bytes_per_chip", "max_context", "variant_config", "PHASES",
           "PhaseEstimate", "phase_estimate"]

Progress = Callable[[int, int, str], None]  # (done, total, what is running now)


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
            out["runner_up"] = {"mesh": list(r.mesh_shape), "replicas": r.replicas,
                                "ffn": r.layout.ffn,
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
               mesh=None, replicas=(1,), **request):
    """Every (layout, mesh) priced for one phase, on each replica count of `replicas` (`mesh`,
    when given, is one replica's): a PhaseEstimate, or the reason it cannot run (a
    `LayoutError`: a mesh that does not divide a dimension, a batch smaller than its
    sharding). Any other exception is a bug and propagates."""
    for r in replicas:
        meshes = [tuple(mesh)] if mesh is not None else mesh_shapes(hw, chips // r)
        for m, layout in itertools.product(meshes, _layouts(ffn, attention, looped, cfg)):
            try:
                yield layout, m, phase_estimate(cfg, layout, m, phase, hardware=hw,
                                                replicas=r, **request)
            except LayoutError as err:
                yield layout, m, str(err)


def _attention_rank(name: str) -> bool:
    """False (first) for an attention layout whose chips each hold 1/n of the KV cache."""
    return not ATTENTION[name].CACHE_OVER_ALL_CHIPS


def _rounded(t: float) -> float:
    """`t` to nine significant figures: two times that differ by less are the same sum taken
    in another order (a looped schedule and its bidirectional twin), and compare equal."""
    return float(f"{t:.9g}")


def _preference(p: PhaseEstimate, hw: HardwareProfile):
    """Lowest latency; exact ties to the no-overlap time, then the attention layout that
    splits the KV cache over every chip (under wg-xyz both attention layouts run the same
    program, every chip owning whole sequences, and the paper calls that one by batch), then
    the stored layout E_xF_yz over 1D's EF_xyz (2D weight-stationary on a mesh whose x is 1
    is 1D weight-stationary over y and z: the same program, and the weights stored as the
    weight-gathered layouts store them, so that one stored layout serves every phase, as in
    the paper's Section 3.2.3), then the plain schedule over the looped ones (fewer
    collectives for the same time), then a slice with wraparound (ties between meshes arise
    where nothing crosses the links, as in an XYZ-weight-gathered step looped)."""
    return (_rounded(p.latency_s), _rounded(p.sum_s), _attention_rank(p.layout.attention),
            p.layout.ffn == "ws1d", p.layout.looped, p.layout.bidirectional,
            not wraps(hw, p.mesh_shape), p.replicas)


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
        int8 = "" if kw["weights"] in ("int8", "fp8") else " int8 weights,"
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
    kv: str = "bf16"  # the KV cache's format
    replicas: int | str = 1  # what was asked: a count, or "auto" (each phase says its choice)

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
        """`replicas` here is what was asked ("auto" or a count); each phase's `replicas` is
        the count it runs (`PhaseEstimate.to_json`)."""
        return {"model": self.model, "hardware": self.hardware, "chips": self.chips,
                "batch": self.batch, "weights": self.weights, "kv": self.kv,
                "replicas": self.replicas, "input_len": self.input_len,
                "history_len": self.history_len, "gen_len": self.gen_len, "rule": self.rule,
                "prefill": self.prefill.to_json() if self.prefill else None,
                "decode": self.decode.to_json() if self.decode else None,
                "total_latency_s": self.total_latency_s, "mfu": self.mfu, "fits": self.fits}


def plan(model: ModelConfig | str, hardware: HardwareProfile | str = "tpu-v4", chips: int = 64,
         batch: int = 1, input_len: int = 2048, history_len: int = 0, gen_len: int = 64,
         weights: str = "bf16", ffn: str = "auto", attention: str = "auto", *,
         looped: str = "auto", pad: bool = True, rule: str | None = None, mesh=None,
         allow_unfit: bool = False, kv: str | None = None,
         replicas: int | str = 1) -> Plan:
    """Choose mesh and layouts per phase (see the module docstring). `looped`: weigh plain,
    looped and bidirectional looped schedules (`auto`), only the looped ones (`yes`) or only
    plain (`no`). `pad`: pad H where a layout splits more chips than H divides. `kv`: the KV
    cache's format (None: bf16). `replicas`: 1 (one group over every chip), R, or "auto"
    (every count `replica_counts` allows); `mesh`, when given, is one replica's. Raises
    UsageError naming the problem when nothing runs, or (auto layouts) nothing fits;
    `allow_unfit` keeps unfitting configurations as candidates."""
    cfg, hw = get_model(model), get_hardware(hardware)
    check_format(weights)
    kv = check_kv(kv) or "bf16"
    _check_request(chips, batch, input_len, history_len, gen_len, ffn, attention, looped)
    if mesh is not None:
        mesh = check_mesh(hw, mesh)
        if replicas == "auto" and chips % math.prod(mesh) == 0:
            replicas = chips // math.prod(mesh)
        r = replicas if isinstance(replicas, int) else 1
        if math.prod(mesh) * r != chips:
            over = f" ({chips} chips over {r} replicas)" if r > 1 else ""
            raise UsageError(f"mesh {'x'.join(map(str, mesh))} has {math.prod(mesh)} chips, "
                             f"not {chips // r}{over}; pass --chips {math.prod(mesh) * r} or "
                             "another mesh")
    rule = rule or hw.rule
    kw = dict(batch=batch, input_len=input_len, history_len=history_len, gen_len=gen_len,
              weights=weights, rule=rule, ffn=ffn, attention=attention, looped=looped,
              pad=pad, mesh=mesh, allow_unfit=allow_unfit, kv=kv,
              replicas=replica_counts(hw, chips, batch, replicas))
    if weights == "fp8":
        hw.weight_matmul_flops(weights)  # a chip without fp8 says so once, before any pricing
    return Plan(cfg.name, hw.name, chips, batch, weights, input_len, history_len, gen_len,
                rule,
                prefill=choose(cfg, hw, chips, "prefill", **kw) if input_len else None,
                decode=choose(cfg, hw, chips, "decode", **kw) if gen_len else None,
                mfu_flops_per_token=cfg.mfu_flops_per_token(), peak_flops=hw.peak_flops,
                kv=kv, replicas=replicas)


def replica_counts(hw: HardwareProfile, chips: int, batch: int,
                   replicas: int | str = "auto") -> tuple[int, ...]:
    """The replica counts a request may run as: `replicas` itself when it is a count (checked:
    it divides the chips and the batch, and the hardware has a mesh of chips/R), or for
    "auto" every such R, 1 first."""
    if replicas == "auto":
        out = tuple(r for r in range(1, chips + 1) if chips % r == 0 and batch % r == 0
                    and _has_mesh(hw, chips // r))
        if not out:
            mesh_shapes(hw, chips)  # no mesh of the chips at all: its own error
        return out
    if not isinstance(replicas, int) or replicas < 1:
        raise UsageError(f"replicas {replicas!r}; choose auto or a positive count")
    if chips % replicas or batch % replicas:
        raise UsageError(f"{replicas} replicas need {replicas} to divide the chips ({chips}) "
                         f"and the batch ({batch}); choose a count that divides both, or auto")
    mesh_shapes(hw, chips // replicas)  # a replica's chip count no mesh allows fails here
    return (replicas,)


def _has_mesh(hw: HardwareProfile, chips: int) -> bool:
    try:
        return bool(mesh_shapes(hw, chips))
    except UsageError:
        return False


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
           progress: Progress | None = None, kv: str | None = None,
           replicas: int | str = 1) -> dict:
    """Latency against cost (chip-seconds per token) over chip counts, batches, meshes and
    layouts (plain and looped, as `plan` weighs them), and replica counts (`replicas`: 1, R,
    or "auto", as `plan` takes it); per phase, the points no other point beats on both.
    Prefill latency is the whole prefill; decode latency is per generated token (as the
    paper's Figure 1 plots them). `progress(done, total, what)`, when given, is called after
    each layout on each mesh: the library prints nothing itself."""
    cfg, hw = get_model(model), get_hardware(hardware)
    check_format(weights)
    kv = check_kv(kv) or "bf16"
    _check_request(1, 1, input_len, history_len, gen_len, ffn, attention, looped)
    if weights == "fp8":
        hw.weight_matmul_flops(weights)  # a chip without fp8 says so once, before any pricing
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
    # (chips, batch, replicas, one replica's mesh); R replicas hold the weights R times
    work = [(n, b, r, m) for n in chips for b in batches
            for r in _pareto_replicas(hw, n, b, replicas)
            if r * cfg.weight_bytes(weights) / n <= hw.hbm_bytes
            for m in mesh_shapes(hw, n // r)]
    layouts = _layouts(ffn, attention, looped, cfg)
    total = len(work) * len(layouts)
    points = {"prefill": [], "decode": []}
    request = dict(input_len=input_len, history_len=history_len, gen_len=gen_len,
                   weights=weights, hardware=hw, rule=rule, pad=pad, kv=kv)
    done = 0
    for (n, b, r, m), layout in itertools.product(work, layouts):
        for phase in PHASES:
            if (phase == "prefill" and not input_len) or (phase == "decode" and not gen_len):
                continue
            try:
                p = phase_estimate(cfg, layout, m, phase, batch=b, replicas=r, **request)
            except LayoutError:  # this layout cannot split this batch or mesh: no point
                continue
            if p.fits:
                latency = p.per_token_s if phase == "decode" else p.latency_s
                points[phase].append((latency, p.cost, p))
        if progress:
            done += 1
            where = f"{r} x {'x'.join(map(str, m))}" if r > 1 else 'x'.join(map(str, m))
            progress(done, total, f"{layout} on {where}, batch {b}")
    return {"model": cfg.name, "hardware": hw.name, "weights": weights, "kv": kv,
            "replicas": replicas, "input_len": input_len, "history_len": history_len,
            "gen_len": gen_len, "considered": total,
            **{ph: [_point(p, lat) for lat, _, p in frontier(points[ph])] for ph in PHASES}}


def _pareto_replicas(hw, chips: int, batch: int, replicas) -> tuple[int, ...]:
    """The replica counts of one (chips, batch) point of the sweep: `replica_counts`, or none
    where a given count does not divide them (that point is left out, as a layout that cannot
    split it is)."""
    try:
        return replica_counts(hw, chips, batch, replicas)
    except UsageError:
        return ()


def frontier(points: list[tuple]) -> list[tuple]:
    """The (latency, cost, ...) points that no other point beats in both, by latency. Equal
    points (to rounding, `_rounded`) keep the first in `points`' order, which lists the plain
    schedule before the looped ones (`_layouts`): a tie never turns on the last bit."""
    out = []
    for pt in sorted(points, key=lambda t: (_rounded(t[0]), _rounded(t[1]))):
        if not out or _rounded(pt[1]) < _rounded(out[-1][1]):
            out.append(pt)
    return out


def _point(p: PhaseEstimate, latency: float) -> dict:
    return {"chips": p.chips, "batch": p.batch, "mesh": list(p.mesh_shape),
            "replicas": p.replicas,
            "ffn": p.layout.ffn, "attention": p.layout.attention, "looped": p.layout.looped,
            "bidirectional": p.layout.bidirectional, "schedule": p.layout.schedule,
            "padded_heads": p.padded_heads, "latency_s": latency,
            "cost_chip_s_per_token": p.cost, "mfu": p.mfu}
