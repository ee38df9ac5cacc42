"""One phase of a request priced whole: all of a prefill, or every generated token of a decode.

A request is `input_len` new tokens per sequence on top of `history_len` already cached, then
`gen_len` generated tokens, for a batch of B sequences:
- prefill: one step of L = input_len tokens attending over history_len + input_len positions;
- decode: gen_len steps of one token, step i attending over S0 + i positions
  (S0 = history_len + input_len, i = 1..gen_len).

Every term of a decode step is affine in its context (KV bytes and attention FLOPs grow with S,
nothing else changes), so a phase prices the first and the last step and interpolates each
step between them; every step is then combined under the rule and summed, which is the exact
sum over the growing context without pricing each step (checked against the step-by-step sum
in tests/test_planner.py). The sum is taken in closed form (`_sum_of_steps`): a phase of
thousands of decode steps costs what one of two does. On R data-parallel replicas the steps
are one replica's (`tpuinfer.planner`'s docstring says what a replica's latency, MFU and cost
are).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from .config import ModelConfig, get_model
from .cost import Estimate, combine, cost_per_token, estimate, mfu, named_times
from .errors import LayoutError, UsageError
from .hardware import HardwareProfile, get_hardware
from .layouts import Layout
from .layouts.registry import pad_heads

PHASES = ("prefill", "decode")
# a step's parts, each affine in the decode step's context (`Estimate`'s times)
PARTS = ("compute_s", "weights_s", "kv_s", "activations_s", "comm_s", "hidden_s", "overhead_s")


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
    # data-parallel replicas, each on `mesh_shape` with batch/replicas of the sequences; the
    # batch, tokens and chips here are all replicas', the times and memory one replica's
    replicas: int = 1

    @property
    def chips(self) -> int:
        """Every chip the phase runs on: all replicas'."""
        return math.prod(self.mesh_shape) * self.replicas

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
        copies = f" (each of {self.replicas} replicas)" if self.replicas > 1 else ""
        return (f"{self.layout} on {'x'.join(map(str, self.mesh_shape))}{copies} needs "
                f"{self.memory_per_chip_bytes / 2**30:.1f} GiB per chip, {self.last.hardware} "
                f"has {self.last.hbm_bytes / 2**30:.1f} GiB")

    def to_json(self) -> dict:
        """`mesh` is one replica's; `replicas` how many run side by side."""
        out = {"mesh": list(self.mesh_shape), "replicas": self.replicas,
               "chips_per_replica": math.prod(self.mesh_shape),
               "batch_per_replica": self.batch // self.replicas, "ffn": self.layout.ffn,
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
                   rule: str | None = None, pad: bool = False, kv: str | None = None,
                   replicas: int = 1) -> PhaseEstimate:
    """One phase on one configuration. `pad`: where the layout splits H over more chips than
    H divides, pad H up as the paper does (`layouts.registry.pad_heads`) and price the padded
    model; without it such a layout is an error naming the heads. `kv`: the KV cache's
    format. `replicas`: R data-parallel replicas, each on `mesh_shape` with batch/R of the
    sequences (the module docstring)."""
    cfg, hw, mesh_shape = get_model(cfg), get_hardware(hardware), tuple(mesh_shape)
    rule = rule or hw.rule
    padded = pad_heads(cfg, layout, mesh_shape) if pad else cfg
    cfg, padded_heads = padded, (padded.H if padded.H != cfg.H else None)
    if (phase == "prefill" and input_len < 1) or (phase == "decode" and gen_len < 1):
        raise UsageError(f"a {phase} needs at least one token; got input_len={input_len}, "
                         f"gen_len={gen_len}")
    if replicas < 1 or batch % replicas:
        raise LayoutError(f"batch {batch} does not split over {replicas} replicas; use a "
                          f"batch that {replicas} divides, or another replica count")
    run = dict(batch=batch // replicas, weights=weights, hardware=hw, rule=rule, kv=kv,
               replicas=replicas)
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
    # Each part of step i lies between the first and the last step's (exact: affine in i).
    ends = {k: (getattr(first, k), getattr(last, k)) for k in PARTS}
    latency = _sum_of_steps(rule, ends, steps)
    total = {k: steps * (a + b) / 2 for k, (a, b) in ends.items()}  # an affine part's sum
    return PhaseEstimate(
        phase=phase, layout=layout, mesh_shape=tuple(mesh_shape), batch=batch, steps=steps,
        tokens=tokens, first=first, last=last, latency_s=latency,
        compute_s=total["compute_s"], weights_s=total["weights_s"], kv_s=total["kv_s"],
        comm_s=total["comm_s"],
        mfu=mfu(cfg, tokens, replicas * math.prod(mesh_shape), hw, latency),
        overhead_s=total["overhead_s"], activations_s=total["activations_s"],
        padded_heads=padded_heads, replicas=replicas)


def _sum_of_steps(rule: str, ends: dict, steps: int) -> float:
    """The step time (`combine`) summed over `steps` steps, each part of step i at fraction
    i/(steps − 1) of the way between its first and last values (`ends`: part -> (first,
    last)). Where the step time is affine in i (always under `sum`) the sum is
    steps·(first + last)/2. Under `overlap` max(compute, memory) is affine on each side of the
    step where the two cross: there the sum is taken in those two pieces."""
    def at(i) -> tuple:  # (compute, memory, comm, hidden, overhead) of step i
        f = i / (steps - 1) if steps > 1 else 0.0
        p = {k: a + (b - a) * f for k, (a, b) in ends.items()}
        return (p["compute_s"], p["weights_s"] + p["kv_s"] + p["activations_s"], p["comm_s"],
                p["hidden_s"], p["overhead_s"])

    first, last = at(0), at(steps - 1)
    d0, d1 = first[0] - first[1], last[0] - last[1]
    if rule != "overlap" or d0 * d1 >= 0:
        return steps * (combine(rule, *first) + combine(rule, *last)) / 2
    k = math.floor(d0 / (d0 - d1) * (steps - 1)) + 1  # the first step past the crossing
    return (k * (combine(rule, *first) + combine(rule, *at(k - 1)))
            + (steps - k) * (combine(rule, *at(k)) + combine(rule, *last))) / 2
