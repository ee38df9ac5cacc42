"""The two ends of every layout's step: the embedding lookup and, after the last layer, the
final norm and the tied output projection. The table is stored `VE_eb` (e: the axes the
feed-forward layout splits the residual's E over; b: the batch axes a weight-gathered layout
gathers its weights over, none in a weight-stationary one), so no chip holds the whole table;
a weight-gathered layout gathers it like any other weight, at each end, and never holds it
through the layers.

0. weight-gathered: all-gather(b) of the table: `VE_eb` -> `VE_e`
1. embedding lookup with the local table: `B_bL` tokens -> `B_bLE_e`      (no communication)
   ... every layer ...
2. final RMS-norm of the last position: all-reduce(e) of its sum of squares (B·L f32)
3. weight-gathered: all-gather(b) of the table again: `VE_eb` -> `VE_e`
4. ·`VE_e` -> `B_bLV` partial-sum over e
5. reduce-scatter(e) -> `B_bLV_e`                  (generation needs only the last position)
"""
from __future__ import annotations

from jax.sharding import PartitionSpec as P

from .. import model
from ..quant import BYTES
from . import _common as c


def table_spec(axes, gather) -> P:
    """`VE_eb`: E split over the residual's axes, then the gathered ones (minor, so that
    gathering them leaves `VE_e` as one block)."""
    return P(None, c.entry(tuple(axes.embed) + tuple(gather)))


def _gathered(ctx, table_VE):
    return c.gather_param(ctx, "embed", table_VE, table_spec(ctx.axes, ctx.ffn.GATHER))


def embed(ctx, table_VE, tokens_BL, dtype):
    # 0. the table [V, E/(|e||b|)] -> [V, E/|e|]
    table_VE = _gathered(ctx, table_VE)
    # 1. tokens_BL here: [B/|b|, L] -> x_BLE [B/|b|, L, E/|e|]
    return model.embed_lookup(table_VE, tokens_BL, dtype)


def logits(ctx, x_BLE, final_norm_E, table_VE):
    e = ctx.axes.embed
    # 2. generation needs the next token's logits only: the last position's
    h_BLE = model.rms_norm(x_BLE[:, -1:], final_norm_E, ctx.cfg.E,
                           psum_axes=e if ctx.size(e) > 1 else ())
    # 3. the table gathered again, 4. the tied output projection: partial sums over e
    partial_BLV = model.mm("BLE,VE->BLV", h_BLE, _gathered(ctx, table_VE))
    # 5. reduce-scattered over V, so logits end [B/|b|, 1, V/|e|]
    return c.reduce_scatter(ctx, partial_BLV, e, axis=2)


def gathered_table_bytes(step) -> float:
    """Bytes of the table as a weight-gathered layout gathers it (`VE_e`), 0 if not gathered:
    the int8 scales are split over no axis, so only the matrix moves."""
    cfg, ctx = step.cfg, step.ctx
    if not c.gathered_axes(table_spec(ctx.axes, ctx.ffn.GATHER), ctx.ffn.GATHER,
                           step.mesh_shape):
        return 0.0
    return cfg.V * cfg.E / step.size(ctx.axes.embed) * BYTES[step.weights]


def collectives(step) -> list:
    """Steps 0 and 3 (weight-gathered only), 2 and 5, once per step (not per layer)."""
    seqs, e, a = step.sequences, step.axes.embed, step.act_bytes
    g = c.gathered_axes(table_spec(step.axes, step.ctx.ffn.GATHER), step.ctx.ffn.GATHER,
                        step.mesh_shape)
    table = c.collective("all-gather", g, step.mesh_shape, gathered_table_bytes(step), 1,
                         "the table gathered over " + "".join(g), itemsize=BYTES[step.weights])
    return (table
            + c.collective("all-reduce", e, step.mesh_shape, seqs * 4, 1,
                           "final RMS-norm sum of squares, B·L f32", itemsize=4)
            + table
            + c.collective("reduce-scatter", e, step.mesh_shape, seqs * step.cfg.V * a, 1,
                           "output projection, last position: BV partial-sum(e) -> BV_e",
                           itemsize=a))
