"""`step_terms`: what one step of a layout costs each chip, before any hardware is chosen.

Every term is asked of the code that runs it: the collectives of each layer of the
feed-forward layout's `collectives()` (which asks its attention layout for attention's), and
those of the step's two ends of `head.collectives()`; the attention FLOPs of the attention
layout's `per_chip()` and the model's `attention_flops`. FLOPs, weight bytes and KV bytes
follow from the partition specs themselves: a chip's weight matmuls read exactly its
(gathered) shard of each matrix, for each of its tokens; its cache is its shard of the
cache spec, in its KV format (`tpuinfer.kv_formats`: an int8 cache's scales included).

A mixture of experts' experts are multiplied not by a chip's tokens but by the slots of its
experts' capacity buffers, B·C each (`tpuinfer.experts`). Two readings of them: `experts=
"touched"` (the default, what the cost model prices), a grouped matmul that skips an expert
whose buffer holds no token, so that weights and FLOPs scale with the expected fraction of
experts touched, M·(1 − (1 − k/M)^(B·L)) of M; `experts="all"`, the compiled einsum that
reads every local expert (what `measure` compares against the compiled step).
"""
from __future__ import annotations

import functools
import math
from typing import NamedTuple

from ..config import ModelConfig
from ..experts import touched_fraction
from ..kv_formats import resolve as kv_format
from ..errors import UsageError
from ..shapes import CONTRACT, EXPERTS, QUERY_BLOCK, is_matrix, output_table, param_shapes
from ..weight_formats import check_format, stored_arrays
from ..terms import StepTerms
from . import _common as c
from . import _experts, head
from .interface import Step
from .layout import Layout
from .registry import cache_bytes_per_chip, check, param_specs
from .registry import step as layout_step


class _Weights(NamedTuple):
    """A chip's weights, per step (`_weights_per_chip`)."""
    stored: float  # bytes held
    layer_read: float  # bytes the layers' matmuls read (gathered shards included; and norms)
    table_read: float  # bytes of the output table (the embedding when tied) a step reads
    layer_elements: float  # matrix elements the layers' matmuls read, all layers
    table_elements: float  # and the table's
    layer_gathered: float  # bytes of one layer's weights as gathered (0: nothing gathered)
    layer_relayout: float  # bytes of the gathered weights copied into place, all layers
    layer_io: float  # activation elements per row the layers' matmuls read and write
    table_io: float  # and the output projection's
    # a mixture of experts' experts, apart from the rest (0 for a dense model): their bytes
    # (read whole when their expert is), matrix elements, and activation elements per slot
    expert_read: float = 0.0
    expert_elements: float = 0.0
    expert_io: float = 0.0


@functools.lru_cache(maxsize=2048)
def _weights_per_chip(cfg, ffn: str, mesh_shape, weights, gather) -> _Weights:
    """A chip's weights (`_Weights`). A matmul of a local [k, n] weight reads k activation
    elements and writes n per row. Every layer has the same shapes and specs, so one is
    counted, n_layers times. Cached: the attention layout and the schedule (plain or looped)
    do not change them, and the planner prices every combination."""
    one_layer = cfg.replace(n_layers=1)
    shapes = param_shapes(one_layer)
    specs = param_specs(one_layer, Layout(ffn), "bf16", mesh_shape)
    layer_shapes, layer_specs = shapes["layers"][0], specs["layers"][0]
    named = [(n, shapes[n], specs[n], 1) for n in ("embed", "unembed", "final_norm")
             if n in shapes]
    table = output_table(cfg)  # what the output projection multiplies by
    named += [(n, layer_shapes[n], layer_specs[n], cfg.n_layers) for n in sorted(layer_shapes)]
    stored = layer_read = table_read = layer_elements = table_elements = layer_gathered = 0.0
    layer_relayout = 0.0
    layer_io = table_io = 0.0
    expert_read = expert_elements = expert_io = 0.0
    for name, shape, spec, times in named:
        for label, arr_shape, arr_spec, nbytes in stored_arrays(name, shape, spec, weights):
            g = c.gathered_axes(arr_spec, gather, mesh_shape)
            held = times * math.prod(c.local_shape(arr_shape, arr_spec, mesh_shape))
            local = c.local_shape(arr_shape, c.drop_axes(arr_spec, g), mesh_shape)
            used = times * math.prod(local)
            stored += held * nbytes
            if name == "embed" and name != table:
                continue  # an untied lookup table: stored; a step reads only its tokens' rows
            if name in EXPERTS:  # multiplied by its slots, not by the chip's tokens
                expert_read += used * nbytes
                if label == name:  # [M_local, in, out]: a slot reads `in`, writes `out`
                    expert_elements += used
                    expert_io += times * local[0] * (local[1] + local[2])
                continue
            if label == name and is_matrix(name):  # the matrix itself, not its int8 scales
                k = math.prod(local[i] for i in CONTRACT[name])
                io = k + math.prod(local) // k  # what one row reads plus what it writes
                if name == table:
                    table_io += io
                else:
                    layer_io += times * io
            if name == table:
                # the table never moves: a chip reads its own columns, for the |g| times as
                # many sequences of its group (as many FLOPs as its `VE_e` for its own)
                table_read += held * nbytes
                table_elements += used if label == name else 0
                continue
            layer_read += used * nbytes
            if g:
                layer_gathered += used / times * nbytes
            if c.gather_copies(arr_spec, g, len(arr_shape)):
                layer_relayout += used * nbytes
            if label == name and "norm" not in name:
                layer_elements += used
    return _Weights(stored, layer_read, table_read, layer_elements, table_elements,
                    layer_gathered, layer_relayout, layer_io, table_io, expert_read,
                    expert_elements, expert_io)


def step_terms(cfg: ModelConfig, layout: Layout, mesh_shape, *, batch: int, tokens: int,
               context: int, weights: str = "bf16", act_bytes: float = 2,
               kv: str | None = None, experts: str = "touched") -> StepTerms:
    """Per-chip terms of one step: a prefill of `tokens` tokens per sequence, or a decode step
    (tokens=1), attending over a KV cache of `context` positions (history + this step's).
    `act_bytes`: 2 for bf16 activations on real hardware; 4 for the f32 emulated engine.
    `kv`: the cache's format, "bf16", "int8" or "fp8" (None: the activations' dtype), which
    sets the KV bytes stored and read; the keys and values the layouts move are activations,
    whatever the cache holds. `experts` (a mixture of experts): "touched" or "all" (the module
    docstring)."""
    check_format(weights)
    kv_fmt = kv_format(kv, act_bytes)
    if experts not in ("touched", "all"):
        raise UsageError(f"experts={experts!r}; choose 'touched' (a grouped matmul skips idle "
                         f"experts) or 'all' (every local expert read, as compiled)")
    mesh_shape = tuple(mesh_shape)
    if tokens < 1 or context < tokens:
        raise UsageError(f"a step needs tokens >= 1 and context >= tokens, got tokens={tokens}, "
                         f"context={context}")
    step, (att_b, att_h), fields = _context_free(cfg, layout, mesh_shape, batch, tokens,
                                                 weights, act_bytes, experts)
    kv_bytes = cache_bytes_per_chip(cfg, layout, mesh_shape, batch, context, kv_fmt.name)
    return StepTerms(
        # score and value matmuls over the whole cache of `context` positions, for the
        # (sequences, heads) the attention layout gives each chip
        attention_flops=cfg.attention_flops(att_b, tokens, context, heads=att_h),
        score_bytes=cfg.score_bytes(att_b, tokens, context, heads=att_h),
        kv_bytes=kv_bytes, stored_kv_bytes=kv_bytes,
        activation_bytes=max(_largest_activation(step, att_b, att_h, context),
                             _experts.buffer_bytes(step) if cfg.n_experts else 0.0),
        **fields)


@functools.lru_cache(maxsize=8192)
def _context_free(cfg, layout, mesh_shape, batch, tokens, weights, act_bytes, experts):
    """(the step, the (sequences, heads) each chip attends for, and every term of `StepTerms`
    that does not depend on the context). Cached: a decode phase prices its first and last
    steps, which differ only in their context."""
    check(cfg, layout, mesh_shape, batch)
    step = layout_step(cfg, layout, mesh_shape, batch, tokens, act_bytes, weights)
    seqs = step.sequences  # sequences each chip processes: B/|b|
    rows = seqs * tokens  # and their tokens: B/|b|·L
    w = _weights_per_chip(cfg, layout.ffn, mesh_shape, weights, step.ctx.ffn.GATHER)
    # a mixture of experts: each local expert multiplies its B·C slots, if it is read at all
    slots = batch * cfg.capacity(tokens) if cfg.n_experts else 0
    touched = touched_fraction(cfg, batch * tokens) if experts == "touched" else 1.0
    expert_read = touched * w.expert_read
    return step, step.ctx.attention.per_chip(step), dict(
        # every token goes through every layer; only the last position is projected to logits
        flops=2.0 * rows * w.layer_elements + 2.0 * seqs * w.table_elements
        + 2.0 * slots * touched * w.expert_elements,
        weight_bytes=w.layer_read + w.table_read + expert_read, stored_weight_bytes=w.stored,
        collectives=_collectives(step),
        gathered_weight_bytes=w.layer_gathered,  # one layer's gathered weights at a time
        activation_traffic_bytes=(rows * w.layer_io + seqs * w.table_io
                                  + slots * touched * w.expert_io) * act_bytes,
        # the layers' matmuls have `rows` rows, the output projection `seqs`, experts `slots`
        multirow_weight_bytes=(w.layer_read if rows > 1 else 0.0)
        + (w.table_read if seqs > 1 else 0.0) + (expert_read if slots > 1 else 0.0),
        # a looped layout multiplies by the chunks as they pass: nothing is gathered in place
        relayout_bytes=0.0 if step.ctx.looped else w.layer_relayout)


@functools.lru_cache(maxsize=8192)
def _collectives(step: Step) -> tuple:
    """Every collective of the step: one layer's, n_layers times (every layer is the same),
    then the two ends' (`head`). They do not depend on the context: cached, one tuple for
    every decode step the planner prices."""
    per_layer = step.ctx.ffn.collectives(step)
    return tuple([x.times(step.cfg.n_layers) for x in per_layer] + head.collectives(step))


def _largest_activation(step: Step, att_b, att_h, context) -> float:
    """The largest activation a chip holds: the gathered input together with its normalized
    copy (the norm's scale multiplies E before the matmuls, so both are held), the FFN hidden
    activations, one block of attention scores (f32) or the output projection's partial sums
    for the last position."""
    cfg, ctx, a = step.cfg, step.ctx, step.act_bytes
    seqs, rows = step.sequences, step.sequences * step.tokens
    n_h = ctx.size(ctx.axes.heads)
    e_split = ctx.size(ctx.ffn.E_STAYS_SPLIT)  # E stays split over these in the matmuls
    gathered_e, f_local = cfg.E // e_split, cfg.F // n_h * e_split
    return max(2 * rows * gathered_e * a,
               rows * f_local * (2 if cfg.gated_ffn else 1) * a,
               att_b * att_h * min(step.tokens, QUERY_BLOCK) * context * 4,
               seqs * cfg.V * a)
