"""The longest context whose KV cache fits (Pope et al. 2022, arXiv 2211.05102, Section 4.2).

The paper compares three ways to hold the cache of PaLM 540B on 64 chips: multihead attention
split by heads, multiquery split by heads (its one K/V head replicated on every chip) and
multiquery split by batch. Each is an attention layout over all the chips (1D
weight-stationary splits the heads over every chip), so a chip's cache here is its shard of
that layout's cache spec (`registry.cache_bytes_per_chip`): the same accounting the cost
model and the engine use.

A grouped-query model (Llama: 1 < K < H) has two more: its K/V heads split by heads over as
many chips as K allows and replicated over the rest, or split by batch as multiquery's.

The cache's format (`kv`, `tpuinfer.kv_formats`) sets its bytes per value: bf16 2, fp8 1, int8
1 plus a bf16 scale per token and head (1 + 2/D: PaLM 540B's D = 256 makes it 1.008), so an
int8 or fp8 cache holds about twice bf16's context in the same HBM.
"""
from __future__ import annotations

import math

from .config import ModelConfig, get_model
from .errors import LayoutError, UsageError
from .hardware import HardwareProfile, get_hardware
from .kv_formats import check_kv
from .layouts import Layout
from .layouts.registry import ATTENTION, cache_bytes_per_chip

# variant -> (the model's attention, the layout over all chips that holds it)
VARIANTS = {"multihead": ("multihead", Layout("ws1d", "heads")),
            "multiquery-heads": ("multiquery", Layout("ws1d", "heads")),
            "multiquery-batch": ("multiquery", Layout("ws1d", "batch")),
            "grouped-heads": ("grouped", Layout("ws1d", "heads")),
            "grouped-batch": ("grouped", Layout("ws1d", "batch"))}
ATTENTION_VARIANTS = tuple(VARIANTS)[:3]  # the paper's three (Section 4.2)
GROUPED_VARIANTS = tuple(VARIANTS)[3:]  # a grouped-query model's own


def variant_config(cfg: ModelConfig | str, variant: str) -> ModelConfig:
    """The model under an attention variant. A multiquery model's multihead baseline halves
    d_head, as the paper's comparison does (PaLM: multiquery D=256 against multihead D=128);
    a grouped-query model's multihead and multiquery forms keep its d_head."""
    cfg = get_model(cfg)
    if variant not in VARIANTS:
        raise UsageError(f"unknown attention variant {variant!r}; choose one of "
                         f"{', '.join(VARIANTS)}")
    kind = VARIANTS[variant][0]
    if kind == "grouped":
        if cfg.attention_kind != "grouped":
            raise UsageError(f"{cfg.name} has K={cfg.K} key/value heads, not grouped-query "
                             f"attention: {variant} needs a grouped model (llama-3-70b, "
                             f"qwen2.5-7b, ...); choose one of {', '.join(ATTENTION_VARIANTS)}")
        return cfg
    if kind == "multiquery":
        return cfg if cfg.multiquery else cfg.replace(n_kv_heads=1)
    if cfg.multiquery:
        return cfg.replace(n_kv_heads=cfg.H, d_head=cfg.D // 2)
    return cfg.replace(n_kv_heads=cfg.H)


def kv_bytes_per_chip(cfg: ModelConfig | str, variant: str, chips: int, batch: int,
                      context: int, kv: str | None = None) -> float:
    """A chip's KV cache under each variant: split by heads over all chips (⌈K/n⌉ heads each:
    a chip holds at least one), replicated (multiquery's one head cannot split by heads),
    grouped-query heads split over gcd(K, n) chips and replicated over the rest, or split by
    batch over all chips (B/n sequences each). `kv`: the cache's format (None: bf16)."""
    kv = check_kv(kv) or "bf16"
    v = variant_config(cfg, variant)
    layout = VARIANTS[variant][1]
    # the chips as one axis; a grouped model's K/V heads split over a first axis of
    # gcd(K, n) chips (all K allows), the rest of the chips a second
    split = math.gcd(v.K, chips) if v.attention_kind == "grouped" else chips
    mesh = (split, chips // split, 1)
    if ATTENTION[layout.attention].CACHE_OVER_ALL_CHIPS and batch % chips:
        raise LayoutError(f"{variant} shards the batch over all {chips} chips: batch "
                          f"{batch} must be a multiple of {chips}; use batch {chips}, "
                          f"{2 * chips}, ... or multiquery-heads")
    return float(cache_bytes_per_chip(v, layout, mesh, batch, context, kv))


def max_context(model: ModelConfig | str, chips: int, batch: int, attention_variant: str,
                kv_fraction: float = 0.3, hardware: HardwareProfile | str = "tpu-v4",
                kv: str | None = None) -> int:
    """The longest context whose KV cache, in the format `kv` (None: bf16), fits in
    `kv_fraction` of each chip's HBM (the paper reserves 30%)."""
    hw = get_hardware(hardware)
    if not 0 < kv_fraction <= 1:
        raise UsageError(f"kv_fraction must be in (0, 1], got {kv_fraction}")
    if chips < 1 or batch < 1:
        raise UsageError(f"chips and batch must be at least 1, got {chips} and {batch}")
    per_position = kv_bytes_per_chip(model, attention_variant, chips, batch, 1, kv)
    return int(kv_fraction * hw.hbm_bytes // per_position)
