"""The paper's closed-form results, each derived in the book and checked there against the
layouts' own counts (`step_terms`) and the cost model.

Pope et al. 2022, "Efficiently Scaling Transformer Inference", arXiv 2211.05102. The layouts
and the cost model never call these: they count what the code moves. These formulas are what
a reader derives by hand from the paper's idealised feed-forward (two E×F matrices, no
attention, no SwiGLU gate), so the book can show where the library's exact counts agree with
them and where, and why, they differ.
"""
from __future__ import annotations

import math

from .config import get_model
from .hardware import get_hardware
from .quant import BYTES


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
    # 2·N·bandwidth/peak − S·k = k·(S* − S), S* the context `kv_bound_context` gives
    room = cfg.kv_bytes_per_token(kv_bytes, kv) * (
        kv_bound_context(cfg, hardware, kv_bytes, kv, weights) - context)
    return math.inf if room <= 0 else cfg.matmul_params() * BYTES[weights] / room


def kv_bound_context(model, hardware="tpu-v4", kv_bytes: float = 2, kv: str | None = None,
                     weights: str = "bf16") -> float:
    """The context at which one sequence's cache takes as long to read as its 2·N FLOPs take
    to compute (S·k/bandwidth = 2·N/peak, peak the weights' matmul rate): beyond it a decode
    step is memory-bound at any batch, however many sequences share the weights' reads. The
    cache holds `kv_bytes` per value, or is in the KV format `kv`."""
    cfg, hw = get_model(model), get_hardware(hardware)
    peak = hw.weight_matmul_flops(weights)
    return 2 * cfg.matmul_params() * hw.hbm_bandwidth / (
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
