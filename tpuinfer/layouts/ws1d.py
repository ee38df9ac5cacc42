"""1D weight-stationary feed-forward layout (Megatron), with attention fused into it.

Weights `EF_xyz`, `F_xyzE` (and `EH_xyzD`, `H_xyzDE`; W_k, W_v `EK_pD`, p the longest prefix of
xyz whose chip count divides K: whole on every chip for multiquery, `EK_xyzD` for multihead,
between them for grouped-query attention); activations between layers `BLE_xyz`.

1. all-gather(xyz): `BLE_xyz` -> `BLE`
2. ·`EF_xyz` (and ·`EH_xyzD`) -> `BLF_xyz`, `BLH_xyzD`; attention on H/n heads per chip
3. nonlinearity; ·`F_xyzE` + ·`H_xyzDE` -> `BLE` partial-sum over xyz
4. reduce-scatter(xyz) -> `BLE_xyz`                (one for the FFN and attention together)

Communication per layer 2·B·L·E elements, independent of n: adding chips stops helping once
communication dominates (2D weight-stationary fixes that).
"""
from __future__ import annotations

from . import _common as c
from . import _one_dim
from .interface import Axes

NAME = "ws1d"
XYZ = ("x", "y", "z")
AXES = Axes(batch=(), embed=XYZ, heads=XYZ)
GATHER: tuple[str, ...] = ()  # weights never move
E_STAYS_SPLIT: tuple[str, ...] = ()  # step 1 gathers the whole of E


def layer_specs(cfg, mesh_shape=None) -> dict:
    kv_p = kv_axes_of(cfg, mesh_shape)
    kv = (None, kv_p, None) if kv_p else ()
    specs = {"w_q": (None, XYZ, None), "w_k": kv, "w_v": kv, "w_o": (XYZ, None, None),
             "w_up": (None, XYZ), "w_down": (XYZ, None)}
    if cfg.gated_ffn:
        specs["w_gate"] = (None, XYZ)
    return specs | {n: () for n in c.norm_names(cfg)}  # the norm runs on the gathered BLE


def kv_axes_of(cfg, mesh_shape) -> tuple[str, ...]:
    """The axes a chip's K/V heads split over, at the projections and in attention."""
    return c.kv_split(cfg, XYZ, mesh_shape)


def kv_axes(ctx) -> tuple[str, ...]:
    return kv_axes_of(ctx.cfg, ctx.mesh_shape)


def block(ctx, x_BLE, w, cache, pos):
    return _one_dim.block(ctx, x_BLE, w, cache, pos, layer_specs(ctx.cfg, ctx.mesh_shape))


def collectives(step) -> list:
    return _one_dim.collectives(step, layer_specs(step.cfg, step.mesh_shape))


def check(step):
    cfg, mesh_shape = step.cfg, step.mesh_shape
    c.require_divides("E", cfg.E, XYZ, mesh_shape, NAME)
    c.require_divides("F", cfg.F, XYZ, mesh_shape, NAME, "or pad F")
    c.require_heads(cfg, XYZ, mesh_shape, NAME)
    c.require_groups(cfg, XYZ, mesh_shape, NAME)
