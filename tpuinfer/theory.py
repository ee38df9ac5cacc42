"""The paper's closed-form results, each derived in the book and checked there against the
layouts' own counts (`step_terms`) and the cost model.

Pope et al. 2022, "Efficiently Scaling Transformer Inference", arXiv 2211.05102. The layouts
and the cost model never call these: they count what the code moves. These formulas are what
a reader derives by hand from the paper's idealised feed-forward (two E×F matrices, no
attention, no SwiGLU gate), so the book can show where the library's exact counts agree with
them and where, and why, they differ. The last ones carry Section 2's decode roofline over to
a mixture of experts (the book's chapter 13), with `tpuinfer.experts`' count of the experts a
batch touches.
"""
from __future__ import annotations

import math

from .config import get_model
from .errors import UsageError
from .experts import touched_fraction
from .hardware import get_hardware
from .weight_formats import BYTES


def ws2d_optimal_x(n: int, E: int, F: int) -> float:
    """The X that minimises 2D weight-stationary's feed-forward communication
    2·B·L·(E/X + F·X/n) (Section 3.2.2): X = √(n·E/F)."""
    return math.sqrt(n * E / F)


def ws2d_crossover_chips(E: int, F: int) -> float:
    """The chip count above which optimal 2D weight-stationary moves fewer bytes than 1D
    (Section 3.2.2): 4·B·L·√(E·F/n) < 2·B·L·E when n > 4F/E."""
    return 4 * F / E


def ws2d_optimal_comm(n: int, E: int, F: int, tokens: int = 1) -> float:
    """2D weight-stationary's feed-forward communication per layer at the optimal X
    (Section 3.2.2), in elements: 4·B·L·√(E·F/n), B·L = `tokens`; it falls as 1/√n."""
    return 4 * tokens * math.sqrt(E * F / n)


def wg_crossover_tokens(n: int, F: int, gather_small: int, gather_large: int) -> float:
    """The tokens per batch B·L above which gathering the weights over `gather_large` chips
    moves fewer bytes than over `gather_small` (Section 3.2.3): 2·E·F·N/n + 2·B·L·E/N is equal
    for the two N when B·L = F·N₁·N₂/n (XY against XYZ on 64 chips: 16F)."""
    return F * gather_small * gather_large / n


def wg_optimal_gather(tokens: int, n: int, F: int) -> float:
    """The number of chips N to gather the weights over that minimises weight-gathered
    communication 2·E·F·N/n + 2·B·L·E/N (Section 3.2.3): N = √(B·L·n/F), B·L = `tokens`."""
    return math.sqrt(tokens * n / F)


def decode_ridge_batch(hardware="tpu-v4", weights: str = "bf16") -> float:
    """The batch above which a decode step's weight matmuls take longer than reading the
    weights (Section 2: compute 2·N·B / (n·peak), weights N·b / (n·HBM bandwidth)):
    B = peak·b / (2·HBM bandwidth), b the bytes per weight (peak: the fp8 rate for fp8
    weights, `HardwareProfile.weight_matmul_flops`). The KV cache and communication are left
    out: this is the weights' own ridge point."""
    hw = get_hardware(hardware)
    return hw.weight_matmul_flops(weights) * BYTES[weights] / (2 * hw.hbm_bandwidth)


def decode_critical_batch(model, hardware="tpu-v4", weights: str = "bf16",
                          context: int = 0, kv_bytes: float = 2,
                          kv: str | None = None) -> float:
    """The batch above which a decode step's matmuls outlast its HBM reads, the KV cache's
    included (Section 2's roofline with the cache of Section 3.3): compute 2·N·B/peak against
    (N·b + B·S·k)/bandwidth, all chips together (each term divides by n alike), with N the
    matmul parameters, b bytes per weight, S the context and k the cache's bytes per token
    (`ModelConfig.kv_bytes_per_token`: `kv_bytes` per value, or the KV format `kv`, int8's
    scales included). B = N·b / (2·N·bandwidth/peak − S·k); infinite once
    S ≥ `kv_bound_context`: then no batch is compute-bound. Context 0 is
    `decode_ridge_batch`. Communication is left out."""
    cfg = get_model(model)
    if cfg.n_experts:
        raise UsageError(f"{cfg.name} is a mixture of experts: its reads depend on the experts "
                         f"a batch touches; use theory.moe_decode_critical_batch")
    # 2·N·bandwidth/peak − S·k = k·(S* − S), S* the context `kv_bound_context` gives
    room = cfg.kv_bytes_per_token(kv_bytes, kv) * (
        kv_bound_context(cfg, hardware, kv_bytes, kv, weights) - context)
    return math.inf if room <= 0 else cfg.matmul_params() * BYTES[weights] / room


def kv_bound_context(model, hardware="tpu-v4", kv_bytes: float = 2, kv: str | None = None,
                     weights: str = "bf16") -> float:
    """The context at which one sequence's cache takes as long to read as its 2·N FLOPs take
    to compute (S·k/bandwidth = 2·N/peak, N a mixture of experts' active parameters, peak the
    weights' matmul rate): beyond it a decode step is memory-bound at any batch, however many
    sequences share the weights' reads. The cache holds `kv_bytes` per value, or is in the KV
    format `kv`."""
    cfg, hw = get_model(model), get_hardware(hardware)
    peak = hw.weight_matmul_flops(weights)
    return 2 * cfg.active_matmul_params() * hw.hbm_bandwidth / (
        peak * cfg.kv_bytes_per_token(kv_bytes, kv))


def bytes_sent(collective) -> float:
    """The bytes one chip sends over its links for a `terms.Collective` (Section 3.1's costs),
    where the library's convention (`tpuinfer.terms`) charges the larger side of the operation:
    a chip's own 1/K of an all-gather, reduce-scatter or all-to-all never leaves it, and an
    all-reduce is a reduce-scatter then an all-gather. Per call, times `count`."""
    c, k = collective, collective.group
    share = {"all-gather": (k - 1) / k, "reduce-scatter": (k - 1) / k, "all-to-all": (k - 1) / k,
             "all-reduce": 2 * (k - 1) / k, "collective-permute": 1.0}[c.kind]
    return c.bytes * share * c.count


# ---- a mixture of experts' decode ------------------------------------------------------------
def moe_decode_weight_bytes(model, batch: int, weights: str = "bf16") -> float:
    """The weight bytes a decode step of `batch` sequences reads, all chips together: every
    matrix but the routed experts', and of those the fraction uniform routing touches
    (`experts.touched_fraction`: k/M of them at batch 1, nearly all once B passes a few times
    M/k). A dense model's: all of them."""
    cfg = get_model(model)
    experts = cfg.n_layers * cfg.n_experts * cfg.expert_params()
    read = cfg.matmul_params() - experts * (1 - touched_fraction(cfg, batch))
    return read * BYTES[weights]


def moe_decode_roofline(model, batch: int, hardware="tpu-v4",
                        weights: str = "bf16") -> tuple[float, float]:
    """(compute_s, weights_s) of a decode step on one chip's datasheet speed (on n chips both
    divide by n): 2·N_active·B / peak against `moe_decode_weight_bytes` / HBM bandwidth. The
    KV cache and communication are left out, as in `decode_ridge_batch`."""
    cfg, hw = get_model(model), get_hardware(hardware)
    return (2 * cfg.active_matmul_params() * batch / hw.peak_flops,
            moe_decode_weight_bytes(cfg, batch, weights) / hw.hbm_bandwidth)


def moe_decode_critical_batch(model, hardware="tpu-v4", weights: str = "bf16") -> float:
    """The batch above which a mixture of experts' decode step computes longer than it reads
    its weights: 2·N_active·B/peak = (N − N_experts·(1 − f(B)))·b/bandwidth, f(B) the
    fraction of experts B tokens touch. The reads grow with B until every expert is read, so the
    crossing is found by bisection; once f ≈ 1 it is N/N_active times a dense model's
    (`decode_ridge_batch`): the idle experts' weights are read but never multiplied."""
    lo, hi = 0.0, 1.0
    while _compute_over_reads(model, hi, hardware, weights) < 1:
        lo, hi = hi, hi * 2
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _compute_over_reads(model, mid, hardware, weights) < 1 else (lo, mid)
    return hi


def _compute_over_reads(model, batch, hardware, weights) -> float:
    compute_s, weights_s = moe_decode_roofline(model, batch, hardware, weights)
    return compute_s / weights_s
