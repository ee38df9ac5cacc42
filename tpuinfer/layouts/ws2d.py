"""2D weight-stationary feed-forward layout (with attention fused into it, PaLM parallel block).

Weights `E_xF_yz`, `F_yzE_x` (and `E_xH_yzD`, `H_yzDE_x` for attention); activations between
layers `BLE_xyz`. Within this file the F and H splits over y, z are written `_zy` (z major),
so that a weight-gathered layout gathering over y alone still receives one contiguous block.

1. all-gather(yz): `BLE_xyz` -> `BLE_x`
2. ·`E_xF_yz` (and ·`E_xH_yzD`) -> `BLF_yz`, `BLH_yzD` partial-sum over x
3. reduce-scatter(x) -> `BLF_xyz`, `BLH_xyzD`    (one collective for W_gate, W_up and W_q;
   the RMS-norm's sum of squares, B·L, and K, V where they cannot split over x too, ride
   along in X copies so that every chip of x receives their full sum: no separate
   all-reduce. With bf16 activations the sum of squares stays f32, as in the reference:
   all-reduce(x) of B·L f32)
   attention on H/n heads per chip (`attn_heads`), or moved to batch (`attn_batch`)
4. nonlinearity
5. all-gather(x) -> `BLF_yz`, `BLH_yzD`          (one collective for the FFN and attention)
6. ·`F_yzE_x` + ·`H_yzDE_x` -> `BLE_x` partial-sum over yz
7. reduce-scatter(yz) -> `BLE_xyz`

Communication per layer 2·B·L·(E/X + F/(YZ)) elements; the X that minimises it, and the chip
count past which it moves less than 1D's, are in `tpuinfer.theory` (chapter 4 of the book
derives them).

K/V heads: `E_xK_pD`, p the longest prefix of zy whose chip count divides K (`kv_axes`).
Multihead K, V split over zy like Q and are reduce-scattered over x with it (K/(XYZ) heads a
chip). Where K cannot split over all of zyx (multiquery's one head; grouped-query with fewer
K/V heads than chips), each chip of x needs its K/|p| heads whole: they ride along in step 3's
X copies, 2·(K/|p|)·D per row, and every chip of x holds the same heads.
"""
from __future__ import annotations

import itertools

from ..weight_formats import BYTES
from . import _common as c
from ._common import ZY, stored_kv_axes, stored_specs  # F and H split over (z, y), stored
from .interface import Axes

NAME = "ws2d"
AXES = Axes(batch=(), embed=("x", "y", "z"), heads=("z", "y", "x"))
GATHER: tuple[str, ...] = ()  # weights never move
YZ = ("y", "z")  # the residual's E splits over x then (y, z): the all-gather and reduce-scatter
# E stays split over x in the matmuls (step 1 gathers it over y, z only); the FFN hidden is
# split over the heads axes less x. `step_terms` sizes the largest activation from this.
E_STAYS_SPLIT = ("x",)


def kv_reduce_scattered(cfg, mesh_shape) -> bool:
    """Whether K, V split over x too in step 3 (multihead; grouped-query whose K divides by
    every chip of zyx), rather than riding along whole in its X copies."""
    if cfg.K == 1 or stored_kv_axes(cfg, mesh_shape) != ZY:
        return False
    # multihead's H divides by every chip (`check`); a grouped K/|zy| must divide by X
    return cfg.K == cfg.H or (cfg.K // c.group_size(mesh_shape, ZY)) % mesh_shape[0] == 0


def kv_axes(ctx) -> tuple[str, ...]:
    """The axes a chip's K/V heads split over in attention: p, and x once reduce-scattered."""
    p = stored_kv_axes(ctx.cfg, ctx.mesh_shape)
    return p + ("x",) if kv_reduce_scattered(ctx.cfg, ctx.mesh_shape) else p


def layer_specs(cfg, mesh_shape=None) -> dict:
    specs = stored_specs(cfg, mesh_shape)
    return specs | {n: ("x",) for n in c.norm_names(cfg)}  # the norm runs on BLE_x


def block(ctx, x_BLE, w, cache, pos):
    return c.through_passes(_pass, ctx, x_BLE, w, cache, pos)


def _pass(ctx, x_BLE, w, cache, pos, norm, attn, ffn):
    # JAX, imported when the engine traces a step: the planner reads this file's specs and
    # terms without it
    import jax.numpy as jnp

    from ..model import ffn_act, mm, rms_factor, rope, sum_of_squares  # JAX: as above
    from . import looped  # JAX: as above
    from ._spmd import (all_gather, all_reduce, fused_all_gather,  # JAX: as above
                        fused_reduce_scatter, reduce_scatter)

    # x_BLE here: [B, L, E/(XYZ)]
    cfg = ctx.cfg
    B, L = x_BLE.shape[:2]

    def project(row_start, h_piece):
        """This piece of E_x's partial products, flattened to [B, L, N] (the norm's scale
        applied; its 1/rms, one number per token, once the sum of squares is summed)."""
        n = h_piece.shape[-1]
        hs = h_piece * looped.rows(w[norm], row_start, n).astype(h_piece.dtype)
        out = {"ss": sum_of_squares(h_piece)}
        mats = ([("gate", "BLE,EF->BLF")] if ffn and cfg.gated_ffn else []) + (
            [("up", "BLE,EF->BLF")] if ffn else []) + (
            [("q", "BLE,EHD->BLHD"), ("k", "BLE,EKD->BLKD"), ("v", "BLE,EKD->BLKD")]
            if attn else [])
        for t, eq in mats:
            out[t] = mm(eq, hs, looped.rows(w["w_" + t], row_start, n)).reshape(B, L, -1)
        return out

    # 1. all-gather(yz): BLE_xyz -> BLE_x, feeding every input projection (2. -> partial sums
    #    over x). Looped, the E chunks travel the ring of yz, each multiplied in turn.
    if ctx.looped and ctx.size(YZ) > 1:
        partial = looped.allgather_matmul(x_BLE, YZ, ctx.size(YZ), project, ctx.bidirectional)
    else:
        partial = project(0, all_gather(ctx, x_BLE, YZ, axis=2))
    ss_BL1 = partial.pop("ss")  # f32, as the reference keeps it
    # In f32 the norm's sum of squares rides in step 3's reduce-scatter; with bf16 activations
    # that would round it to bf16, so it is all-reduced apart, in f32 (B·L numbers).
    ride = x_BLE.dtype == jnp.float32
    kv_whole = attn and not kv_reduce_scattered(cfg, ctx.mesh_shape)
    if kv_whole:  # the chip's K/|p| K/V heads are needed whole on every chip of x
        kv = [partial.pop("k"), partial.pop("v")]
    # 3. one reduce-scatter(x) for all of them -> F and H split over (z, y, x). What every chip
    #    of x needs whole (the norm's sum of squares, and K/V heads that cannot split over x:
    #    B·L·(2·(K/|p|)·D + 1) partial sums) rides along as X copies, one in each chip's
    #    chunk, so this same reduce-scatter hands every chip the full sum: no all-reduce,
    #    whose latency a low-batch decode step could not hide.
    whole = ([ss_BL1] if ride else []) + (kv if kv_whole else [])
    if whole:
        partial["whole"] = jnp.tile(jnp.concatenate(whole, -1), (1, 1, ctx.size(("x",))))
    summed = dict(zip(partial, fused_reduce_scatter(ctx, list(partial.values()), ("x",))))
    if whole:
        cuts = list(itertools.accumulate(t.shape[-1] for t in whole))[:-1]
        whole = jnp.split(summed.pop("whole"), cuts, axis=-1)
        ss_BL1, kv = (whole[0], whole[1:]) if ride else (ss_BL1, whole)
    if not ride:
        ss_BL1 = all_reduce(ctx, ss_BL1, ("x",))
    inv_BL1 = rms_factor(ss_BL1, cfg.E)
    summed = {t: (v * inv_BL1).astype(v.dtype) for t, v in summed.items()}
    back = {}
    if ffn:
        # 4. nonlinearity, on [B, L, F/(XYZ)]
        back["act"] = ffn_act(cfg, summed.get("gate"), summed["up"])
    if attn:
        pos_L = pos + jnp.arange(L)
        if kv_whole:
            k_BLKD, v_BLKD = ((t * inv_BL1).astype(x_BLE.dtype).reshape(B, L, -1, cfg.D)
                              for t in kv)
        else:
            k_BLKD, v_BLKD = (summed[t].reshape(B, L, -1, cfg.D) for t in "kv")
        q_BLHD = rope(summed["q"].reshape(B, L, -1, cfg.D), pos_L)
        o_BLHD, cache = ctx.attention.attend(ctx, q_BLHD, rope(k_BLKD, pos_L), v_BLKD, cache, pos)
        back["o"] = o_BLHD.reshape(B, L, -1)
    # 5. one all-gather(x) for the FFN activation and the attention output
    back = dict(zip(back, fused_all_gather(ctx, list(back.values()), ("x",))))
    o_BLHD = back["o"].reshape(B, L, -1, cfg.D) if attn else None

    def produce(col_start, n):
        """6. partial sums over yz of output columns [col_start, col_start + n) of E_x."""
        out_BLE = 0
        if ffn:
            out_BLE = out_BLE + mm("BLF,FE->BLE", back["act"], looped.cols(w["w_down"], col_start, n))
        if attn:
            out_BLE = out_BLE + mm("BLHD,HDE->BLE", o_BLHD, looped.cols(w["w_o"], col_start, n))
        return out_BLE

    # 7. reduce-scatter(yz): BLE_x -> BLE_xyz. Looped, each chip's accumulator travels the
    #    ring of yz, every chip adding its part for the chunk it is heading to.
    if ctx.looped and ctx.size(YZ) > 1:
        return x_BLE + looped.matmul_reducescatter(produce, YZ, ctx.size(YZ), x_BLE.shape[-1],
                                                   ctx.bidirectional), cache
    return x_BLE + reduce_scatter(ctx, produce(0, cfg.E // ctx.size(("x",))), YZ, axis=2), cache


def collectives(step) -> list:
    """Every collective of one layer, per chip (bytes under tpuinfer.terms' convention).
    Looped (`step.ctx.looped`, `.bidirectional`): steps 1 and 7 become collective permutes
    round yz, each round beside a partial matmul of steps 2 and 6 (one E/(XYZ) slice of their
    contraction or output columns)."""
    cfg, mesh_shape, a = step.cfg, step.mesh_shape, step.act_bytes
    X, Y, Z = mesh_shape
    BL, n_zy = step.batch * step.tokens, Y * Z
    wb = BYTES[step.weights]  # the weights never move; the looped rings read them as they go
    loop = (step.ctx.looped, step.ctx.bidirectional)
    out = []
    kv_split = kv_reduce_scattered(cfg, mesh_shape)
    for attn, ffn in c.passes(cfg):
        down = (cfg.F if ffn else 0) + (cfg.H * cfg.D if attn else 0)
        up = ((2 if cfg.gated_ffn else 1) * cfg.F if ffn else 0) + (
            cfg.H * cfg.D + (2 * cfg.K * cfg.D if kv_split else 0) if attn else 0)
        # K/V heads that cannot split over x: each chip of yz's K/|p|, whole on every chip of x
        kv = (2 * cfg.K // c.group_size(mesh_shape, stored_kv_axes(cfg, mesh_shape)) * cfg.D
              if attn and not kv_split else 0)
        ride = a == 4  # the norm's f32 sum of squares rides along only in f32
        whole = (1 if ride else 0) + kv  # X copies ride along
        w_in = cfg.E / X * (up / n_zy + kv)  # 2.'s matmul: [B·L, E/X] by [E/X, up/YZ + 2D]
        out += c.gather_or_ring("all-gather", YZ, mesh_shape, BL * cfg.E / X * a,
                                ("1. BLE_xyz -> BLE_x",
                                 "1. BLE_xyz chunks fed to the input matmuls"), itemsize=a,
                                looped=loop, matmul=(2 * BL * w_in, w_in * wb))
        out += c.collective("reduce-scatter", ("x",), mesh_shape,
                            BL * (up / n_zy + X * whole) * a, 1,
                            "3. BLF_yz, BLH_yzD partial-sum(x) -> split over x, with X copies "
                            "of the norm's sum of squares and the K, V heads held whole",
                            itemsize=a)
        if not ride:
            out += c.collective("all-reduce", ("x",), mesh_shape, BL * 4, 1,
                                "3. the norm's sum of squares, B·L f32 (bf16 would round it)",
                                itemsize=4)
        if attn:
            out += step.ctx.attention.collectives(step)
        out += c.collective("all-gather", ("x",), mesh_shape, BL * down / n_zy * a, 1,
                            "5. BLF_xyz, BLH_xyzD -> split over yz", itemsize=a)
        w_out = down / n_zy * cfg.E / X  # 6.'s matmul: [B·L, down/YZ] by [down/YZ, E/X]
        out += c.gather_or_ring("reduce-scatter", YZ, mesh_shape, BL * cfg.E / X * a,
                                ("7. BLE_x partial-sum(yz) -> BLE_xyz",
                                 "7. BLE_xyz accumulators of the output matmuls"), itemsize=a,
                                looped=loop, matmul=(2 * BL * w_out, w_out * wb))
    return out


def check(step):
    cfg, mesh_shape = step.cfg, step.mesh_shape
    c.require_divides("E", cfg.E, ("x", "y", "z"), mesh_shape, NAME)
    c.require_divides("F", cfg.F, ("x", "y", "z"), mesh_shape, NAME, "or pad F")
    c.require_heads(cfg, ("x", "y", "z"), mesh_shape, NAME)
    c.require_groups(cfg, AXES.heads, mesh_shape, NAME)
