"""The two ends of every layout's step: the embedding lookup and, after the last layer, the
final norm and the tied output projection. The table is stored `VE_e` (e: the axes the
feed-forward layout splits the residual's E over), so these follow the residual's split.

0. embedding lookup with the local table: `B_bL` tokens -> `B_bLE_e`      (no communication)
   ... every layer ...
1. final RMS-norm of the last position: all-reduce(e) of its sum of squares (B·L f32)
2. ·`VE_e` -> `B_bLV` partial-sum over e
3. reduce-scatter(e) -> `B_bLV_e`                  (generation needs only the last position)
"""
from __future__ import annotations

from .. import model
from . import _common as c


def embed(ctx, table_VE, tokens_BL, dtype):
    # 0. tokens_BL here: [B/|b|, L]; the table: [V, E/|e|] -> x_BLE [B/|b|, L, E/|e|]
    return model.embed_lookup(table_VE, tokens_BL, dtype)


def logits(ctx, x_BLE, final_norm_E, table_VE):
    e = ctx.axes.embed
    # 1. generation needs the next token's logits only: the last position's
    h_BLE = model.rms_norm(x_BLE[:, -1:], final_norm_E, ctx.cfg.E,
                           psum_axes=e if ctx.size(e) > 1 else ())
    # 2. the tied output projection with the local table: partial sums over e
    partial_BLV = model.mm("BLE,VE->BLV", h_BLE, table_VE)
    # 3. reduce-scattered over V, so logits end [B/|b|, 1, V/|e|]
    return c.reduce_scatter(ctx, partial_BLV, e, axis=2)


def collectives(step) -> list:
    """Steps 1 and 3, once per step (not per layer)."""
    seqs, e, a = step.sequences, step.axes.embed, step.act_bytes
    return (c.collective("all-reduce", e, step.mesh_shape, seqs * 4, 1,
                         "final RMS-norm sum of squares, B·L f32", itemsize=4)
            + c.collective("reduce-scatter", e, step.mesh_shape, seqs * step.cfg.V * a, 1,
                           "output projection, last position: BV partial-sum(e) -> BV_e",
                           itemsize=a))
