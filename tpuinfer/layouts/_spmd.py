"""What the layouts' `shard_map` bodies are written with (JAX): the collectives as the paper names
them, a stored weight gathered, a matmul by some rows or columns of a weight (or by a weight
travelling a ring), a chip's own K/V heads.

A collective over a group of one chip is skipped here, as `_common.collective` leaves it out of
the terms. The layout files import this module inside their bodies, when the engine traces a
step: their specs, terms and checks (`_common`) import no JAX, so the planner reads them
without it.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from ..model import mm
from ..weight_formats import QWeight, scale_spec
from . import looped
from ._common import _gather_order, gathered_axes, spec_axes


# ---- collectives ----------------------------------------------------------------------------
def all_gather(ctx, x, axes, axis: int):
    return jax.lax.all_gather(x, axes, axis=axis, tiled=True) if ctx.size(axes) > 1 else x


def all_reduce(ctx, x, axes):
    return jax.lax.psum(x, axes) if ctx.size(axes) > 1 else x


def reduce_scatter(ctx, x, axes, axis: int):
    return (jax.lax.psum_scatter(x, axes, scatter_dimension=axis, tiled=True)
            if ctx.size(axes) > 1 else x)


def all_to_all(ctx, x, axes, split: int, concat: int):
    """Split dimension `split` over the group and gather `concat` from it."""
    return jax.lax.all_to_all(x, axes, split, concat, tiled=True) if ctx.size(axes) > 1 else x


def fused_reduce_scatter(ctx, xs_BLN: list, axes):
    """One reduce-scatter for several [B, L, N_i] partial sums: chip k of the group receives
    chunk k of every tensor (so each tensor ends split over `axes`, minor to what it was)."""
    k = ctx.size(axes)
    if k == 1:
        return xs_BLN
    B, L = xs_BLN[0].shape[:2]
    widths = [x.shape[-1] // k for x in xs_BLN]
    stacked_BLKN = jnp.concatenate([x.reshape(B, L, k, w) for x, w in zip(xs_BLN, widths)], -1)
    out_BLN = jax.lax.psum_scatter(stacked_BLKN, axes, scatter_dimension=2, tiled=False)
    return jnp.split(out_BLN, list(_offsets(widths)), axis=-1)


def fused_all_gather(ctx, xs_BLN: list, axes):
    """One all-gather for several [B, L, N_i] tensors: the inverse of `fused_reduce_scatter`'s
    placement (chunk k comes from chip k of the group)."""
    k = ctx.size(axes)
    if k == 1:
        return xs_BLN
    B, L = xs_BLN[0].shape[:2]
    widths = [x.shape[-1] for x in xs_BLN]
    gathered_BLKN = jax.lax.all_gather(jnp.concatenate(xs_BLN, -1), axes, axis=2, tiled=False)
    parts = jnp.split(gathered_BLKN, list(_offsets(widths)), axis=-1)
    return [p.reshape(B, L, k * w) for p, w in zip(parts, widths)]


def _offsets(widths):
    total = 0
    for w in widths[:-1]:
        total += w
        yield total


# ---- weights ----------------------------------------------------------------------------------
def gather_weight(ctx, w, spec, gather_axes: tuple[str, ...]):
    """All-gather a stored weight shard over `gather_axes` (the weight-gathered layouts), in one
    collective however many of its dimensions those axes split. Each dimension's gathered
    axes are the minor end of its split, so the result is again a contiguous block."""
    axes = gathered_axes(spec, gather_axes, ctx.mesh_shape)
    if not axes:
        return w
    g = jax.lax.all_gather(w, axes, axis=0, tiled=False)  # [prod(sizes of axes), *local]
    g = g.reshape(tuple(ctx.size((a,)) for a in axes) + w.shape)
    order = _gather_order(spec, axes, w.ndim)
    merged = [w.shape[d] * math.prod(ctx.size((a,)) for a in spec_axes(e) if a in axes)
              for d, e in enumerate(tuple(spec) + (None,) * (w.ndim - len(spec)))]
    return jnp.transpose(g, order).reshape(merged)


def gather_param(ctx, name: str, w, spec):
    """A stored parameter gathered over the feed-forward layout's GATHER axes (int8: the
    scales travel with their matrix)."""
    if isinstance(w, QWeight):
        return QWeight(gather_weight(ctx, w.q, spec, ctx.ffn.GATHER),
                       gather_weight(ctx, w.scale, scale_spec(name, spec), ctx.ffn.GATHER))
    return gather_weight(ctx, w, spec, ctx.ffn.GATHER)


def mm_rows(eq, x, w, row_start, n):
    """x times rows [row_start, row_start + n) of w's input dim (all of them, for a weight
    travelling a ring: weight-gathered layouts loop their weights, not their activations)."""
    if isinstance(w, looped.Ring):
        return looped.ring_matmul(eq, x, w)
    return mm(eq, x, looped.rows(w, row_start, n))


def mm_cols(eq, x, w, col_start, n):
    """x times output columns [col_start, col_start + n) of w (or a weight on a ring)."""
    if isinstance(w, looped.Ring):
        return looped.ring_matmul(eq, x, w)
    return mm(eq, x, looped.cols(w, col_start, n))


# ---- grouped-query attention: the K/V heads a chip's query heads read ------------------------
def own_kv_heads(ctx, heads_axes, kv_axes, cache: dict) -> dict:
    """The cache of the K/V heads this chip's query heads read, of the K/|p| it holds (p =
    `kv_axes`, a prefix of `heads_axes`, the axes this chip's H/|h| query heads split over):
    K, V and an int8 cache's scales, each cut along its K dimension. Where p is all of h
    (multihead, or K a multiple of |h|) they are all of them. Otherwise (|h| a multiple of
    K, checked by `require_groups`) the chip's query heads share one K/V head: query head j
    reads K/V head j·K/H, so the chip at index i_s over s = h less p reads its local head
    i_s·(K/|p|)/|s|."""
    s = tuple(heads_axes[len(kv_axes):])
    held = cache["k"].shape[2]
    if ctx.size(s) == 1 or held == 1:  # every head held is read (one: multiquery's)
        return cache
    i = jax.lax.axis_index(s) // (ctx.size(s) // held)
    return {name: jax.lax.dynamic_slice_in_dim(a, i, 1, axis=2) for name, a in cache.items()}
