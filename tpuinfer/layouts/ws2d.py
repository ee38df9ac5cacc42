"""2D weight-stationary feed-forward layout (with attention fused into it, PaLM parallel block).

Weights `E_xF_yz`, `F_yzE_x` (and `E_xH_yzD`, `H_yzDE_x` for attention); activations between
layers `BLE_xyz`. Within this file the F and H splits over y, z are written `_zy` (z major),
so that a weight-gathered layout gathering over y alone still receives one contiguous block.

1. all-gather(yz): `BLE_xyz` -> `BLE_x`          (and a B·L all-reduce(x) for the RMS-norm)
2. ·`E_xF_yz` (and ·`E_xH_yzD`) -> `BLF_yz`, `BLH_yzD` partial-sum over x
3. reduce-scatter(x) -> `BLF_xyz`, `BLH_xyzD`    (one collective for W_gate, W_up and W_q;
                                                   multiquery K, V: all-reduce(x), B·L·2·D)
   attention on H/n heads per chip (`attn_heads`), or moved to batch (`attn_batch`)
4. nonlinearity
5. all-gather(x) -> `BLF_yz`, `BLH_yzD`          (one collective for the FFN and attention)
6. ·`F_yzE_x` + ·`H_yzDE_x` -> `BLE_x` partial-sum over yz
7. reduce-scatter(yz) -> `BLE_xyz`

Communication per layer 2·B·L·(E/X + F/(YZ)) elements, optimal at X = √(n·E/F)
(`tpuinfer.cost` derives it); 2D beats 1D once n > 4F/E.
"""
from __future__ import annotations

import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from ..model import ffn_act, mm, rms_norm, rope
from . import _common as c
from ._common import Axes

NAME = "ws2d"
AXES = Axes(batch=(), embed=("x", "y", "z"), heads=("z", "y", "x"))
GATHER: tuple[str, ...] = ()  # weights never move
YZ = ("y", "z")  # the residual's E splits over x then (y, z): the all-gather and reduce-scatter
ZY = ("z", "y")  # F and H split over (z, y) in the stored weights


def stored_specs(cfg) -> dict:
    """Partition specs of one layer's weights, `E_xF_yz`; shared by the weight-gathered
    layouts (one stored layout serves weight-gathered prefill and this decode)."""
    kv = P("x", None, None) if cfg.multiquery else P("x", ZY, None)
    specs = {"w_q": P("x", ZY, None), "w_k": kv, "w_v": kv, "w_o": P(ZY, None, "x"),
             "w_up": P("x", ZY), "w_down": P(ZY, "x")}
    if cfg.gated_ffn:
        specs["w_gate"] = P("x", ZY)
    return specs


def layer_specs(cfg) -> dict:
    specs = stored_specs(cfg)
    norms = ["norm"] if cfg.parallel_block else ["norm_attn", "norm_ffn"]
    return specs | {n: P("x") for n in norms}  # the norm runs on BLE_x


def block(ctx, x_BLE, w, cache, pos):
    cfg = ctx.cfg
    if cfg.parallel_block:
        return _pass(ctx, x_BLE, w, cache, pos, "norm", attn=True, ffn=True)
    x_BLE, cache = _pass(ctx, x_BLE, w, cache, pos, "norm_attn", attn=True, ffn=False)
    x_BLE, _ = _pass(ctx, x_BLE, w, cache, pos, "norm_ffn", attn=False, ffn=True)
    return x_BLE, cache


def _pass(ctx, x_BLE, w, cache, pos, norm, attn, ffn):
    # x_BLE here: [B, L, E/(XYZ)]
    cfg = ctx.cfg
    B, L = x_BLE.shape[:2]
    # 1. all-gather(yz): BLE_xyz -> BLE_x; the norm's sum of squares is all-reduced over x
    h_BLE = c.all_gather(ctx, x_BLE, YZ, axis=2)
    h_BLE = rms_norm(h_BLE, w[norm], cfg.E, psum_axes=("x",) if ctx.size(("x",)) > 1 else ())
    # 2. partial sums over x, flattened to [B, L, N]: F/(YZ) for the FFN, H/(YZ)·D for Q
    partial = {}
    if ffn:
        if cfg.gated_ffn:
            partial["gate"] = mm("BLE,EF->BLF", h_BLE, w["w_gate"])
        partial["up"] = mm("BLE,EF->BLF", h_BLE, w["w_up"])
    if attn:
        partial["q"] = mm("BLE,EHD->BLHD", h_BLE, w["w_q"]).reshape(B, L, -1)
        if not cfg.multiquery:  # multihead K, V are split over heads like Q
            partial["k"] = mm("BLE,EKD->BLKD", h_BLE, w["w_k"]).reshape(B, L, -1)
            partial["v"] = mm("BLE,EKD->BLKD", h_BLE, w["w_v"]).reshape(B, L, -1)
    # 3. one reduce-scatter(x) for all of them -> F and H split over (z, y, x)
    summed = dict(zip(partial, c.fused_reduce_scatter(ctx, list(partial.values()), ("x",))))
    back = {}
    if ffn:
        # 4. nonlinearity, on [B, L, F/(XYZ)]
        back["act"] = ffn_act(cfg, summed.get("gate"), summed["up"])
    if attn:
        pos_L = pos + jnp.arange(L)
        if cfg.multiquery:  # the one K/V head: all-reduce(x) of B·L·2·D
            kv_BLKD = jnp.concatenate([mm("BLE,EKD->BLKD", h_BLE, w["w_k"]),
                                       mm("BLE,EKD->BLKD", h_BLE, w["w_v"])], axis=2)
            kv_BLKD = c.all_reduce(ctx, kv_BLKD, ("x",))
            k_BLKD, v_BLKD = kv_BLKD[:, :, :1], kv_BLKD[:, :, 1:]
        else:
            k_BLKD, v_BLKD = (summed[t].reshape(B, L, -1, cfg.D) for t in "kv")
        q_BLHD = rope(summed["q"].reshape(B, L, -1, cfg.D), pos_L)
        o_BLHD, cache = ctx.attention.attend(ctx, q_BLHD, rope(k_BLKD, pos_L), v_BLKD, cache, pos)
        back["o"] = o_BLHD.reshape(B, L, -1)
    # 5. one all-gather(x) for the FFN activation and the attention output
    back = dict(zip(back, c.fused_all_gather(ctx, list(back.values()), ("x",))))
    # 6. partial sums over yz: [B, L, E/X]
    out_BLE = 0
    if ffn:
        out_BLE = out_BLE + mm("BLF,FE->BLE", back["act"], w["w_down"])
    if attn:
        out_BLE = out_BLE + mm("BLHD,HDE->BLE", back["o"].reshape(B, L, -1, cfg.D), w["w_o"])
    # 7. reduce-scatter(yz): BLE_x -> BLE_xyz
    return x_BLE + c.reduce_scatter(ctx, out_BLE, YZ, axis=2), cache


def collectives(cfg, mesh_shape, batch, tokens, a, weights, attention) -> list:
    """Every collective of one layer, per chip (bytes under tpuinfer.terms' convention)."""
    X, Y, Z = mesh_shape
    BL, n_zy = batch * tokens, Y * Z
    passes = [(True, True)] if cfg.parallel_block else [(True, False), (False, True)]
    out = []
    for attn, ffn in passes:
        del weights  # the weights never move in this layout
        down = (cfg.F if ffn else 0) + (cfg.H * cfg.D if attn else 0)
        up = ((2 if cfg.gated_ffn else 1) * cfg.F if ffn else 0) + (
            (cfg.H * cfg.D * (1 if cfg.multiquery else 3)) if attn else 0)
        out += c.collective("all-gather", YZ, mesh_shape, BL * cfg.E / X * a, 1,
                            "1. BLE_xyz -> BLE_x")
        out += c.collective("all-reduce", ("x",), mesh_shape, BL * 4, 1,
                            "RMS-norm sum of squares, B·L f32")
        out += c.collective("reduce-scatter", ("x",), mesh_shape, BL * up / n_zy * a, 1,
                            "3. BLF_yz, BLH_yzD partial-sum(x) -> split over x")
        if attn:
            if cfg.multiquery:
                out += c.collective("all-reduce", ("x",), mesh_shape, BL * 2 * cfg.D * a, 1,
                                    "multiquery K, V: BLKD partial-sum(x)")
            out += attention.collectives(cfg, AXES, mesh_shape, batch, tokens, a)
        out += c.collective("all-gather", ("x",), mesh_shape, BL * down / n_zy * a, 1,
                            "5. BLF_xyz, BLH_xyzD -> split over yz")
        out += c.collective("reduce-scatter", YZ, mesh_shape, BL * cfg.E / X * a, 1,
                            "7. BLE_x partial-sum(yz) -> BLE_xyz")
    return out


def check(cfg, mesh_shape, batch):
    X, Y, Z = mesh_shape
    pad = "or pad the heads as the paper pads PaLM 540B's 48 to 64 (palm-540b-64heads)"
    c.require_divides("E", cfg.E, ("x", "y", "z"), mesh_shape, NAME)
    c.require_divides("F", cfg.F, ("x", "y", "z"), mesh_shape, NAME, "or pad F")
    c.require_divides("H", cfg.H, ("x", "y", "z"), mesh_shape, NAME, pad)
