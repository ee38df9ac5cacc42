"""The body shared by the expert-parallel layouts (ep-x, ep-xy, ep-xyz), for a mixture of experts.

The chips split into expert axes e (the experts split over them; each group of e runs its own
sequences) and tensor axes t, the rest (inside every expert, F splits over them; attention's
heads too). Letters: `tpuinfer.moe` (M experts, C slots per expert per sequence, R routes).

Weights: attention `EH_tD`, `H_tDE` (W_k, W_v `EK_pD`, p the longest prefix of t whose chip
count divides K), the shared experts `EU_t`, `U_tE`, each held by every group of e; the router
`EM` on every chip; the experts `M_eEF_t`, `M_eF_tE`: chip (i, j) of e and t holds expert
group i's columns j. Activations between layers `B_eLE_t`. Per layer (serial block):

a1. all-gather(t): `B_eLE_t` -> `B_eLE`                       attention, 1D over t (`_one_dim`)
a2. ·`EH_tD` -> `B_eLH_tD`; attention by heads or by batch (`attn_heads`, `attn_batch`)
a3. ·`H_tDE` -> `B_eLE` partial-sum(t); reduce-scatter(t) -> `B_eLE_t`
1. all-gather(t): `B_eLE_t` -> `B_eLE`; RMS-norm
2. route, with the whole router on every chip: each token's k experts and their weights, and
   its place in each expert's queue; whole sequences here, so the queues (and the routes
   dropped past C) are the reference's
3. dispatch, on the chip: `B_eMCE`, each kept route's token in its slot
4. all-to-all(e): `B_eMCE` -> `BM_eCE`: each chip gets every sequence's slots at its M/|e|
   experts (the slots of group i's experts travel to group i)
5. ·`M_eEF_t`, nonlinearity, ·`M_eF_tE` -> `BM_eCE` partial-sum over t; the shared experts
   ·`EU_t`, ·`U_tE` -> `B_eLE` partial-sum over t
6. reduce-scatter(t) over E, one for both: -> `BM_eCE_t`, `B_eLE_t`
7. all-to-all(e): `BM_eCE_t` -> `B_eMCE_t`: every slot back to its sequence's group
8. combine: each token's k slots, weighted and summed, -> `B_eLE_t`, into the residual

Communication per layer and chip (elements), with n_e = |e|, n_t = |t| and M·C ≈ cf·L·k:
2·(B/n_e)·L·E for attention; (B/n_e)·L·E (step 1); (B/n_e)·M·C·E and B·(M/n_e)·C·E/n_t in
the two all-to-alls (each slot's E, there and back in 1/n_t of it); B·(M/n_e)·C·E (+
(B/n_e)·L·E shared) into step 6's reduce-scatter. More expert parallelism (n_e up) holds
and reads fewer experts a chip and moves fewer bytes a chip, across more chips; more tensor
parallelism (n_t up) splits every expert instead, so every chip reads a slice of every expert
it holds, at the price of step 6 and of attention's collectives. The planner weighs the two
per phase.
"""
from __future__ import annotations

import math

from ..errors import LayoutError
from ..shapes import layer_matrices
from . import _common as c
from . import _one_dim

GATHER: tuple[str, ...] = ()  # weights never move: tokens do
E_STAYS_SPLIT: tuple[str, ...] = ()  # steps a1 and 1 gather the whole of E


def layer_specs(cfg, axes, mesh_shape=None) -> dict:
    """Partition specs of one layer: experts over e (`axes.batch`), F and heads over t."""
    e, t = c.entry(axes.batch), c.entry(axes.embed)
    kv_p = c.kv_split(cfg, axes.embed, mesh_shape)
    kv = (None, kv_p, None) if kv_p else ()
    specs = {"w_q": (None, t, None), "w_k": kv, "w_v": kv, "w_o": (t, None, None),
             "w_router": (), "w_expert_gate": (e, None, t), "w_expert_up": (e, None, t),
             "w_expert_down": (e, t, None), "w_shared_gate": (None, t),
             "w_shared_up": (None, t), "w_shared_down": (t, None)}
    # the matrices this model has (a GELU block has no gates; U = 0, no shared experts)
    return {n: specs[n] for n in layer_matrices(cfg)} | {n: () for n in c.norm_names(cfg)}


def kv_axes(ctx) -> tuple[str, ...]:
    """The axes a chip's K/V heads split over: the prefix of t K allows."""
    return c.kv_split(ctx.cfg, ctx.axes.embed, ctx.mesh_shape)


def block(ctx, x_BLE, w, cache, pos):
    # x_BLE here: [B/|e|, L, E/|t|]; steps a1-a3 are 1D weight-stationary's over t
    x_BLE, cache = _one_dim._pass(ctx, x_BLE, w, cache, pos, "norm_attn", attn=True,
                                  ffn=False)
    return _mixture(ctx, x_BLE, w), cache


def _mixture(ctx, x_BLE, w):
    # JAX, imported when the engine traces a step: the planner reads this file's specs and
    # terms without it
    import jax.numpy as jnp

    from .. import moe  # JAX: as above
    from ..model import experts, rms_norm, shared_experts  # JAX: as above
    from ._spmd import all_gather, all_to_all, reduce_scatter  # JAX: as above

    cfg, e, t = ctx.cfg, ctx.axes.batch, ctx.axes.embed
    # 1. all-gather(t): B_eLE_t -> B_eLE, normalised (E is whole: no sum to all-reduce)
    h_BLE = rms_norm(all_gather(ctx, x_BLE, t, axis=2), w["norm_ffn"], cfg.E)
    # 2. route this group's whole sequences: each route's expert, slot and weight
    r = moe.route(cfg, w["w_router"], h_BLE)
    moe.record_drops(r)
    # 3. dispatch on the chip: [B/|e|, M, C, E]
    x_BMCE = moe.dispatch(h_BLE, r, cfg.n_experts)
    # 4. all-to-all(e): expert group i's slots to group i -> [B, M/|e|, C, E]
    x_BMCE = all_to_all(ctx, x_BMCE, e, split=1, concat=0)
    # 5. this chip's experts on every sequence's slots, F split over t: partial sums over t;
    #    the shared experts on this group's tokens alike
    partial = [experts(cfg, w, x_BMCE)]
    if cfg.shared_d_ff:
        partial.append(shared_experts(cfg, w, h_BLE))
    # 6. one reduce-scatter(t) over E for both -> [B, M/|e|, C, E/|t|] (and [B/|e|, L, E/|t|])
    slots = math.prod(partial[0].shape[:3])  # B·M/|e|·C rows, then the shared B/|e|·L
    rows_RE = jnp.concatenate([p.reshape(-1, cfg.E) for p in partial], axis=0)
    rows_RE = reduce_scatter(ctx, rows_RE, t, axis=1)
    y_BMCE = rows_RE[:slots].reshape(partial[0].shape[:3] + (-1,))
    # 7. all-to-all(e): every slot back to its sequence's group -> [B/|e|, M, C, E/|t|]
    y_BMCE = all_to_all(ctx, y_BMCE, e, split=0, concat=1)
    # 8. combine each token's k routes -> [B/|e|, L, E/|t|]
    out_BLE = moe.combine(y_BMCE, r)
    if cfg.shared_d_ff:
        out_BLE = out_BLE + rows_RE[slots:].reshape(x_BLE.shape)
    return x_BLE + out_BLE


def collectives(step) -> list:
    """Every collective of one layer, per chip, under tpuinfer.terms' byte convention."""
    cfg, ms, a = step.cfg, step.mesh_shape, step.act_bytes
    e, t = step.axes.batch, step.axes.embed
    n_e, n_t = step.size(e), step.size(t)
    rows = step.sequences * step.tokens  # B/|e|·L
    C = cfg.capacity(step.tokens)
    sent = step.sequences * cfg.n_experts * C * cfg.E * a  # [B/|e|, M, C, E]
    held = step.batch * cfg.n_experts // n_e * C * cfg.E * a  # [B, M/|e|, C, E]
    shared = rows * cfg.E * a if cfg.shared_d_ff else 0
    return (c.collective("all-gather", t, ms, rows * cfg.E * a, 1, "a1. B_eLE_t -> B_eLE",
                         itemsize=a)
            + step.ctx.attention.collectives(step)
            + c.collective("reduce-scatter", t, ms, rows * cfg.E * a, 1,
                           "a3. B_eLE partial-sum(t) -> B_eLE_t", itemsize=a)
            + c.collective("all-gather", t, ms, rows * cfg.E * a, 1,
                           "1. B_eLE_t -> B_eLE, into the router", itemsize=a)
            + c.collective("all-to-all", e, ms, sent, 1, "4. experts dispatch: B_eMCE -> "
                           "BM_eCE", itemsize=a)
            + c.collective("reduce-scatter", t, ms, held + shared, 1,
                           "6. experts' BM_eCE (and the shared experts' B_eLE) "
                           "partial-sum(t) -> split over E", itemsize=a)
            + c.collective("all-to-all", e, ms, held / n_t, 1,
                           "7. experts combine: BM_eCE_t -> B_eMCE_t", itemsize=a))


def buffer_bytes(step) -> float:
    """What a chip's expert buffers hold at once at the step's peak, the capacity buffers'
    price in memory: a chip's B·(M/|e|)·C slots of E each, three times over (the slots going
    into its experts, their output partial sums, and step 6's input, copied beside the shared
    experts' rows), and the experts' hidden activations ([B, M/|e|, C, F/|t|], gate and up).
    On 2x2x2 and 1x4x2 the compiled steps' temporaries (XLA:CPU, tiny-moe, every layout and
    phase, batch 8) came to 0.80 to 1.01 times this."""
    cfg, a = step.cfg, step.act_bytes
    n_e, n_t = step.size(step.axes.batch), step.size(step.axes.embed)
    slots = step.batch * cfg.n_experts // n_e * cfg.capacity(step.tokens)
    hidden = slots * cfg.F // n_t * (2 if cfg.gated_ffn else 1) * a
    return 3 * slots * cfg.E * a + hidden


def check(step):
    cfg, ms, axes, name = step.cfg, step.mesh_shape, step.axes, step.ctx.ffn.NAME
    if not cfg.n_experts:
        raise LayoutError(f"{name} splits experts over {'·'.join(axes.batch)}, and {cfg.name} "
                          f"is a dense model (no experts); choose ws1d, ws2d, wg-x, wg-xy or "
                          f"wg-xyz, or a mixture of experts such as tiny-moe")
    if step.ctx.looped:
        raise LayoutError(f"{name} has no looped schedule (its all-to-alls are not rings of "
                          f"partial matmuls); use looped=False")
    t = axes.embed
    c.require_divides("M", cfg.n_experts, axes.batch, ms, name,
                      "or a layout of fewer expert axes (ep-x)")
    c.require_divides("E", cfg.E, t, ms, name)
    c.require_divides("F", cfg.F, t, ms, name, "or pad the experts' F")
    c.require_heads(cfg, t, ms, name)
    if cfg.shared_d_ff:
        c.require_divides("U", cfg.shared_d_ff, t, ms, name)
    c.require_groups(cfg, t, ms, name)
