"""What every layout's specs, terms and checks share: partition specs and the bytes they leave on
each chip, the storage 2D weight-stationary and the weight-gathered layouts share, the
collectives as terms, and the divisibility checks. Imports no JAX (the bodies' collectives are
`_spmd`'s).

A partition spec here is the project's own: a tuple with one entry per dimension, each None
(not split), an axis name ('x') or a tuple of them (('z', 'y'), major first), as JAX's
`PartitionSpec` takes them; the engine turns specs into `PartitionSpec`s where it builds a step
(`placement.partition_specs`). Collectives over a group of one chip are left out of the terms
here, as `_spmd` skips them in the code, so a mesh axis of size 1 costs nothing and emits
nothing.
"""
from __future__ import annotations

from ..axes import AXES, format_shape, group_size
from ..errors import LayoutError, UsageError
from ..terms import Collective

Spec = tuple  # one entry per dimension: None, an axis name, or a tuple of axis names


def spec_axes(entry) -> tuple[str, ...]:
    """The axes one spec entry splits over: None, 'x' or ('z', 'y')."""
    if entry is None:
        return ()
    return (entry,) if isinstance(entry, str) else tuple(entry)


def entry(axes: tuple[str, ...]):
    """The spec entry for splitting over `axes` (None when over none)."""
    return tuple(axes) if axes else None


def local_shape(shape, spec: Spec, mesh_shape) -> tuple[int, ...]:
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


# ---- storage shared by 2D weight-stationary and the weight-gathered layouts -----------------
# The residual's E splits over x, F and the heads over (z, y), z major, so that a
# weight-gathered layout gathering over y alone still receives one contiguous block.
ZY = ("z", "y")


def stored_kv_axes(cfg, mesh_shape) -> tuple[str, ...]:
    """p: the axes of zy the stored W_k, W_v split their K heads over."""
    return kv_split(cfg, ZY, mesh_shape)


def stored_specs(cfg, mesh_shape=None) -> dict:
    """Partition specs of one layer's weights, `E_xF_yz`: 2D weight-stationary's, and the
    weight-gathered layouts' as stored (one stored layout serves weight-gathered prefill and
    2D weight-stationary decode)."""
    kv = ("x", entry(stored_kv_axes(cfg, mesh_shape)), None)
    specs = {"w_q": ("x", ZY, None), "w_k": kv, "w_v": kv, "w_o": (ZY, None, "x"),
             "w_up": ("x", ZY), "w_down": (ZY, "x")}
    if cfg.gated_ffn:
        specs["w_gate"] = ("x", ZY)
    return specs


# ---- gathering stored weights -------------------------------------------------------------
def gathered_axes(spec: Spec, gather_axes, mesh_shape) -> tuple[str, ...]:
    """The axes of `gather_axes` that actually split an array stored with `spec`."""
    return tuple(a for a in AXES if a in gather_axes and group_size(mesh_shape, (a,)) > 1
                 and any(a in spec_axes(e) for e in spec))


def drop_axes(spec: Spec, axes) -> Spec:
    """`spec` once the array has been gathered over `axes`."""
    return tuple(entry(tuple(a for a in spec_axes(e) if a not in axes)) for e in spec)


def _gather_order(spec: Spec, axes, ndim: int) -> list[int]:
    """`_spmd.gather_weight`'s transpose of [*axes, *local dims]: each gathered axis moves in front
    of the dimension it splits (then the two merge)."""
    order = []
    for d, e in enumerate(tuple(spec) + (None,) * (ndim - len(spec))):
        order += [axes.index(a) for a in spec_axes(e) if a in axes] + [len(axes) + d]
    return order


def gather_copies(spec: Spec, axes: tuple[str, ...], ndim: int) -> bool:
    """Whether `_spmd.gather_weight` copies an array stored with `spec`, gathered over `axes` (its
    `gathered_axes`), to put it in place: its transpose moves data unless every gathered axis
    splits the first dimension, in order (then the collective's output is already the array,
    and the transpose is free)."""
    order = _gather_order(spec, axes, ndim)
    return bool(axes) and order != sorted(order)


# ---- the block's structure -------------------------------------------------------------------
def passes(cfg) -> list[tuple[bool, bool]]:
    """(attention, FFN) of each pass through a norm and the matmuls in one layer: both in one
    pass in the parallel block (PaLM), one after the other in the serial block."""
    return [(True, True)] if cfg.parallel_block else [(True, False), (False, True)]


def norm_names(cfg) -> list[str]:
    """The parallel block shares one norm between its branches; the serial block has two."""
    return ["norm"] if cfg.parallel_block else ["norm_attn", "norm_ffn"]


def through_passes(one_pass, ctx, x_BLE, w, cache, pos):
    """One layer of a body: `one_pass(ctx, x_BLE, w, cache, pos, norm, attn=, ffn=)` for each
    of its passes (`passes`), each after its own norm; the attention pass writes the cache."""
    for (attn, ffn), norm in zip(passes(ctx.cfg), norm_names(ctx.cfg)):
        x_BLE, written = one_pass(ctx, x_BLE, w, cache, pos, norm, attn=attn, ffn=ffn)
        cache = written if attn else cache
    return x_BLE, cache


# ---- collectives (terms) --------------------------------------------------------------------
DTYPE = {4: "f32", 2: "bf16", 1: "s8"}  # bytes per element -> the element type moved (fp8
#                                          weights name theirs: `weight_formats.HLO_TYPE`)


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


def gather_or_ring(kind: str, axes, mesh_shape, nbytes: float, what: tuple[str, str], *,
                   itemsize: float, looped: tuple[bool, bool] = (False, False),
                   matmul=(0.0, 0.0), dtype: str = ""):
    """What a schedule runs for one all-gather or reduce-scatter over `axes`: plain, the
    collective itself, of `nbytes` per chip (the whole gathered output, or the whole input
    to scatter); looped (`looped`: (looped, bidirectional)), the ring of permutes in its
    place, each carrying one chip's chunk of those bytes beside a partial matmul of `matmul`.
    `what`: the tensor it moves, (plain, looped)."""
    if looped[0]:
        return ring(axes, mesh_shape, nbytes / group_size(mesh_shape, axes), looped[1], what[1],
                    itemsize=itemsize, matmul=matmul, dtype=dtype)
    return collective(kind, axes, mesh_shape, nbytes, 1, what[0], itemsize=itemsize,
                      dtype=dtype)


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


def require_heads(cfg, axes, mesh_shape, layout: str):
    """H must divide by the chips the heads split over; the paper pads heads that do not."""
    require_divides("H", cfg.H, axes, mesh_shape, layout,
                    "or pad the heads as the paper pads PaLM 540B's 48 to 64 (the planner does "
                    "unless told --no-pad; or the model palm-540b-64heads)")


def require_batch(batch: int, axes, mesh_shape, layout: str, why: str = "its batch sharding"):
    k = group_size(mesh_shape, axes)
    if batch < k or batch % k:
        raise LayoutError(
            f"batch B={batch} cannot be split over {'·'.join(axes)}={k} chips on mesh "
            f"{format_shape(mesh_shape)} ({layout} needs B to be a multiple of {k}, "
            f"{why}); use a batch of {k}, {2 * k}, ... or a layout that shards the batch less")
