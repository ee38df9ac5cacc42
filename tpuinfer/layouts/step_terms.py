"""`step_terms`: what one step of a layout costs each chip, before any hardware is chosen.

The collectives come from each layout file's `collectives()`, written beside the body they
predict. FLOPs, weight bytes and KV bytes follow from the partition specs themselves: a chip's
weight matmuls read exactly its (gathered) shard of each matrix, for each of its tokens.
"""
from __future__ import annotations

import functools
import math

from ..config import ModelConfig
from ..model import QUERY_BLOCK, param_shapes
from ..quant import check_format, stored_arrays
from ..terms import StepTerms
from . import Layout
from . import _common as c
from .registry import cache_spec, check, param_specs
from .registry import context as layout_context


@functools.lru_cache(maxsize=2048)
def _weights_per_chip(cfg, ffn: str, mesh_shape, weights, gather):
    """Per chip: bytes stored, bytes read, and the matmul elements read of the layers' weights
    and of the (tied) output projection's table. Every layer has the same shapes and specs,
    so one is counted, n_layers times. Cached: the attention layout and the schedule (plain or
    looped) do not change them, and the planner prices every combination."""
    one_layer = cfg.replace(n_layers=1)
    shapes, specs = param_shapes(one_layer), param_specs(one_layer, Layout(ffn), "bf16")
    layer_shapes, layer_specs = shapes["layers"][0], specs["layers"][0]
    named = [("embed", shapes["embed"], specs["embed"], 1),
             ("final_norm", shapes["final_norm"], specs["final_norm"], 1)]
    named += [(n, layer_shapes[n], layer_specs[n], cfg.n_layers) for n in sorted(layer_shapes)]
    stored = read = layer_elements = table_elements = 0.0
    for name, shape, spec, times in named:
        g = () if name == "embed" else gather  # the table stays put in every layout
        for label, arr_shape, arr_spec, nbytes in stored_arrays(name, shape, spec, weights):
            held = times * math.prod(c.local_shape(arr_shape, arr_spec, mesh_shape))
            used = times * math.prod(c.local_shape(arr_shape, c.drop_axes(arr_spec, g),
                                                   mesh_shape))
            stored += held * nbytes
            read += used * nbytes
            if label == name and name == "embed":
                table_elements += used
            elif label == name and "norm" not in name:
                layer_elements += used
    return stored, read, layer_elements, table_elements


def step_terms(cfg: ModelConfig, layout: Layout, mesh_shape, *, batch: int, tokens: int,
               context: int, weights: str = "bf16", act_bytes: float = 2) -> StepTerms:
    """Per-chip terms of one step: a prefill of `tokens` tokens per sequence, or a decode step
    (tokens=1), attending over a KV cache of `context` positions (history + this step's).
    `act_bytes`: 2 for bf16 activations on real hardware; 4 for the f32 emulated engine."""
    check_format(weights)
    mesh_shape = tuple(mesh_shape)
    if tokens < 1 or context < tokens:
        raise ValueError(f"a step needs tokens >= 1 and context >= tokens, got tokens={tokens}, "
                         f"context={context}")
    check(cfg, layout, mesh_shape, batch)
    ctx = layout_context(cfg, layout, mesh_shape)
    ffn, attention, axes = ctx.ffn, ctx.attention, ctx.axes
    n_b = c.group_size(mesh_shape, axes.batch)
    seqs = batch // n_b  # sequences each chip processes: B/|b|
    rows = seqs * tokens  # and their tokens: B/|b|·L
    a = act_bytes

    collectives = _collectives(cfg, layout, mesh_shape, batch, tokens, a, weights)

    stored_w, read_w, layer_elements, table_elements = _weights_per_chip(
        cfg, layout.ffn, mesh_shape, weights, ffn.GATHER)
    kv_spec = cache_spec(cfg, layout)
    kv_local = c.local_shape((batch, context, cfg.K, cfg.D), kv_spec, mesh_shape)
    kv_bytes = 2 * cfg.n_layers * math.prod(kv_local) * a

    # Attention runs on (sequences, heads) per chip: by heads (B/|b|, H/|h|); by batch
    # (B/(|b||h|), H). Score and value matmuls over the whole cache of `context` positions.
    n_h = c.group_size(mesh_shape, axes.heads)
    att_b, att_h = (batch // n_b, cfg.H // n_h) if layout.attention == "heads" else \
        (batch // (n_b * n_h), cfg.H)
    attention_flops = 4.0 * cfg.n_layers * att_b * tokens * context * att_h * cfg.D

    return StepTerms(
        # every token goes through every layer; only the last position is projected to logits
        flops=2.0 * rows * layer_elements + 2.0 * seqs * table_elements,
        attention_flops=attention_flops,
        weight_bytes=read_w, kv_bytes=kv_bytes,
        stored_weight_bytes=stored_w, stored_kv_bytes=kv_bytes,
        activation_bytes=_largest_activation(cfg, ctx, seqs, rows, att_b, att_h, tokens,
                                             context, a),
        collectives=collectives)


@functools.lru_cache(maxsize=8192)
def _collectives(cfg, layout, mesh_shape, batch, tokens, a, weights) -> tuple:
    """Every collective of the step: one layer's, n_layers times (every layer is the same),
    then the final norm's and the output projection's. They do not depend on the context:
    cached, one tuple for every decode step the planner prices."""
    ctx = layout_context(cfg, layout, mesh_shape)
    per_layer = ctx.ffn.collectives(cfg, mesh_shape, batch, tokens, a, weights, ctx.attention,
                                    (layout.looped, layout.bidirectional))
    seqs, e = batch // ctx.size(ctx.axes.batch), ctx.axes.embed
    return tuple([x.times(cfg.n_layers) for x in per_layer]
                 + c.collective("all-reduce", e, mesh_shape, seqs * 4, 1,
                                "final RMS-norm sum of squares, B·L f32", itemsize=4)
                 + c.collective("reduce-scatter", e, mesh_shape, seqs * cfg.V * a, 1,
                                "output projection, last position: BV partial-sum(e) -> BV_e",
                                itemsize=a))


def _largest_activation(cfg, ctx, seqs, rows, att_b, att_h, tokens, context, a) -> float:
    """The largest single activation a chip holds: the gathered input, the FFN hidden
    activations, one block of attention scores (f32) or the output projection's partial sums
    for the last position."""
    n_h = ctx.size(ctx.axes.heads)
    # a layout whose matmuls keep E split (2D weight-stationary: over x) declares it
    e_split = ctx.size(getattr(ctx.ffn, "E_STAYS_SPLIT", ()))
    gathered_e, f_local = cfg.E // e_split, cfg.F // n_h * e_split
    return max(rows * gathered_e * a,
               rows * f_local * (2 if cfg.gated_ffn else 1) * a,
               att_b * att_h * min(tokens, QUERY_BLOCK) * context * 4,
               seqs * cfg.V * a)

