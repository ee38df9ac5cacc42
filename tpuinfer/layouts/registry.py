"""Which module implements each layout name, and the partition specs of everything a step
touches (parameters, KV cache, tokens, logits), derived from the layout files: the project's
own specs (`_common.Spec`, tuples of axis names), which the engine turns into JAX's
`PartitionSpec`s where it builds a step.

Data-parallel replicas (`mesh.make_mesh(shape, replicas=R)`) add a mesh axis 'r' in front of
x, y, z: every array with a batch dimension splits it over 'r' first, then as the layout
splits a replica's B/R sequences (`over_replicas`); the parameters, whose specs never name
'r', are held whole by every replica."""
from __future__ import annotations

import functools
import math

from ..axes import REPLICA
from ..config import ModelConfig
from ..errors import LayoutError
from ..kv_formats import FORMATS as KV_FORMATS
from ..kv_formats import array_bytes
from ..shapes import tables
from ..weight_formats import QUANTIZED, QWeight, scale_spec
from . import _common as c
from . import attn_batch, attn_heads, head, wg_x, wg_xy, wg_xyz, ws1d, ws2d
from . import ep_x, ep_xy, ep_xyz
from .interface import AttentionLayout, Ctx, FfnLayout, Step
from .layout import EXPERT_LAYOUTS, Layout

FFN: dict[str, FfnLayout] = {"ws1d": ws1d, "ws2d": ws2d, "wg-x": wg_x, "wg-xy": wg_xy,
                             "wg-xyz": wg_xyz,
                             # a mixture of experts' (the expert-parallel layouts)
                             "ep-x": ep_x, "ep-xy": ep_xy, "ep-xyz": ep_xyz}
ATTENTION: dict[str, AttentionLayout] = {"heads": attn_heads, "batch": attn_batch}


def context(cfg: ModelConfig, layout: Layout, mesh_shape) -> Ctx:
    ffn = FFN[layout.ffn]
    return Ctx(cfg, tuple(mesh_shape), ffn.AXES, ATTENTION[layout.attention], ffn,
               layout.looped, layout.bidirectional)


def step(cfg: ModelConfig, layout: Layout, mesh_shape, batch: int, tokens: int = 1,
         act_bytes: float = 2, weights: str = "bf16") -> Step:
    return Step(context(cfg, layout, mesh_shape), batch, tokens, act_bytes, weights)


def check(cfg: ModelConfig, layout: Layout, mesh_shape, batch: int) -> None:
    """Raise a LayoutError naming the first dimension the mesh does not divide, or a batch
    smaller than its sharding, with what would work instead."""
    _check(cfg, layout, tuple(mesh_shape), batch)


@functools.lru_cache(maxsize=8192)  # a configuration that passes is asked again at every step
def _check(cfg: ModelConfig, layout: Layout, mesh_shape, batch: int) -> None:
    if cfg.n_experts and layout.ffn not in EXPERT_LAYOUTS:
        raise LayoutError(f"{cfg.name} is a mixture of experts, and {layout.ffn} partitions a "
                          f"dense feed-forward block; choose an expert-parallel layout: "
                          f"{', '.join(EXPERT_LAYOUTS)}")
    s = step(cfg, layout, mesh_shape, batch)
    ctx = s.ctx
    ctx.ffn.check(s)
    c.require_batch(batch, ctx.axes.batch, ctx.mesh_shape, layout.ffn)
    ctx.attention.check(s)
    c.require_divides("V", cfg.V, ctx.axes.embed, ctx.mesh_shape, layout.ffn,
                      "or pad the vocabulary")
    if layout.bidirectional and ctx.ffn.GATHER:
        raise LayoutError(f"{layout.ffn} loops its weights round the ring one way only; use "
                         f"looped=True without bidirectional, or ws1d/ws2d")
    if layout.bidirectional:
        # both halves of every moving chunk of E must be whole
        n_e = c.group_size(ctx.mesh_shape, ctx.axes.embed)
        if (cfg.E // n_e) % 2:
            raise LayoutError(
                f"bidirectional looping splits each chip's E/{n_e}={cfg.E // n_e} columns in "
                f"halves; choose a mesh of fewer chips (E/n even) or the one-way loop")


def heads_multiple(cfg: ModelConfig, layout: Layout, mesh_shape) -> int:
    """What H must be a multiple of for this layout on this mesh: the chips its heads split
    over, in the stored weights and in the matmuls (attention by batch first computes Q split
    as the feed-forward splits F)."""
    ffn = FFN[layout.ffn]
    stored = c.spec_axes(tuple(ffn.layer_specs(cfg, mesh_shape)["w_q"])[1])
    return math.lcm(c.group_size(mesh_shape, stored), c.group_size(mesh_shape, ffn.AXES.heads))


@functools.lru_cache(maxsize=4096)
def pad_heads(cfg: ModelConfig, layout: Layout, mesh_shape) -> ModelConfig:
    """`cfg` with H padded up to the next multiple `heads_multiple` allows, as the paper pads
    PaLM 540B's 48 heads to 64 on 64+ chips (Section 4.4); `cfg` itself when H already
    divides. The padded heads are real work: their FLOPs, weights and (multihead) KV cache
    count in every term; only MFU keeps the unpadded model's N (its useful FLOPs)."""
    k = heads_multiple(cfg, layout, mesh_shape)
    if cfg.attention_kind == "grouped":  # K stays; every K/V head gets as many query heads
        k = math.lcm(k, cfg.K)
    heads = -(-cfg.H // k) * k
    if heads == cfg.H:
        return cfg
    kv = {"multiquery": 1, "multihead": heads, "grouped": cfg.K}[cfg.attention_kind]
    return cfg.replace(n_heads=heads, n_kv_heads=kv,
                       mfu_params=cfg.mfu_params or cfg.active_matmul_params())


# ---- specs ----------------------------------------------------------------------------------
def param_specs(cfg: ModelConfig, layout: Layout, weights: str = "f32",
                mesh_shape=None) -> dict:
    """Partition specs matching `init_params`' pytree (int8, fp8: a QWeight of specs).
    Grouped-query attention needs the mesh shape: its K/V heads split over as many chips as K
    allows."""
    ffn = FFN[layout.ffn]
    e = c.entry(ffn.AXES.embed)

    def with_scale(name, spec):
        return QWeight(spec, scale_spec(name, spec)) if weights in QUANTIZED and \
            "norm" not in name else spec

    layer = {n: with_scale(n, s) for n, s in ffn.layer_specs(cfg, mesh_shape).items()}
    table = head.table_spec(ffn.AXES, ffn.GATHER)  # an untied output table stored alike
    return {**{t: with_scale(t, table) for t in tables(cfg)},
            "final_norm": (e,),
            "layers": [dict(layer) for _ in range(cfg.n_layers)]}


def cache_spec(cfg: ModelConfig, layout: Layout, mesh_shape, batch: int) -> c.Spec:
    """The spec of every layer's K and V cache, [B, S, K, D], for a batch of `batch` on this
    mesh (attention by batch splits the batch over as many heads axes as it divides)."""
    s = step(cfg, layout, mesh_shape, batch)
    return s.ctx.attention.cache_spec(s)


def cache_shape_per_chip(cfg: ModelConfig, layout: Layout, mesh_shape, batch: int,
                         context: int) -> tuple[int, int, int, int]:
    """[B, S, K, D] of one layer's K (or V) cache on one chip, from `cache_spec`. A dimension
    split over more chips than it has rows rounds up (each chip holds at least one head, as a
    padded model would): only the maximum-context model asks that of a layout it cannot run."""
    spec = tuple(cache_spec(cfg, layout, mesh_shape, batch))
    return tuple(-(-d // c.group_size(mesh_shape, c.spec_axes(e)))
                 for d, e in zip((batch, context, cfg.K, cfg.D), spec))


def cache_bytes_per_chip(cfg: ModelConfig, layout: Layout, mesh_shape, batch: int,
                         context: int, kv: str = "bf16") -> float:
    """KV-cache bytes one chip holds: K and V, every layer, in the KV format `kv` ("f32",
    "bf16", "int8" with its scales, "fp8": `tpuinfer.kv_formats`)."""
    local = cache_shape_per_chip(cfg, layout, mesh_shape, batch, context)
    return 2 * cfg.n_layers * array_bytes(local, kv)


def cache_specs(cfg: ModelConfig, layout: Layout, mesh_shape, batch: int,
                kv: str | None = None) -> list:
    """Every layer's cache specs: K and V, and for an int8 cache (`kv="int8"`) their scales,
    [B, S, K], split as the first three dimensions of K and V are."""
    spec = cache_spec(cfg, layout, mesh_shape, batch)
    layer = {"k": spec, "v": spec}
    if kv is not None and KV_FORMATS[kv].scale_bytes:
        layer |= {"k_scale": spec[:3], "v_scale": spec[:3]}
    return [dict(layer) for _ in range(cfg.n_layers)]


def token_spec(layout: Layout) -> c.Spec:
    return (c.entry(FFN[layout.ffn].AXES.batch), None)


def logits_spec(layout: Layout) -> c.Spec:
    axes = FFN[layout.ffn].AXES
    return (c.entry(axes.batch), None, c.entry(axes.embed))


def over_replicas(spec: c.Spec) -> c.Spec:
    """`spec` of an array whose first dimension is the batch, on a mesh of replicas: the batch
    split over 'r' first (each replica its own B/R sequences), then as `spec` splits it."""
    entries = tuple(spec) or (None,)
    return (c.entry((REPLICA,) + c.spec_axes(entries[0])), *entries[1:])
