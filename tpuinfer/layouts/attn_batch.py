"""Attention partitioned by batch ("optimized multiquery").

Q, K, V and the KV cache are split over the batch on every chip, so each chip loads only its
1/n of the KV cache. The price is two all-to-alls over the heads axes h:

1. all-to-all(h): Q `B_bLH_hD` -> `B_bhLHD` (split the batch, gather the heads)
   multiquery K/V: every chip of h already holds `B_bLD`; it keeps its own rows (no traffic).
   multihead K/V: the same all-to-all as Q.
2. attention on whole heads for B/n sequences against the local cache `B_bhSD`
3. all-to-all(h): `B_bhLHD` -> `B_bLH_hD`, back to heads before W_o

In decode Q is one token per sequence while the cache holds thousands, so the trade pays;
prefill amortises K/V loading over all its tokens and usually stays by heads.
KV-cache bytes per chip: 2·layers·K·D·b·(B/n)·S. Needs B to be a multiple of n.
"""
from __future__ import annotations

import jax
from jax.sharding import PartitionSpec as P

from ..model import attend as attend_local
from ..model import write_cache
from . import _common as c

NAME = "batch"
CACHE_OVER_ALL_CHIPS = True  # B split over every chip: each holds 1/n of the cache


def cache_spec(cfg, axes) -> P:
    return P(c.entry(axes.batch + axes.heads), None, None, None)


def _to_batch(ctx, t_BLHD):
    return (jax.lax.all_to_all(t_BLHD, ctx.axes.heads, 0, 2, tiled=True)
            if ctx.size(ctx.axes.heads) > 1 else t_BLHD)


def _to_heads(ctx, t_BLHD):
    return (jax.lax.all_to_all(t_BLHD, ctx.axes.heads, 2, 0, tiled=True)
            if ctx.size(ctx.axes.heads) > 1 else t_BLHD)


def attend(ctx, q_BLHD, k_BLKD, v_BLKD, cache, pos):
    # q_BLHD here: [B/|b|, L, H/|h|, D] -> [B/(|b||h|), L, H, D]
    h = ctx.axes.heads
    # 1. all-to-all(h): Q (and multihead K, V) from head-split to batch-split
    q_BLHD = _to_batch(ctx, q_BLHD)
    if ctx.cfg.multiquery:
        rows = q_BLHD.shape[0]
        start = jax.lax.axis_index(h) * rows if ctx.size(h) > 1 else 0
        k_BLKD = jax.lax.dynamic_slice_in_dim(k_BLKD, start, rows, axis=0)
        v_BLKD = jax.lax.dynamic_slice_in_dim(v_BLKD, start, rows, axis=0)
    else:
        k_BLKD, v_BLKD = _to_batch(ctx, k_BLKD), _to_batch(ctx, v_BLKD)
    # 2. whole heads, own sequences, own cache rows
    cache = {"k": write_cache(cache["k"], k_BLKD, pos), "v": write_cache(cache["v"], v_BLKD, pos)}
    o_BLHD = attend_local(q_BLHD, cache["k"], cache["v"], pos)
    # 3. all-to-all(h): back to head-split for W_o
    return _to_heads(ctx, o_BLHD), cache


def collectives(step) -> list:
    """Steps 1 and 3: the all-to-alls over h."""
    cfg, h, a = step.cfg, step.axes.heads, step.act_bytes
    rows = step.sequences * step.tokens
    q = rows * cfg.H * cfg.D / step.size(h) * a  # local Q, either side
    n_moved = 2 if cfg.multiquery else 4  # Q and O; multihead also K and V
    return c.collective("all-to-all", h, step.mesh_shape, q, n_moved,
                        "Q to batch-split, O back to heads" + ("" if cfg.multiquery else
                                                                ", and K, V"), itemsize=a)


def per_chip(step) -> tuple[int, int]:
    """Step 2: whole heads for B/(|b||h|) sequences."""
    return step.sequences // step.size(step.axes.heads), step.cfg.H


def check(step):
    c.require_batch(step.batch, step.axes.batch + step.axes.heads, step.mesh_shape,
                    f"{step.ctx.ffn.NAME}/batch",
                    "attention by batch splits the batch over every chip")
