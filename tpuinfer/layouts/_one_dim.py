"""The body shared by 1D weight-stationary and the three weight-gathered layouts.

All four split the chips into batch axes b (the residual's B is split over them; weights are
all-gathered over them) and model axes m (a 1D weight-stationary layout over m: E, F and the
heads split over m). 1D weight-stationary is b = (), m = xyz; XYZ-weight-gathered is b = xyz,
m = (). Each layout's own file states its formula; this file is their common code.

0. all-gather(b) of each weight matrix       (weight-gathered only; one collective per array)
1. all-gather(m): `B_bLE_m` -> `B_bLE`
2. ·W_in, ·W_q (heads split over m), K/V whole for multiquery -> `B_bLF_m`, `B_bLH_mD`
   attention on the local heads (`attn_heads`), or moved to batch (`attn_batch`)
3. nonlinearity; ·W_out + ·W_o -> `B_bLE` partial-sum over m
4. reduce-scatter(m) -> `B_bLE_m`
"""
from __future__ import annotations

import math

import jax.numpy as jnp

from ..model import ffn_act, mm, rms_norm, rope
from ..quant import QWeight, scale_spec
from . import _common as c


def block(ctx, x_BLE, w, cache, pos, specs):
    cfg = ctx.cfg
    # 0. weight-gathered: each matrix arrives whole over the batch axes
    w = {name: _gather(ctx, name, arr, specs[name]) for name, arr in w.items()}
    if cfg.parallel_block:
        return _pass(ctx, x_BLE, w, cache, pos, "norm", attn=True, ffn=True)
    x_BLE, cache = _pass(ctx, x_BLE, w, cache, pos, "norm_attn", attn=True, ffn=False)
    x_BLE, _ = _pass(ctx, x_BLE, w, cache, pos, "norm_ffn", attn=False, ffn=True)
    return x_BLE, cache


def _gather(ctx, name, w, spec):
    if isinstance(w, QWeight):  # int8: the scales travel with their matrix
        return QWeight(c.gather_weight(ctx, w.q, spec, ctx.ffn.GATHER),
                       c.gather_weight(ctx, w.scale, scale_spec(name, spec), ctx.ffn.GATHER))
    return c.gather_weight(ctx, w, spec, ctx.ffn.GATHER)


def _pass(ctx, x_BLE, w, cache, pos, norm, attn, ffn):
    # x_BLE here: [B/|b|, L, E/|m|]
    cfg, m = ctx.cfg, ctx.axes.embed
    L = x_BLE.shape[1]
    # 1. all-gather(m): B_bLE_m -> B_bLE, then the norm needs no communication
    h_BLE = rms_norm(c.all_gather(ctx, x_BLE, m, axis=2), w[norm], cfg.E)
    out_BLE = 0
    if attn:
        # 2. heads split over m; multiquery K/V computed whole on every chip of m
        pos_L = pos + jnp.arange(L)
        q_BLHD = rope(mm("BLE,EHD->BLHD", h_BLE, w["w_q"]), pos_L)
        k_BLKD = rope(mm("BLE,EKD->BLKD", h_BLE, w["w_k"]), pos_L)
        v_BLKD = mm("BLE,EKD->BLKD", h_BLE, w["w_v"])
        o_BLHD, cache = ctx.attention.attend(ctx, q_BLHD, k_BLKD, v_BLKD, cache, pos)
        out_BLE = out_BLE + mm("BLHD,HDE->BLE", o_BLHD, w["w_o"])
    if ffn:
        # 3. F split over m
        gate_BLF = mm("BLE,EF->BLF", h_BLE, w["w_gate"]) if cfg.gated_ffn else None
        up_BLF = mm("BLE,EF->BLF", h_BLE, w["w_up"])
        out_BLE = out_BLE + mm("BLF,FE->BLE", ffn_act(cfg, gate_BLF, up_BLF), w["w_down"])
    # 4. reduce-scatter(m): B_bLE partial-sum over m -> B_bLE_m (one for both branches)
    return x_BLE + c.reduce_scatter(ctx, out_BLE, m, axis=2), cache


def collectives(cfg, axes, specs, gather, mesh_shape, batch, tokens, a, weights,
                attention) -> list:
    """Every collective of one layer, per chip, under tpuinfer.terms' byte convention."""
    from ..model import param_shapes
    from ..quant import stored_arrays
    b, m = axes.batch, axes.embed
    rows = batch // c.group_size(mesh_shape, b) * tokens  # B/|b|·L
    out = []
    shapes = param_shapes(cfg)["layers"][0]
    for name in sorted(specs):
        if "norm" in name:
            continue
        for label, shape, spec, nbytes in stored_arrays(name, shapes[name], specs[name], weights):
            g = c.gathered_axes(spec, gather, mesh_shape)
            local = c.local_shape(shape, c.drop_axes(spec, g), mesh_shape)
            out += c.collective("all-gather", g, mesh_shape, math.prod(local) * nbytes, 1,
                                f"0. {label} gathered over {''.join(g)}")
    passes = [(True, True)] if cfg.parallel_block else [(True, False), (False, True)]
    for attn, _ in passes:
        out += c.collective("all-gather", m, mesh_shape, rows * cfg.E * a, 1,
                            "1. B_bLE_m -> B_bLE")
        if attn:
            out += attention.collectives(cfg, axes, mesh_shape, batch, tokens, a)
        out += c.collective("reduce-scatter", m, mesh_shape, rows * cfg.E * a, 1,
                            "4. B_bLE partial-sum(m) -> B_bLE_m")
    return out


# ---- the weight-gathered layouts' shared storage and checks ---------------------------------
def gathered_specs(cfg) -> dict:
    """Weight-gathered layouts store weights as 2D weight-stationary does (`E_xF_yz`), so one
    stored layout serves weight-gathered prefill and 2D weight-stationary decode."""
    from .ws2d import stored_specs
    from jax.sharding import PartitionSpec as P
    norms = ["norm"] if cfg.parallel_block else ["norm_attn", "norm_ffn"]
    return stored_specs(cfg) | {n: P() for n in norms}


def check_gathered(cfg, mesh_shape, batch, axes, name):
    from .ws2d import ZY
    c.require_divides("E", cfg.E, ("x",), mesh_shape, name)
    c.require_divides("E", cfg.E, axes.embed, mesh_shape, name)
    c.require_divides("F", cfg.F, ZY, mesh_shape, name, "or pad F")
    c.require_divides("H", cfg.H, ZY, mesh_shape, name,
                      "or pad the heads as the paper pads PaLM 540B's 48 to 64")
    c.require_batch(batch, axes.batch, mesh_shape, name)
