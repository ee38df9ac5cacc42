"""The mixture-of-experts block's local math: route, dispatch, the experts, combine.

The reference model (`tpuinfer.model`) and every expert-parallel layout (`tpuinfer.layouts.
_experts`) run these same functions; a layout differs from the reference only in the
collectives between them. Letters: B sequences, L tokens, E d_model, M experts, C slots per
expert per sequence (`tpuinfer.experts.capacity`), R the k routes of a token, F an expert's
hidden size.

1. route: router logits `BLE,EM->BLM` in f32; each token's k largest, their weights the softmax
   over those k (Mixtral's softmax-then-renormalise, the same numbers); each route's place in
   its expert's queue of its sequence, in token order; a route past C is dropped.
2. dispatch: each kept route's token copied into its expert's slot, `[B, M, C, E]` (a scatter:
   the buffer is what an all-to-all moves, so nothing here is a matmul).
3. the experts: `BMCE,MEF->BMCF` (gate and up), the nonlinearity, `BMCF,MFE->BMCE`.
4. combine: each token's k outputs gathered back from their slots, weighted and summed.

Empty slots stay zero through the experts (a SwiGLU and a bias-free GELU block send 0 to 0), so
a slot nobody filled adds nothing anywhere.

Drops are counted while a step is traced (`counting_drops`), so neither the reference forward
nor a layout's block changes shape to report them.
"""
from __future__ import annotations

import contextlib
import contextvars
from typing import NamedTuple

import jax
import jax.numpy as jnp

from .experts import capacity
from .weight_formats import QWeight


class Routes(NamedTuple):
    """Where each of a token's k routes goes: [B, L, R] each."""
    expert_BLR: jax.Array  # int32, the expert
    slot_BLR: jax.Array  # int32, its place in that expert's queue of the sequence
    kept_BLR: jax.Array  # bool, within the capacity C
    gate_BLR: jax.Array  # f32, its weight in the token's output (0 where dropped)
    capacity: int  # C


def route(cfg, w_router_EM, h_BLE) -> Routes:
    """Step 1 for the tokens of whole sequences (a layout holds whole sequences where it
    routes, so its queues are the reference's)."""
    # f32 logits, products and sums (bf16 inputs are exact in f32): fewer near-ties for top-k
    # to break apart. (XLA:CPU has no bf16 x bf16 -> f32 dot to ask for with
    # preferred_element_type.)
    h_BLE32 = h_BLE.astype(jnp.float32)
    if isinstance(w_router_EM, QWeight):  # int8: the scale per expert after the matmul
        logits_BLM = jnp.einsum("BLE,EM->BLM", h_BLE32, w_router_EM.q.astype(jnp.float32))
        logits_BLM = logits_BLM * w_router_EM.scale.astype(jnp.float32)
    else:
        logits_BLM = jnp.einsum("BLE,EM->BLM", h_BLE32, w_router_EM.astype(jnp.float32))
    top_BLR, expert_BLR = jax.lax.top_k(logits_BLM, cfg.top_k)  # ties: the lower expert first
    gate_BLR = jax.nn.softmax(top_BLR, axis=-1)
    B, L, R = expert_BLR.shape
    # a route's place in its expert's queue: how many routes of its sequence went there before
    # it, counting token by token (a token's own routes go to distinct experts)
    chosen_BNM = jax.nn.one_hot(expert_BLR.reshape(B, L * R), cfg.n_experts, dtype=jnp.int32)
    before_BNM = jnp.cumsum(chosen_BNM, axis=1) - chosen_BNM
    slot_BLR = jnp.sum(before_BNM * chosen_BNM, axis=-1).reshape(B, L, R)
    C = capacity(cfg, L)
    kept_BLR = slot_BLR < C
    return Routes(expert_BLR.astype(jnp.int32), slot_BLR.astype(jnp.int32), kept_BLR,
                  jnp.where(kept_BLR, gate_BLR, 0.0), C)


def dropped(r: Routes):
    """Routes over capacity, per sequence: [B] int32."""
    return jnp.sum(~r.kept_BLR, axis=(1, 2), dtype=jnp.int32)


def dispatch(h_BLE, r: Routes, n_experts: int):
    """Step 2: [B, M, C, E], each kept route's token in its slot, zeros elsewhere."""
    B, L, E = h_BLE.shape
    R = r.expert_BLR.shape[-1]
    b_BLR = jnp.broadcast_to(jnp.arange(B)[:, None, None], (B, L, R))
    x_BLRE = jnp.broadcast_to(h_BLE[:, :, None, :], (B, L, R, E))
    # a dropped route points past the buffer, and mode="drop" leaves it out
    slot_BLR = jnp.where(r.kept_BLR, r.slot_BLR, r.capacity)
    x_BMCE = jnp.zeros((B, n_experts, r.capacity, E), h_BLE.dtype)
    return x_BMCE.at[b_BLR, r.expert_BLR, slot_BLR].set(x_BLRE, mode="drop")


def expert_mm(eq: str, x, w):
    """`BMCE,MEF->BMCF` or `BMCF,MFE->BMCE` with the expert's weight, which may be int8 (its
    bf16 scale per output channel, [M, out], applied to the f32 accumulator). The int8 matmul
    takes f32 operands: XLA:CPU runs no batched bf16 x bf16 -> f32 dot, and bf16 activations
    times int8 weights are exact in f32, so the products and the f32 sums are the same."""
    if isinstance(w, QWeight):
        acc = jnp.einsum(eq, x.astype(jnp.float32), w.q.astype(jnp.float32))
        return (acc * w.scale.astype(jnp.float32)[None, :, None, :]).astype(x.dtype)
    return jnp.einsum(eq, x, w.astype(x.dtype))


def combine(y_BMCE, r: Routes):
    """Step 4: each token's routes gathered from their slots and weighted: [B, L, E] (E as the
    buffer holds it: a layout's share of it)."""
    B, L, R = r.expert_BLR.shape
    b_BLR = jnp.broadcast_to(jnp.arange(B)[:, None, None], (B, L, R))
    y_BLRE = y_BMCE[b_BLR, r.expert_BLR, jnp.minimum(r.slot_BLR, r.capacity - 1)]
    # a dropped route's gate is 0: its gathered slot (someone else's) counts for nothing
    return jnp.sum(y_BLRE * r.gate_BLR[..., None].astype(y_BLRE.dtype), axis=2)


# ---- counting drops while a step is traced ------------------------------------------------------
_DROPS: contextvars.ContextVar[list | None] = contextvars.ContextVar("tpuinfer_drops",
                                                                     default=None)


@contextlib.contextmanager
def counting_drops():
    """Inside, every MoE layer traced appends its routes dropped per sequence ([B] int32, or a
    layout's local [B/|e|]) to the list this yields: a step sums them into an output of its own."""
    drops: list = []
    token = _DROPS.set(drops)
    try:
        yield drops
    finally:
        _DROPS.reset(token)


def record_drops(r: Routes) -> None:
    """Called by an MoE layer as it is traced: its drops, to `counting_drops`' list if one is
    open (the plain `model.forward` opens none, and counts nothing)."""
    drops = _DROPS.get()
    if drops is not None:
        drops.append(dropped(r))
