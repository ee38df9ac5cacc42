"""The analytical cost model: a layout's `StepTerms` on a hardware profile, as named times.

The terms (FLOPs, bytes, collectives) come from the layout files, one formula each, beside the
code they predict; this module only prices them on a chip. Formulas follow Pope et al. 2022
(arXiv 2211.05102), Section 3.1:

- compute_s = weight-matmul FLOPs / (its peak · flops_efficiency) + attention FLOPs / (peak ·
  flops_efficiency): fp8 weights' matmuls at the chip's fp8 peak (`fp8_flops`; a clear error
  on a chip without), every other format's and attention's at the bf16 peak
- weights_s, kv_s = bytes read / (HBM bandwidth · hbm_efficiency), the KV bytes in the
  cache's format (`kv`: an int8 cache one byte a value and a bf16 scale per token and head,
  `tpuinfer.kv_formats`); on a profile with a
  `multirow_weight_bandwidth` (a host), the weights that matmuls of more than one row read
  (`multirow_weight_bytes`) at that rate instead, and with a `relayout_bandwidth` (a host),
  the copy that puts gathered weights in place (`relayout_bytes`) at that rate on top
- activations_s = the bytes the weight matmuls read and write (`activation_traffic_bytes`)
  / the profile's `activation_bandwidth`, plus attention's f32 scores (`score_bytes`) / its
  `score_bandwidth`; 0 where a profile leaves them out, as the paper does and every chip
  profile here does (a host prices them; see below)
- each collective (V = its bytes per chip, K its group, W the rate its group's links give it
  and h the latency of one hop, both from `slices.group_links`: the physical axes of the slice
  under the group's mesh axes, run one after another), per call:
    all-gather, reduce-scatter   V·(K−1)/K / W              + steps hops
    all-reduce                   2·V·(K−1)/K / W            + 2·steps hops
    all-to-all                   V·a2a_distance / W         + steps hops
                                 (one ring: ≈ a quarter of an all-gather of the K·V tensor)
    collective-permute           V / W1                     + 1 hop
                                 (W1: one link, one way: a ring shift sends to one neighbour;
                                 the two halves of a bidirectional ring go at once, each
                                 on its own direction, so they cost count/2 such rounds)
  with W at the profile's `link_efficiency` of its datasheet rate, plus the profile's fixed
  `collective_overhead_s` per call. A "step" is one neighbour hop of a ring algorithm: on a
  torus, half a physical axis with wraparound, the whole of one without, summed over the
  physical axes the group spans; on a GPU node one NVSwitch hop, and a group that leaves its
  node is priced at the network's bandwidth and latency (`slices`).

Data-parallel replicas (`replicas=R`): the terms are one replica's (its mesh, its B/R
sequences), and on a chip nothing else changes (each replica runs on chips of its own). On a
`host` profile the R·n emulated devices take turns on the same cores, so they share its
throughput and every collective call involves all of them.

`overhead_s` is a host profile's fixed cost per step and per layer and device
(`device_overhead_s`, `layer_overhead_s`): on an emulated mesh (`tpuinfer.calibrate`) the
devices share one machine: compute, weight, KV and activation times are the per-device work
of all `chips` devices at the host's throughput, `overhead_s` is every device's dispatch
cost, and a collective call costs call + chips·device + chips·group·member +
chips·bytes·byte, with the constants of its kind. No chip profile has a fixed cost per layer:
a chip's fixed costs are its collectives' hops and launches, which scale with the layout's
calls and the slice's shape, not with one model's fit.

What overlaps (one rule for every chip profile, from the paper and XLA):
- HBM streaming and the matrix units overlap: XLA streams a fused matmul's operands from HBM
  while the MXU (a GPU's tensor cores) runs, so weight and KV reads and FLOPs take the longer
  of the two, as in the paper's model (Section 3.1: a step is compute-bound or memory-bound).
- A plain collective does not overlap: XLA issues collectives asynchronously
  (all-gather-start/-done), but each one of a layer feeds, or is fed by, the next matmul, so
  nothing independent runs while it is in flight; decode has no such work at all.
- A looped collective overlaps the partial matmuls it feeds (the paper's Section 3.5, the
  `overlap` rule below): a round's transfer and hop run beside one partial matmul.
- A call's launch cost (`collective_overhead_s`) never overlaps: the calls are issued one
  after another, each waiting for the last.

The step time under a rule (stated, never implicit):
- `sum`: compute + weights + kv + activations + comm. Nothing overlaps.
- `overlap`: max(compute, weights + kv + activations) + comm − hidden. Only what the schedule
  overlaps: HBM streams the weights and the cache while the matrix units run, so those two
  take the longer of the two. A plain layout's collectives (all-gather, reduce-scatter,
  all-reduce, all-to-all) sit between the matmuls on the critical path: nothing hides them. A looped
  layout (Looped CollectiveEinsum, the paper's Section 3.5) splits the matmul beside each of
  its rings into K partial matmuls; each of the K−1 rounds of collective permutes is in flight
  (transfer and hop) while one partial matmul runs, so `hidden` is, per round,
  min(transfer + hop, that partial matmul's time), the partial matmul's time being the longer
  of its FLOPs and its weight reads. What stays exposed: a round's excess over its partial
  matmul, and every call's fixed launch overhead (`collective_overhead_s`: the loop issues
  them one after another). One partial matmul has no round beside it and hides nothing: in a
  looped all-gather the last chunk to arrive (the chip's own chunk is multiplied first,
  beside the first permute); in a looped reduce-scatter the first partial product, which
  must be done before the first permute can carry it (the chip's own chunk is computed
  last, beside the last permute). A host profile hides nothing: its devices take turns on
  the same cores.
Every chip profile runs `overlap` (the rule above); `sum` is the no-overlap bound; `rule=`
overrides a profile's. The reported `comm_s` is always every collective's full time, whatever
the rule hides.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

from .config import ModelConfig, get_model
from .errors import UsageError
from .hardware import HardwareProfile, get_hardware, group_links
from .kv_formats import resolve as kv_format
from .layouts import Layout, step_terms
from .terms import Collective, StepTerms


@dataclass(frozen=True)
class CollectiveTime:
    collective: Collective
    bandwidth_s: float  # one round's transfer time
    latency_s: float  # one round's hops and fixed overhead
    rounds: float  # calls one after another: count, or count/concurrent where links allow
    hidden_s: float = 0.0  # per round: what runs beside a partial matmul (looped rings only)
    beside_s: float = 0.0  # per round: the partial matmul beside it (looped rings only)

    @property
    def total_s(self) -> float:
        return self.rounds * (self.bandwidth_s + self.latency_s)

    @property
    def exposed_s(self) -> float:
        """Under `overlap`: what stays on the critical path."""
        return self.rounds * (self.bandwidth_s + self.latency_s - self.hidden_s)


def collective_time(c: Collective, hw: HardwareProfile | str, mesh_shape,
                    flops_per_s: float = 0.0, hbm_per_s: float = 0.0,
                    replicas: int = 1) -> CollectiveTime:
    """One collective term's time. With the chip's matmul speed (`estimate` passes it), a
    looped ring's rounds hide behind the partial matmuls beside them (`hidden_s`); a plain
    collective, or any on a host, hides nothing."""
    hw = get_hardware(hw)
    t = _collective_time(c, hw, tuple(mesh_shape), replicas)
    if hw.interconnect == "host" or not (c.beside_flops or c.beside_bytes) or not flops_per_s:
        return t
    matmul_s = max(c.beside_flops / flops_per_s, c.beside_bytes / hbm_per_s)
    in_flight = t.bandwidth_s + t.latency_s - hw.collective_overhead_s  # transfer and hop
    return CollectiveTime(c, t.bandwidth_s, t.latency_s, t.rounds, min(in_flight, matmul_s),
                          matmul_s)


@functools.lru_cache(maxsize=65536)
def _collective_time(c: Collective, hw: HardwareProfile, mesh_shape,
                     replicas: int = 1) -> CollectiveTime:
    link = group_links(hw, mesh_shape, c.axes)
    if link.chips != c.group:
        raise ValueError(f"collective {c.kind} over {c.axes} says {c.group} chips, but those "
                         f"axes of mesh {mesh_shape} hold {link.chips}")
    if link.chips == 1:
        return CollectiveTime(c, 0.0, 0.0, c.count)
    if hw.interconnect == "host":
        return _host_collective_time(c, hw, replicas * math.prod(mesh_shape))
    # the links at the fraction of their datasheet rate the profile's collectives reach
    bandwidth, neighbour = (link.bandwidth * hw.link_efficiency,
                            link.neighbour_bandwidth * hw.link_efficiency)
    spread = c.bytes * (c.group - 1) / c.group / bandwidth
    hop = link.step_latency_s
    bandwidth_s, latency_s = {
        "all-gather": (spread, link.steps * hop),
        "reduce-scatter": (spread, link.steps * hop),
        "all-reduce": (2 * spread, 2 * link.steps * hop),
        "all-to-all": (c.bytes * link.a2a_distance / bandwidth, link.steps * hop),
        "collective-permute": (c.bytes / neighbour, hop),
    }[c.kind]
    return CollectiveTime(c, bandwidth_s, latency_s + hw.collective_overhead_s,
                          c.count / c.concurrent)


def _host_collective_time(c: Collective, hw: HardwareProfile, chips: int) -> CollectiveTime:
    """One call on an emulated mesh: every device of the mesh takes part (the groups run at
    once on the same cores), so each part scales with `chips`. The CPU runs every call in
    turn, bidirectional halves included."""
    call_s, device_s, member_s, byte_s = hw.host_collective(c.kind)
    return CollectiveTime(c, chips * c.bytes * byte_s,
                          call_s + chips * device_s + chips * c.group * member_s, c.count)


@functools.lru_cache(maxsize=8192)
def _price(collectives: tuple, hw, mesh_shape, flops_per_s, hbm_per_s, replicas=1) -> tuple:
    """Every collective of a step priced, with their total and hidden seconds (cached: the
    decode steps of a phase share them)."""
    coll = tuple(collective_time(c, hw, mesh_shape, flops_per_s, hbm_per_s, replicas)
                 for c in collectives)
    return coll, sum(t.total_s for t in coll), sum(t.rounds * t.hidden_s for t in coll)


def combine(rule: str, compute_s, memory_s, comm_s, hidden_s, overhead_s=0.0):
    """The step time from its parts under `rule`: `hidden_s` is the part of `comm_s` looped
    rings hide under `overlap`."""
    if rule == "sum":
        return compute_s + memory_s + comm_s + overhead_s
    if rule == "overlap":
        return max(compute_s, memory_s) + comm_s - hidden_s + overhead_s
    raise UsageError(f"unknown rule {rule!r}; choose 'sum' (no overlap) or 'overlap'")


@dataclass(frozen=True)
class Estimate:
    """One step on one hardware profile: the terms and every time derived from them."""
    model: str
    layout: Layout
    mesh_shape: tuple[int, int, int]
    hardware: str
    batch: int
    tokens: int  # per sequence this step (1 in decode)
    context: int  # positions attended over
    weights: str
    rule: str
    terms: StepTerms
    collectives: tuple[CollectiveTime, ...]
    compute_s: float
    weights_s: float
    kv_s: float
    comm_s: float  # every collective, bandwidth and latency, as if nothing overlapped
    hidden_s: float  # the part of comm_s looped rings hide behind their matmuls (`overlap`)
    overhead_s: float  # fixed cost per step and layer (the profile's; 0 on a datasheet)
    step_s: float
    mfu: float
    memory_per_chip_bytes: float
    hbm_bytes: float
    activations_s: float = 0.0  # the matmuls' activation traffic and attention's scores (0
    #                             unless the profile prices them)
    kv: str = "bf16"  # the KV cache's format (`tpuinfer.kv_formats`)
    replicas: int = 1  # data-parallel replicas; every term above is one replica's

    @property
    def chips(self) -> int:
        return self.mesh_shape[0] * self.mesh_shape[1] * self.mesh_shape[2]

    @property
    def memory_s(self) -> float:
        return self.weights_s + self.kv_s + self.activations_s

    @property
    def exposed_s(self) -> float:
        """What stays on the critical path under `overlap`: unhidden collectives, dispatch."""
        return self.comm_s - self.hidden_s + self.overhead_s

    @property
    def fits(self) -> bool:
        return self.memory_per_chip_bytes <= self.hbm_bytes

    def times(self) -> dict:
        return named_times(self)


def named_times(t) -> dict:
    """The named times of a step (`Estimate`) or of a phase (`planner.PhaseEstimate`): compute,
    weights, KV and communication, and the activation traffic and fixed overhead where a
    profile prices them."""
    out = {"compute_s": t.compute_s, "weights_s": t.weights_s, "kv_s": t.kv_s,
           "comm_s": t.comm_s}
    if t.activations_s:
        out["activations_s"] = t.activations_s
    if t.overhead_s:
        out["overhead_s"] = t.overhead_s
    return out


def estimate(cfg: ModelConfig | str, layout: Layout, mesh_shape, *, batch: int, tokens: int,
             context: int, weights: str = "bf16", hardware: HardwareProfile | str = "tpu-v4",
             rule: str | None = None, terms: StepTerms | None = None, kv: str | None = None,
             replicas: int = 1) -> Estimate:
    """Price one step. `terms` defaults to the layout's own `step_terms`; pass hand-made terms
    to price something the layouts do not build. `rule` defaults to the profile's. `kv`: the
    KV cache's format ("bf16", "int8", "fp8"; None: bf16, the activations'). `replicas`: how
    many data-parallel replicas run this step side by side (`mesh_shape` and `batch` are one
    replica's; only a host profile, whose devices share one machine, prices them)."""
    cfg, hw = get_model(cfg), get_hardware(hardware)
    mesh_shape = tuple(int(s) for s in mesh_shape)
    rule = rule or hw.rule
    kv = kv_format(kv, 2).name
    if terms is None:
        terms = _step_terms(cfg, layout, mesh_shape, batch, tokens, context, weights, kv)
    chips = mesh_shape[0] * mesh_shape[1] * mesh_shape[2]
    # an emulated mesh's devices take turns on one host: its throughput is shared by all the
    # devices of every replica
    share = replicas * chips if hw.interconnect == "host" else 1
    flops_per_s = hw.peak_flops * hw.flops_efficiency / share
    weight_flops_per_s = hw.weight_matmul_flops(weights) * hw.flops_efficiency / share
    hbm_per_s = hw.hbm_bandwidth * hw.hbm_efficiency / share
    coll, comm_s, hidden_s = _price(terms.collectives, hw, mesh_shape, weight_flops_per_s,
                                    hbm_per_s, replicas)
    compute_s = ((terms.flops + terms.attention_flops) / flops_per_s
                 if weight_flops_per_s == flops_per_s  # one rate: the sum, as it always was
                 else terms.flops / weight_flops_per_s + terms.attention_flops / flops_per_s)
    weights_s = terms.weight_bytes / hbm_per_s
    if hw.multirow_weight_bandwidth:  # a host: packed matmuls read at their own rate
        multirow = terms.multirow_weight_bytes
        weights_s = ((terms.weight_bytes - multirow) / hbm_per_s
                     + share * multirow / hw.multirow_weight_bandwidth)
    if hw.relayout_bandwidth:  # a host: gathered weights are copied into place first
        weights_s += share * terms.relayout_bytes / hw.relayout_bandwidth
    kv_s = terms.kv_bytes / hbm_per_s
    activations_s = (share * terms.activation_traffic_bytes / hw.activation_bandwidth
                     if hw.activation_bandwidth else 0.0)
    if hw.score_bandwidth:  # a host: attention's scores, activations of its own
        activations_s += share * terms.score_bytes / hw.score_bandwidth
    overhead_s = share * (hw.device_overhead_s + cfg.n_layers * hw.layer_overhead_s)
    step_s = float(combine(rule, compute_s, weights_s + kv_s + activations_s, comm_s, hidden_s,
                           overhead_s))
    return Estimate(
        model=cfg.name, layout=layout, mesh_shape=mesh_shape, hardware=hw.name, batch=batch,
        tokens=tokens, context=context, weights=weights, rule=rule, terms=terms,
        collectives=coll, compute_s=compute_s, weights_s=weights_s, kv_s=kv_s, comm_s=comm_s,
        hidden_s=hidden_s, overhead_s=overhead_s, step_s=step_s,
        mfu=mfu(cfg, batch * tokens, chips, hw, step_s),
        memory_per_chip_bytes=memory_per_chip(terms), hbm_bytes=hw.hbm_bytes,
        activations_s=activations_s, kv=kv, replicas=replicas)


@functools.lru_cache(maxsize=8192)
def _step_terms(cfg, layout, mesh_shape, batch, tokens, context, weights, kv) -> StepTerms:
    """The layout's `step_terms`, built once per step (the planner, the Pareto sweep and
    `paper` price the same steps under several profiles and rules). Activations are bf16 on
    real chips (f32 only in the emulated engine)."""
    return step_terms(cfg, layout, mesh_shape, batch=batch, tokens=tokens, context=context,
                      weights=weights, act_bytes=2, kv=kv)


def memory_per_chip(terms: StepTerms) -> float:
    """What a chip holds at the step's peak: its weights, its KV cache, and what the step adds
    while it runs (the largest activation and, weight-gathered, one layer's gathered weights
    or the gathered table)."""
    return terms.stored_weight_bytes + terms.stored_kv_bytes + terms.transient_bytes


def mfu(cfg: ModelConfig | str, tokens: float, chips: int, hardware, time_s: float) -> float:
    """MFU = 2·N·tokens / (chips · peak · time) (the paper's Section 2), against the datasheet
    bf16 peak (a calibrated profile's efficiency is what MFU measures, not a lower peak; fp8
    weights are measured against the same bf16 peak, so formats compare on one scale and an
    fp8 step's MFU may pass 1)."""
    if time_s <= 0:
        return 0.0
    return (get_model(cfg).mfu_flops_per_token() * tokens
            / (chips * get_hardware(hardware).peak_flops * time_s))


def cost_per_token(chips: int, time_s: float, tokens: float) -> float:
    """Cost = chip-seconds per token (the paper's Section 2.1)."""
    return chips * time_s / tokens
