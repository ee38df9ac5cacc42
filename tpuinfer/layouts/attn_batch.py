"""Attention partitioned by batch ("optimized multiquery"), over as many chips as the batch allows.

Q, K, V and the KV cache are split over the batch, so each chip loads only its share of the
KV cache. The feed-forward layout hands attention Q split over its heads axes h (and the
batch over its batch axes b). The batch takes g, the minor end of h: the longest suffix of h
(in h's order) whose chip count divides the B/|b| sequences; the heads stay split over the
rest, r = h less g. With B a multiple of every chip, g = h (the paper's layout at large
batch); below that, the paper's layouts at small batch (arXiv 2211.05102, Section 3.3 and
Figure 4): the batch over some axes, the heads over the others. Taking g from h's minor end
keeps each chip's heads one contiguous block (`B_bgLH_rD`), so the (multihead) cache is a
plain partition spec; of the suffixes that divide, the longest splits the cache most.

1. all-to-all(g): Q `B_bLH_hD` -> `B_bgLH_rD` (split the batch, gather the heads over g)
   K/V arrive split over p, the prefix of h as far as K allows (the feed-forward layout's
   `kv_axes`); g1, the part of p in g (none for multiquery, all of g for multihead), moves
   them as it moves Q: all-to-all(g1) `B_bLK_pD` -> `B_bg1LK_rD`; over the rest of g, g2,
   every chip already holds the same K/V heads, and keeps its own rows (no traffic).
2. attention on H/|r| heads for B/(|b||g|) sequences against the local cache `B_bgSK_kD`
   (k: p, or r where p reaches into g), each query head reading its own K/V head
3. all-to-all(g): `B_bgLH_rD` -> `B_bLH_hD`, back to heads before W_o

In decode Q is one token per sequence while the cache holds thousands, so the trade pays;
prefill amortises K/V loading over all its tokens, so there it buys less (the paper's
high-throughput prefill runs by batch in XYZ-weight-gathered, whose chips hold whole
sequences and need no all-to-all; its one-sequence prefill runs by heads).
KV-cache bytes per chip: 2·layers·(K/|k|)·D·b·S·B/(|b||g|) (b bytes per element, an int8
cache's scale included: 1 + 2/D; `tpuinfer.kv_formats`): multiquery K/|k| = 1, multihead
H/|r|. K and V move in step 1 in the activation dtype and are quantized where they are cached
(an int8 cache: per token and head, over D, which no chip splits).
Needs B/|b| to divide by at least the last axis of h that has more than one chip (else
attention by heads is this layout: nothing to split).
"""
from __future__ import annotations

from . import _common as c

NAME = "batch"
# The batch split over every chip the batch allows (all of them once B is a multiple of n):
# the planner prefers it to attention by heads between two of equal time.
CACHE_OVER_ALL_CHIPS = True


def split(ctx, batch: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(g, r): the heads axes the batch of `batch` sequences takes (the longest suffix of h
    whose chip count divides B/|b|), and those the heads stay split over."""
    h, per_b = ctx.axes.heads, batch // ctx.size(ctx.axes.batch)
    for i in range(len(h) + 1):  # suffix sizes grow along h: the first that divides is longest
        if per_b % ctx.size(h[i:]) == 0:
            return h[i:], h[:i]
    raise AssertionError("the empty suffix always divides")


def kv_moves(ctx, g, r) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """(k, g1, g2): the axes the cached K/V heads split over (p where it stays within r, else
    r), the part of g that splits K/V heads (their all-to-all), and the rest of g (over which
    every chip holds the same K/V heads and keeps its own rows)."""
    p = ctx.ffn.kv_axes(ctx)
    g1 = p[len(r):]
    return p[:len(r)], g1, g[len(g1):]


def cache_spec(step) -> c.Spec:
    """[B, S, K, D]: the batch over b then g; K over k (`kv_moves`). An int8 cache's scales,
    [B, S, K], split as its first three dimensions."""
    g, r = split(step.ctx, step.batch)
    cached, _, _ = kv_moves(step.ctx, g, r)
    return (c.entry(step.axes.batch + g), None, c.entry(cached), None)


def attend(ctx, q_BLHD, k_BLKD, v_BLKD, cache, pos):
    # JAX, imported when the engine traces a step: the planner reads this file's spec and
    # terms without it
    import jax

    from ..model import attend as attend_local  # JAX: as above
    from ..model import write_kv  # JAX: as above
    from ._spmd import all_to_all, own_kv_heads  # JAX: as above

    # q_BLHD here: [B/|b|, L, H/|h|, D] -> [B/(|b||g|), L, H/|r|, D]
    g, r = split(ctx, q_BLHD.shape[0] * ctx.size(ctx.axes.batch))
    cached, g1, g2 = kv_moves(ctx, g, r)
    # 1. all-to-all(g): Q from head-split to batch-split; K, V over g1 alike, and over g2
    #    each chip keeps its own rows of what it holds
    q_BLHD = all_to_all(ctx, q_BLHD, g, 0, 2)
    k_BLKD, v_BLKD = all_to_all(ctx, k_BLKD, g1, 0, 2), all_to_all(ctx, v_BLKD, g1, 0, 2)
    if ctx.size(g2) > 1:
        rows = q_BLHD.shape[0]
        start = jax.lax.axis_index(g2) * rows
        k_BLKD = jax.lax.dynamic_slice_in_dim(k_BLKD, start, rows, axis=0)
        v_BLKD = jax.lax.dynamic_slice_in_dim(v_BLKD, start, rows, axis=0)
    # 2. the chip's heads, own sequences, own cache rows; each query head its K/V head
    cache = write_kv(cache, k_BLKD, v_BLKD, pos)
    o_BLHD = attend_local(q_BLHD, own_kv_heads(ctx, r, cached, cache), pos)
    # 3. all-to-all(g): back to head-split for W_o
    return all_to_all(ctx, o_BLHD, g, 2, 0), cache


def collectives(step) -> list:
    """Steps 1 and 3: the all-to-alls of Q and O over g, and of K and V over g1."""
    cfg, a, ms = step.cfg, step.act_bytes, step.mesh_shape
    g, r = split(step.ctx, step.batch)
    _, g1, _ = kv_moves(step.ctx, g, r)
    rows = step.sequences * step.tokens
    q = rows * cfg.H * cfg.D / step.size(step.axes.heads) * a  # local Q, either side
    kv = rows * cfg.K * cfg.D / c.group_size(ms, step.ctx.ffn.kv_axes(step.ctx)) * a
    if g1 == g and kv == q:  # multihead: K and V move exactly as Q does
        return c.collective("all-to-all", g, ms, q, 4, "Q to batch-split, O back to heads, "
                            "and K, V", itemsize=a)
    return (c.collective("all-to-all", g, ms, q, 2, "Q to batch-split, O back to heads",
                         itemsize=a)
            + c.collective("all-to-all", g1, ms, kv, 2, "K, V heads to batch-split",
                           itemsize=a))


def per_chip(step) -> tuple[int, int]:
    """Step 2: H/|r| heads for B/(|b||g|) sequences."""
    g, r = split(step.ctx, step.batch)
    return step.sequences // step.size(g), step.cfg.H // step.size(r)


def check(step):
    """B/|b| must divide by the last axis of h with more than one chip: otherwise nothing of
    the batch splits over the heads axes, and attention by heads is the same program."""
    h, b = step.axes.heads, step.axes.batch
    first = next((h[i:] for i in range(len(h) - 1, -1, -1) if step.size(h[i:]) > 1), ())
    c.require_batch(step.batch, b + first, step.mesh_shape, f"{step.ctx.ffn.NAME}/batch",
                    f"attention by batch splits B/|b| over at least {'·'.join(first)}, the "
                    f"minor end of the heads axes {'·'.join(h)}")
    c.require_groups(step.cfg, split(step.ctx, step.batch)[1], step.mesh_shape,
                     f"{step.ctx.ffn.NAME}/batch")
