"""The two ends of every layout's step: the embedding lookup and, after the last layer, the final
norm and the output projection (by the embedding itself when tied; an untied model's output
table is stored and used exactly as the embedding). The table is stored `VE_eg` (e: the axes
the feed-forward layout splits the residual's E over; g: the batch axes a weight-gathered
layout gathers its weights over, none in a weight-stationary one), so no chip holds the whole
table. It never moves: where g splits it, activations move instead (each chip's own B_bLE_e is
a small fraction of a table of V rows), and each chip works on its own E columns for every
sequence of its group g.

0. weight-gathered: all-gather(g) of the token ids: `B_bL` -> `B_{b/g}L`
1. embedding lookup with the local table: -> `B_{b/g}LE_eg`; weight-gathered: all-to-all(g),
   batch to E: -> `B_bLE_e`
   ... every layer ...
2. final RMS-norm of the last position: all-reduce(e) of its sum of squares (B·L f32)
3. weight-gathered: all-to-all(g), E to batch: `B_bLE_e` -> `B_{b/g}LE_eg`
4. ·`VE_eg` -> `B_{b/g}LV` partial-sum over e and g
5. weight-gathered: reduce-scatter(g) over the batch -> `B_bLV` partial-sum over e
6. reduce-scatter(e) -> `B_bLV_e`                  (generation needs only the last position)
"""
from __future__ import annotations

from . import _common as c


def table_spec(axes, gather) -> c.Spec:
    """`VE_eg`: E split over the residual's axes, then the gathered ones (minor, so that each
    chip's columns are chunk g of its `VE_e` block)."""
    return (None, c.entry(tuple(axes.embed) + tuple(gather)))


def _group(ctx) -> tuple[str, ...]:
    """g: the batch axes that split the table (size-1 axes left out)."""
    return c.gathered_axes(table_spec(ctx.axes, ctx.ffn.GATHER), ctx.ffn.GATHER,
                           ctx.mesh_shape)


def embed(ctx, table_VE, tokens_BL, dtype):
    # JAX, imported when the engine traces a step: the planner reads this file's spec and
    # terms without it
    from .. import model
    from ._spmd import all_gather, all_to_all  # JAX: as above

    g = _group(ctx)
    # 0. tokens_BL here: [B/|b|, L] -> the group's [B/|b|·|g|, L]
    tokens_BL = all_gather(ctx, tokens_BL, g, axis=0)
    # 1. the local table [V, E/(|e||g|)] -> x_BLE [B/|b|·|g|, L, E/(|e||g|)]; to [B/|b|, L, E/|e|]
    x_BLE = model.embed_lookup(table_VE, tokens_BL, dtype)
    return all_to_all(ctx, x_BLE, g, 0, 2)


def logits(ctx, x_BLE, final_norm_E, table_VE):
    # JAX, imported when the engine traces a step (as `embed`)
    from .. import model
    from ._spmd import all_to_all, reduce_scatter  # JAX: as above

    e, g = ctx.axes.embed, _group(ctx)
    # 2. generation needs the next token's logits only: the last position's
    h_BLE = model.rms_norm(x_BLE[:, -1:], final_norm_E, ctx.cfg.E,
                           psum_axes=e if ctx.size(e) > 1 else ())
    # 3. [B/|b|, 1, E/|e|] -> [B/|b|·|g|, 1, E/(|e||g|)], this chip's columns of the table
    h_BLE = all_to_all(ctx, h_BLE, g, 2, 0)
    # 4. the output projection with the local table: partial sums over e and g
    partial_BLV = model.mm("BLE,VE->BLV", h_BLE, table_VE)
    # 5. summed over g, each chip keeping its own sequences; 6. over e, split over V: logits
    #    end [B/|b|, 1, V/|e|]
    partial_BLV = reduce_scatter(ctx, partial_BLV, g, axis=0)
    return reduce_scatter(ctx, partial_BLV, e, axis=2)


def collectives(step) -> list:
    """Steps 0, 1, 3 and 5 (weight-gathered only), 2 and 6, once per step (not per layer)."""
    cfg, seqs, e, a, ms = step.cfg, step.sequences, step.axes.embed, step.act_bytes, \
        step.mesh_shape
    g = _group(step.ctx)
    n_g = c.group_size(ms, g)
    own = seqs * step.tokens * cfg.E / step.size(e) * a  # this chip's B_bLE_e
    return (c.collective("all-gather", g, ms, seqs * n_g * step.tokens * 4, 1,
                         "0. token ids of the group", itemsize=4, dtype="s32")
            + c.collective("all-to-all", g, ms, own, 1, "1. embeddings, batch to E",
                           itemsize=a)
            + c.collective("all-reduce", e, ms, seqs * 4, 1,
                           "2. final RMS-norm sum of squares, B·L f32", itemsize=4)
            + c.collective("all-to-all", g, ms, seqs * cfg.E / step.size(e) * a, 1,
                           "3. last position, E to batch", itemsize=a)
            + c.collective("reduce-scatter", g, ms, seqs * n_g * cfg.V * a, 1,
                           "5. output projection: partial-sum(g) over the batch", itemsize=a)
            + c.collective("reduce-scatter", e, ms, seqs * cfg.V * a, 1,
                           "6. output projection, last position: BV partial-sum(e) -> BV_e",
                           itemsize=a))
