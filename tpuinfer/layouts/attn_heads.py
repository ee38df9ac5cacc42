"""Attention partitioned by heads ("baseline multiquery").

Q arrives split over heads (`B_bLH_hD`, h the axes the feed-forward layout splits F over).
K/V arrive split over p, the prefix of h as far as K allows (the feed-forward layout's
`kv_axes`): multiquery K/V (K = 1) have no heads axis to split, so every chip of h computes
and caches the whole `B_bSD`: the KV cache is replicated over h and multiquery's memory
saving is lost. Multihead K/V split over h like Q. Grouped-query K/V (1 < K < H) split over
p and are replicated over the rest of h: each chip caches K/|p| heads and its query heads
read the one they share (`own_kv_heads`) once |h| > K. No communication of its own:
attention runs on the chip's heads.

KV-cache bytes per chip: 2·layers·(K/|p|)·D·b·(B/|b|)·S (b bytes per element, an int8
cache's scale included: 1 + 2/D; `tpuinfer.kv_formats`): multiquery K/|p| = 1, multihead H/|h|.
The cache is written in its format (int8: quantized per token and head) and read by the
chip's own attention, which applies an int8 cache's scales (`model.attend`).
"""
from __future__ import annotations

from . import _common as c

NAME = "heads"
CACHE_OVER_ALL_CHIPS = False  # split over p only, and multiquery's one head not at all


def cache_spec(step) -> c.Spec:
    """[B, S, K, D]: batch split as the residual's; K over p (none for multiquery). An int8
    cache's scales, [B, S, K], split as its first three dimensions."""
    return (c.entry(step.axes.batch), None, c.entry(step.ctx.ffn.kv_axes(step.ctx)), None)


def attend(ctx, q_BLHD, k_BLKD, v_BLKD, cache, pos):
    # JAX, imported when the engine traces a step: the planner reads this file's spec and
    # terms without it
    from ..model import attend as attend_local
    from ..model import write_kv  # JAX: as above
    from ._spmd import own_kv_heads  # JAX: as above

    # q_BLHD here: [B/|b|, L, H/|h|, D]; K/V and the cache: [B/|b|, ·, K/|p|, D]
    cache = write_kv(cache, k_BLKD, v_BLKD, pos)
    own = own_kv_heads(ctx, ctx.axes.heads, ctx.ffn.kv_axes(ctx), cache)
    return attend_local(q_BLHD, own, pos), cache


def collectives(step) -> list:
    return []  # attention runs on the chip's own heads


def per_chip(step) -> tuple[int, int]:
    """The chip's B/|b| sequences, on its H/|h| heads."""
    return step.sequences, step.cfg.H // step.size(step.axes.heads)


def check(step):
    """Nothing beyond the feed-forward layout's checks: heads split exactly as F does, and
    those checks already ask H to divide by the heads axes."""
