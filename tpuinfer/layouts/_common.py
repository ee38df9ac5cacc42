"""What every layout shares: where the axes are, the collectives as the paper names them, the
bytes a partition spec leaves on each chip, and the divisibility checks.

Collectives over a group of one chip are skipped here, in one place, both in the code and in
the terms, so a mesh axis of size 1 costs nothing and emits nothing.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from ..errors import LayoutError, UsageError
from ..mesh import AXES, format_shape, group_size
from ..quant import QWeight, scale_spec
from ..terms import Collective
from .interface import Axes, Ctx  # noqa: F401  (the layout files take them from here)


def spec_axes(entry) -> tuple[str, ...]:
    """The axes one PartitionSpec entry splits over: None, 'x' or ('z', 'y')."""
    if entry is None:
        return ()
    return (entry,) if isinstance(entry, str) else tuple(entry)


def entry(axes: tuple[str, ...]):
    """The PartitionSpec entry for splitting over `axes` (None when over none)."""
    return tuple(axes) if axes else None


def local_shape(shape, spec: P, mesh_shape) -> tuple[int, ...]:
    entries = tuple(spec) + (None,) * (len(shape) - len(spec))
    return tuple(d // group_size(mesh_shape, spec_axes(e)) for d, e in zip(shape, entries))


# ---- grouped-query attention: which K/V heads a chip holds -----------------------------------
def kv_split(cfg, heads_axes: tuple[str, ...], mesh_shape) -> tuple[str, ...]:
    """The axes the K/V heads split over, where the query heads split over `heads_axes` (in
    that order, major first): the longest prefix of them whose chip count divides K. Each
    chip then holds K/|p| whole K/V heads, and the chips of the rest of `heads_axes` hold the
    same ones (replicated). Multiquery (K = 1): none; multihead (K = H, which `heads_axes`
    divides): all of them; grouped-query: as far as K allows. Without a mesh shape only
    multiquery and multihead have an answer (their split does not depend on the sizes)."""
    if cfg.K == 1:
        return ()
    if cfg.K == cfg.H:  # the layouts' checks ask H to divide by the heads axes
        return tuple(heads_axes)
    if mesh_shape is None:
        raise UsageError(f"{cfg.name}: grouped-query attention (K={cfg.K}) splits its K/V heads "
                         f"over as many chips as K allows, which depends on the mesh: pass "
                         f"mesh_shape")
    for i in range(len(heads_axes), -1, -1):
        if cfg.K % group_size(mesh_shape, heads_axes[:i]) == 0:
            return tuple(heads_axes[:i])
    raise AssertionError("the empty prefix always divides")


def own_kv_heads(ctx: Ctx, heads_axes, kv_axes, cache: dict) -> dict:
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


def require_groups(cfg, heads_axes, mesh_shape, layout: str):
    """Grouped-query attention: the query heads a chip holds must read whole K/V heads, so
    K must divide by the chips the heads split over, or they by K."""
    n = group_size(mesh_shape, heads_axes)
    if cfg.K % n and n % cfg.K:
        raise LayoutError(
            f"K={cfg.K} key/value heads and {'·'.join(heads_axes)}={n} chips on mesh "
            f"{format_shape(mesh_shape)}: {layout} splits the query heads over {n} chips, and "
            f"each chip's heads must read whole K/V heads (K a multiple of {n}, or {n} of K); "
            f"choose a mesh whose {'·'.join(heads_axes)} divides or is divided by {cfg.K}")


# ---- collectives (code) ---------------------------------------------------------------------
def all_gather(ctx: Ctx, x, axes, axis: int):
    return jax.lax.all_gather(x, axes, axis=axis, tiled=True) if ctx.size(axes) > 1 else x


def all_reduce(ctx: Ctx, x, axes):
    return jax.lax.psum(x, axes) if ctx.size(axes) > 1 else x


def reduce_scatter(ctx: Ctx, x, axes, axis: int):
    return (jax.lax.psum_scatter(x, axes, scatter_dimension=axis, tiled=True)
            if ctx.size(axes) > 1 else x)


def fused_reduce_scatter(ctx: Ctx, xs_BLN: list, axes):
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


def fused_all_gather(ctx: Ctx, xs_BLN: list, axes):
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


def gathered_axes(spec: P, gather_axes, mesh_shape) -> tuple[str, ...]:
    """The axes of `gather_axes` that actually split an array stored with `spec`."""
    return tuple(a for a in AXES if a in gather_axes and group_size(mesh_shape, (a,)) > 1
                 and any(a in spec_axes(e) for e in spec))


def drop_axes(spec: P, axes) -> P:
    """`spec` once the array has been gathered over `axes`."""
    return P(*[entry(tuple(a for a in spec_axes(e) if a not in axes)) for e in spec])


def gather_weight(ctx: Ctx, w, spec: P, gather_axes: tuple[str, ...]):
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


def _gather_order(spec: P, axes, ndim: int) -> list[int]:
    """`gather_weight`'s transpose of [*axes, *local dims]: each gathered axis moves in front
    of the dimension it splits (then the two merge)."""
    order = []
    for d, e in enumerate(tuple(spec) + (None,) * (ndim - len(spec))):
        order += [axes.index(a) for a in spec_axes(e) if a in axes] + [len(axes) + d]
    return order


def gather_copies(spec: P, axes: tuple[str, ...], ndim: int) -> bool:
    """Whether `gather_weight` copies an array stored with `spec`, gathered over `axes` (its
    `gathered_axes`), to put it in place: its transpose moves data unless every gathered axis
    splits the first dimension, in order (then the collective's output is already the array,
    and the transpose is free)."""
    order = _gather_order(spec, axes, ndim)
    return bool(axes) and order != sorted(order)


def gather_param(ctx: Ctx, name: str, w, spec: P):
    """A stored parameter gathered over the feed-forward layout's GATHER axes (int8: the
    scales travel with their matrix)."""
    if isinstance(w, QWeight):
        return QWeight(gather_weight(ctx, w.q, spec, ctx.ffn.GATHER),
                       gather_weight(ctx, w.scale, scale_spec(name, spec), ctx.ffn.GATHER))
    return gather_weight(ctx, w, spec, ctx.ffn.GATHER)


# ---- the block's structure -------------------------------------------------------------------
def passes(cfg) -> list[tuple[bool, bool]]:
    """(attention, FFN) of each pass through a norm and the matmuls in one layer: both in one
    pass in the parallel block (PaLM), one after the other in the serial block."""
    return [(True, True)] if cfg.parallel_block else [(True, False), (False, True)]


def norm_names(cfg) -> list[str]:
    """The parallel block shares one norm between its branches; the serial block has two."""
    return ["norm"] if cfg.parallel_block else ["norm_attn", "norm_ffn"]


# ---- collectives (terms) --------------------------------------------------------------------
DTYPE = {4: "f32", 2: "bf16", 1: "s8"}  # bytes per element -> the element type moved (fp8
#                                          weights name theirs: `quant.HLO_TYPE`)


def collective(kind: str, axes, mesh_shape, nbytes: float, count: int, what: str, *,
               itemsize: float, concurrent: int = 1, beside=(0.0, 0.0), dtype: str = ""):
    """A term for one collective, or none when its group is a single chip. `itemsize`: bytes
    per element of the tensor it moves (`dtype` names its type where `DTYPE` does not: "s32"
    for token ids, "f8e4m3fn" for fp8 weights); `beside`: (FLOPs, weight bytes) of the
    partial matmul each round runs beside (looped rings only)."""
    k = group_size(mesh_shape, axes)
    return [Collective(kind, tuple(axes), k, float(nbytes), count, what,
                       dtype or DTYPE[itemsize],
                       concurrent, float(beside[0]), float(beside[1]))] if k > 1 else []


def ring(axes, mesh_shape, chunk_bytes: float, bidirectional: bool, what: str, *,
         itemsize: float, matmul=(0.0, 0.0), dtype: str = ""):
    """The collective permutes that replace a looped all-gather or reduce-scatter over a group
    of K chips: K−1 steps of one chunk one way round the ring, or, both ways, 2(K−1) permutes
    of half a chunk, two at a time (each direction's half takes the same K−1 steps at once,
    on the other direction of the links).

    `matmul`: (FLOPs, weight bytes) per chip of the whole matmul the ring feeds or drains. It
    runs as K partial matmuls, one per chunk; each of the K−1 rounds of permutes travels
    beside one of them (one way: a whole chunk's; both ways: two half chunks', the same
    work), and the remaining one has nothing beside it: an all-gather's last chunk to arrive
    (its own chunk goes first, beside the first permute), a reduce-scatter's first partial
    product (its own chunk goes last, beside the last permute)."""
    k = group_size(mesh_shape, axes)
    if k == 1:
        return []
    beside = (matmul[0] / k, matmul[1] / k)
    if bidirectional:
        return collective("collective-permute", axes, mesh_shape, chunk_bytes / 2, 2 * (k - 1),
                          what + ", halves both ways round the ring", itemsize=itemsize,
                          concurrent=2, beside=beside, dtype=dtype)
    return collective("collective-permute", axes, mesh_shape, chunk_bytes, k - 1,
                      what + ", round the ring", itemsize=itemsize, beside=beside, dtype=dtype)


# ---- checks ---------------------------------------------------------------------------------
def require_divides(what: str, size: int, axes, mesh_shape, layout: str, hint: str = ""):
    """Raise a LayoutError naming the dimension, the axes and what would work."""
    k = group_size(mesh_shape, axes)
    if size % k:
        names = "·".join(a.upper() for a in axes)
        raise LayoutError(
            f"{what}={size} does not divide by {names}={k} on mesh {format_shape(mesh_shape)} "
            f"(layout {layout} splits it over {', '.join(axes)}); choose a mesh whose "
            f"{'·'.join(axes)} divides {size}" + (f", {hint}" if hint else ""))


def require_batch(batch: int, axes, mesh_shape, layout: str, why: str = "its batch sharding"):
    k = group_size(mesh_shape, axes)
    if batch < k or batch % k:
        raise LayoutError(
            f"batch B={batch} cannot be split over {'·'.join(axes)}={k} chips on mesh "
            f"{format_shape(mesh_shape)} ({layout} needs B to be a multiple of {k}, "
            f"{why}); use a batch of {k}, {2 * k}, ... or a layout that shards the batch less")
