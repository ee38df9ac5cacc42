"""Attention partitioned by heads ("baseline multiquery").

Q arrives split over heads (`B_bLH_hD`, h the axes the feed-forward layout splits F over).
Multiquery K/V (K = 1) have no heads axis to split: every chip of h computes and caches the
whole `B_bSD`, so the KV cache is replicated over h and multiquery's memory saving is lost.
Multihead K/V split over heads like Q. No communication of its own: attention runs on the
chip's heads.

KV-cache bytes per chip: multiquery 2·layers·D·b·(B/|b|)·S; multihead 2·layers·(H/|h|)·D·b·B·S.
"""
from __future__ import annotations

from jax.sharding import PartitionSpec as P

from ..model import attend as attend_local
from ..model import write_cache
from . import _common as c

NAME = "heads"
CACHE_OVER_ALL_CHIPS = False  # split over h only, and multiquery's one head not at all


def cache_spec(step) -> P:
    """[B, S, K, D]: batch split as the residual's; K split with the heads if multihead."""
    axes = step.axes
    return P(c.entry(axes.batch), None, None if step.cfg.multiquery else c.entry(axes.heads),
             None)


def attend(ctx, q_BLHD, k_BLKD, v_BLKD, cache, pos):
    # q_BLHD here: [B/|b|, L, H/|h|, D]; the cache: [B/|b|, S, K or K/|h|, D]
    cache = {"k": write_cache(cache["k"], k_BLKD, pos), "v": write_cache(cache["v"], v_BLKD, pos)}
    return attend_local(q_BLHD, cache["k"], cache["v"], pos), cache


def collectives(step) -> list:
    return []  # attention runs on the chip's own heads


def per_chip(step) -> tuple[int, int]:
    """The chip's B/|b| sequences, on its H/|h| heads."""
    return step.sequences, step.cfg.H // step.size(step.axes.heads)


def check(step):
    """Nothing beyond the feed-forward layout's checks: heads split exactly as F does, and
    those checks already ask H to divide by the heads axes."""
