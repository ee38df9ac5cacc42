"""The body shared by 1D weight-stationary and the three weight-gathered layouts.

All four split the chips into batch axes b (the residual's B is split over them; weights are
all-gathered over them) and model axes m (a 1D weight-stationary layout over m: E, F and the
heads split over m). 1D weight-stationary is b = (), m = xyz; XYZ-weight-gathered is b = xyz,
m = (). Each layout's own file states its formula; this file is their common code.

0. all-gather(b) of each weight matrix       (weight-gathered only; one collective per array)
1. all-gather(m): `B_bLE_m` -> `B_bLE`
2. ·W_in, ·W_q (heads split over m), K/V split as far as K allows -> `B_bLF_m`, `B_bLH_mD`
   attention on the local heads (`attn_heads`), or moved to batch (`attn_batch`)
3. nonlinearity; ·W_out + ·W_o -> `B_bLE` partial-sum over m
4. reduce-scatter(m) -> `B_bLE_m`
"""
from __future__ import annotations

import functools
import math

from ..shapes import param_shapes
from ..weight_formats import HLO_TYPE, QUANTIZED, stored_arrays
from . import _common as c
from ._common import ZY, stored_specs  # the weight-gathered layouts store E_xF_yz (as ws2d)


def block(ctx, x_BLE, w, cache, pos, specs):
    # JAX, imported when the engine traces a step: the planner reads this file's specs and
    # terms without it
    from . import looped
    from ._spmd import gather_param  # JAX: as above

    # 0. weight-gathered: each matrix arrives whole over the batch axes; looped, its chunks
    #    travel the ring of those axes instead, each multiplied as it passes
    if ctx.looped and ctx.ffn.GATHER:
        w = {name: looped.Ring(arr, specs[name], c.gathered_axes(specs[name], ctx.ffn.GATHER,
                                                                   ctx.mesh_shape), ctx.mesh_shape)
             if "norm" not in name else arr for name, arr in w.items()}
    else:
        w = {name: gather_param(ctx, name, arr, specs[name]) for name, arr in w.items()}
    return c.through_passes(_pass, ctx, x_BLE, w, cache, pos)


def _pass(ctx, x_BLE, w, cache, pos, norm, attn, ffn):
    # JAX, imported when the engine traces a step (as `block`)
    import jax.numpy as jnp

    from ..model import ffn_act, rms_factor, rope, sum_of_squares  # JAX: as above
    from . import looped  # JAX: as above
    from ._spmd import all_gather, mm_cols, mm_rows, reduce_scatter  # JAX: as above

    # x_BLE here: [B/|b|, L, E/|m|]
    cfg, m = ctx.cfg, ctx.axes.embed
    B, L = x_BLE.shape[:2]

    def project(row_start, h_piece):
        """This piece of E's contribution to every projection (the norm's scale applied, its
        1/rms not yet: one number per token, applied once the pieces are summed)."""
        n = h_piece.shape[-1]
        hs = h_piece * looped.rows(w[norm], row_start, n).astype(h_piece.dtype)
        out = {"ss": sum_of_squares(h_piece)}
        if attn:
            for t, eq in (("q", "BLE,EHD->BLHD"), ("k", "BLE,EKD->BLKD"), ("v", "BLE,EKD->BLKD")):
                out[t] = mm_rows(eq, hs, w["w_" + t], row_start, n)
        if ffn:
            if cfg.gated_ffn:
                out["gate"] = mm_rows("BLE,EF->BLF", hs, w["w_gate"], row_start, n)
            out["up"] = mm_rows("BLE,EF->BLF", hs, w["w_up"], row_start, n)
        return out

    # 1. all-gather(m): B_bLE_m -> B_bLE, feeding W_in and W_q (and the whole K/V);
    #    looped, the E chunks travel the ring of m while each is multiplied in turn
    if ctx.looped and ctx.size(m) > 1 and not ctx.ffn.GATHER:
        parts = looped.allgather_matmul(x_BLE, m, ctx.size(m), project, ctx.bidirectional)
    else:
        parts = project(0, all_gather(ctx, x_BLE, m, axis=2))
    inv_BL1 = rms_factor(parts.pop("ss"), cfg.E)
    parts = {t: (v * inv_BL1[..., None] if v.ndim == 4 else v * inv_BL1).astype(v.dtype)
             for t, v in parts.items()}
    back = {}
    if attn:
        # 2. heads split over m; the K/V heads over as much of m as K allows (`kv_axes`)
        pos_L = pos + jnp.arange(L)
        back["o"], cache = ctx.attention.attend(ctx, rope(parts["q"], pos_L),
                                                rope(parts["k"], pos_L), parts["v"], cache, pos)
    if ffn:
        # 3. F split over m
        back["act"] = ffn_act(cfg, parts.get("gate"), parts["up"])

    def produce(col_start, n):
        out_BLE = 0
        if attn:
            out_BLE = out_BLE + mm_cols("BLHD,HDE->BLE", back["o"], w["w_o"], col_start, n)
        if ffn:
            out_BLE = out_BLE + mm_cols("BLF,FE->BLE", back["act"], w["w_down"], col_start, n)
        return out_BLE

    # 4. reduce-scatter(m): B_bLE partial-sum over m -> B_bLE_m (one for both branches);
    #    looped, each chip's accumulator travels the ring gathering every chip's part
    if ctx.looped and ctx.size(m) > 1 and not ctx.ffn.GATHER:
        width = x_BLE.shape[-1]
        return x_BLE + looped.matmul_reducescatter(produce, m, ctx.size(m), width,
                                                   ctx.bidirectional), cache
    return x_BLE + reduce_scatter(ctx, produce(0, cfg.E), m, axis=2), cache


def collectives(step, specs) -> list:
    """Every collective of one layer, per chip, under tpuinfer.terms' byte convention, for a
    layout whose layer is stored with `specs`. Looped (`step.ctx.looped`): weight-gathered
    layouts move their weights round the ring of the batch axes; 1D weight-stationary moves
    activations round the ring of m (both ways if `step.ctx.bidirectional`)."""
    cfg, mesh_shape, a, weights = step.cfg, step.mesh_shape, step.act_bytes, step.weights
    axes, gather = step.axes, step.ctx.ffn.GATHER
    loop = (step.ctx.looped, step.ctx.bidirectional)
    m = axes.embed
    rows = step.sequences * step.tokens  # B/|b|·L
    out = []
    used = {}  # matrix -> (elements each chip multiplies by, bytes per element)
    for name, label, held, whole, nbytes, g in _arrays(cfg, tuple(sorted(specs.items())),
                                                       gather, mesh_shape, weights):
        # a quantized matrix moves in its own type (s8, f8e4m3fn), its scales in bf16
        dtype = HLO_TYPE[weights] if label == name and weights in QUANTIZED else ""
        if label == name:
            used[name] = (whole, nbytes)
        # looped, each round multiplies the rows by the weight chunk held then
        out += c.gather_or_ring("all-gather", g, mesh_shape, whole * nbytes,
                                (f"0. {label} gathered over {''.join(g)}", f"0. {label} chunks"),
                                itemsize=nbytes, looped=(loop[0], False), dtype=dtype,
                                matmul=(2 * rows * whole, whole * nbytes) if label == name
                                else (0, 0))
    # looped, 1D weight-stationary moves its activations round the ring of m
    ring_activations = (loop[0] and not gather, loop[1])

    def matmul(names):  # (FLOPs, weight bytes) per chip of the matmuls of `names`
        present = [used[n] for n in names if n in used]
        return (2 * rows * sum(e for e, _ in present), sum(e * b for e, b in present))
    for attn, ffn in c.passes(cfg):
        ins = (["w_q", "w_k", "w_v"] if attn else []) + (["w_gate", "w_up"] if ffn else [])
        outs = (["w_o"] if attn else []) + (["w_down"] if ffn else [])
        out += c.gather_or_ring("all-gather", m, mesh_shape, rows * cfg.E * a,
                                ("1. B_bLE_m -> B_bLE", "1. B_bLE_m chunks fed to the input "
                                 "matmuls"), itemsize=a, looped=ring_activations,
                                matmul=matmul(ins))
        if attn:
            out += step.ctx.attention.collectives(step)
        out += c.gather_or_ring("reduce-scatter", m, mesh_shape, rows * cfg.E * a,
                                ("4. B_bLE partial-sum(m) -> B_bLE_m", "4. B_bLE_m accumulators "
                                 "of the output matmuls"), itemsize=a, looped=ring_activations,
                                matmul=matmul(outs))
    return out


@functools.lru_cache(maxsize=1024)
def _arrays(cfg, spec_items, gather, mesh_shape, weights) -> tuple:
    """Per stored array of one layer's matrices (int8, fp8: each matrix and its scales): its name,
    label, the elements a chip holds and the elements it multiplies by once gathered over
    `gather`, bytes per element, and the axes gathered. Cached: every schedule, batch and
    context of a layout on a mesh shares them."""
    shapes, out = param_shapes(cfg.replace(n_layers=1))["layers"][0], []  # all layers alike
    for name, spec_ in spec_items:
        if "norm" in name:
            continue
        for label, shape, spec, nbytes in stored_arrays(name, shapes[name], spec_, weights):
            g = c.gathered_axes(spec, gather, mesh_shape)
            whole = math.prod(c.local_shape(shape, c.drop_axes(spec, g), mesh_shape))
            held = math.prod(c.local_shape(shape, spec, mesh_shape))
            out.append((name, label, held, whole, nbytes, g))
    return tuple(out)


# ---- the weight-gathered layouts' shared storage and checks ---------------------------------
def gathered_specs(cfg, mesh_shape=None) -> dict:
    """Weight-gathered layouts store weights as 2D weight-stationary does (`E_xF_yz`), so one
    stored layout serves weight-gathered prefill and 2D weight-stationary decode."""
    return stored_specs(cfg, mesh_shape) | {n: () for n in c.norm_names(cfg)}


def gathered_kv_axes(ctx) -> tuple[str, ...]:
    """The axes a chip's K/V heads split over once gathered: the stored W_k's heads axes
    (a prefix of zy) less the gathered ones, a prefix of the layout's heads axes."""
    spec = c.drop_axes(stored_specs(ctx.cfg, ctx.mesh_shape)["w_k"], ctx.ffn.GATHER)
    return c.spec_axes(tuple(spec)[1])


def gathered_block(ctx, x_BLE, w, cache, pos):
    """The weight-gathered layouts differ only in their axes (each module's AXES and GATHER):
    each runs this block on its layer stored by `gathered_specs`."""
    return block(ctx, x_BLE, w, cache, pos, gathered_specs(ctx.cfg, ctx.mesh_shape))


def gathered_collectives(step) -> list:
    return collectives(step, gathered_specs(step.cfg, step.mesh_shape))


def check_gathered(step):
    cfg, mesh_shape, axes, name = step.cfg, step.mesh_shape, step.axes, step.ctx.ffn.NAME
    c.require_divides("E", cfg.E, ("x",), mesh_shape, name)
    c.require_divides("E", cfg.E, axes.embed, mesh_shape, name)
    c.require_divides("E", cfg.E, axes.embed + axes.batch, mesh_shape, name,
                      "(the embedding table is stored split over every chip)")
    c.require_divides("F", cfg.F, ZY, mesh_shape, name, "or pad F")
    c.require_heads(cfg, ZY, mesh_shape, name)
    c.require_batch(step.batch, axes.batch, mesh_shape, name)
    c.require_groups(cfg, axes.heads, mesh_shape, name)
