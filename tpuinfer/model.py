"""The reference model: plain, unsharded JAX. The truth every layout is checked against.

A PaLM parallel block (one RMS-norm feeding attention and a SwiGLU feed-forward, summed into the
residual) or, for MT-NLG, a serial block; in place of the feed-forward, a mixture of experts
(`tpuinfer.moe`: Mixtral, Qwen3); multiquery (K = 1), grouped-query or multihead
attention; RoPE; no biases; the input embedding shared with the output projection (PaLM) or an
output table of its own (`unembed`, Llama); a KV cache in the activation dtype, bf16, int8 with
a scale per token and head, or fp8 (`tpuinfer.kv_formats`).

The per-chip math of every layout calls the local functions here (`rms_norm`, `rope`,
`attend`, `ffn_act`, `mm`), so a layout differs from the reference only in its collectives.
Layers run as a Python loop over per-layer weights: on an H200 (JAX 0.11.2) a batch-1 SwiGLU
stack under a plain `lax.scan` read its weights at 32% of HBM bandwidth, unrolled at 96%.
"""
from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

from . import kv_formats, moe
from .config import ModelConfig
from .quant import QWeight, quantize
from .shapes import CONTRACT, QUERY_BLOCK, output_table, param_shapes

EPS = 1e-6
ROPE_BASE = 10_000.0


# ---- parameters ---------------------------------------------------------------------------
def _init_one(key, name: str, shape, dtype):
    if "norm" in name:
        # around 1 rather than exactly 1, so a mis-sharded scale shows in the comparison
        return (1.0 + 0.1 * jax.random.normal(key, shape)).astype(dtype)
    fan_in = math.prod(shape[d] for d in CONTRACT[name])  # the inputs each output sums
    return (jax.random.normal(key, shape) / jnp.sqrt(fan_in)).astype(dtype)


def init_params(cfg: ModelConfig, seed: int = 0, dtype=jnp.float32, shardings=None) -> dict:
    """Random parameters. With `shardings` (a pytree of `NamedSharding`s matching
    `param_shapes`, e.g. from `tpuinfer.engine.param_shardings`) each array is created
    directly in its shards: no host ever holds a whole matrix, as on a multi-host slice."""
    root, dtype = jax.random.key(seed), jnp.dtype(dtype)
    if shardings is None:
        top, layer = _host_initializers(cfg, dtype)
        return {**top(root), "layers": [layer(root, i) for i in range(cfg.n_layers)]}

    def make(key, name, shape, at):
        return _initializer(name, tuple(shape), dtype, at(shardings))(key)
    return {**_top(cfg, root, make), "layers": [_layer(cfg, root, i, make)
                                                for i in range(cfg.n_layers)]}


# Each parameter's key: `fold_in(root, ...)` of its own number (a layer's: 100·layer + its
# place in the layer's sorted names). `make(key, name, shape, at)` creates it; `at` picks its
# entry from a pytree shaped as the parameters (its sharding).
def _top(cfg: ModelConfig, root, make) -> dict:
    """The parameters outside the layers."""
    shapes = param_shapes(cfg)
    names = ["embed", "final_norm"] + (["unembed"] if "unembed" in shapes else [])
    return {name: make(jax.random.fold_in(root, 10**6 + n), name, shapes[name],
                       lambda t, name=name: t[name]) for n, name in enumerate(names)}


def _layer(cfg: ModelConfig, root, i, make) -> dict:
    """Layer i's parameters (every layer has the same names and shapes)."""
    layer = param_shapes(cfg)["layers"][0]
    return {name: make(jax.random.fold_in(root, 100 * i + j), name, shape,
                       lambda t, name=name: t["layers"][i][name])
            for j, (name, shape) in enumerate(sorted(layer.items()))}


@functools.lru_cache(maxsize=16)
def _host_initializers(cfg: ModelConfig, dtype):
    """Two compiled programs, the parameters outside the layers and one layer (the layer's
    number an argument, so every layer runs the same program): a few dispatches instead of
    one per parameter. On 2 cores, in a new process after `tpuinfer warmup`, the tiny model's
    18 parameters as 18 programs read back from the persistent cache took 0.73 s under
    cProfile; as these two, 0.42 s without it. One program for the whole model compiled
    every layer's code again: from an empty cache, 15.4 s for the 8-layer mini model
    instead of 2.1 s."""
    def make(key, name, shape, at):
        return _init_one(key, name, tuple(shape), dtype)
    return (jax.jit(lambda root: _top(cfg, root, make)),
            jax.jit(lambda root, i: _layer(cfg, root, i, make)))


@functools.lru_cache(maxsize=128)  # bounded: a session over many meshes stays small
def _initializer(name: str, shape, dtype, sharding):
    """One compiled initializer per kind of parameter, created in its shards: the layers share
    them, and a second `init_params` compiles nothing."""
    return jax.jit(functools.partial(_init_one, name=name, shape=shape, dtype=dtype),
                   out_shardings=sharding)


def cache_arrays(cfg: ModelConfig, batch: int, max_len: int, dtype=jnp.float32,
                 kv: str | None = None) -> dict:
    """One layer's cache, name -> (shape, dtype): K and V, [B, S, K, D], in the KV format `kv`
    (None: `dtype`, the activations'); an int8 cache adds their bf16 scales, [B, S, K]."""
    fmt = kv_formats.resolve(kv, jnp.dtype(dtype).itemsize)
    shape = (batch, max_len, cfg.K, cfg.D)
    out = {t: (shape, jnp.dtype(fmt.dtype)) for t in "kv"}
    if fmt.scale_bytes:
        out |= {f"{t}_scale": (shape[:3], jnp.dtype(kv_formats.SCALE_DTYPE)) for t in "kv"}
    return out


def init_cache(cfg: ModelConfig, batch: int, max_len: int, dtype=jnp.float32,
               kv: str | None = None) -> list:
    """One layer's cache (`cache_arrays`) per layer, zeros."""
    arrays = cache_arrays(cfg, batch, max_len, dtype, kv)
    return [{name: jnp.zeros(shape, dt) for name, (shape, dt) in arrays.items()}
            for _ in range(cfg.n_layers)]


def kv_format_of(cache: list) -> str:
    """The KV format a cache is held in (`kv_formats.FORMATS`), from its arrays."""
    layer = cache[0]
    return "int8" if "k_scale" in layer else next(
        f.name for f in kv_formats.FORMATS.values() if jnp.dtype(f.dtype) == layer["k"].dtype)


# ---- local math, shared by the reference and every layout ---------------------------------
def mm(eq: str, x, w):
    """einsum with a weight that may be int8. A weight contracted over several dimensions
    (W_o over H and D) is contracted as one, as stored (a free reshape): einsum may otherwise
    take them in its own order and transpose the matrix, a copy of it every step. For int8
    the bf16 scale per output channel is applied after the matmul, as in the paper, so the
    matmul itself reads int8 weights; it multiplies the f32 accumulator (as a TPU's matrix
    unit keeps it) and the product is rounded to the activation dtype once, not twice."""
    (xs, ws), out = eq.split("->")[0].split(","), eq.split("->")[1]
    contract = "".join(ch for ch in ws if ch in xs)
    k = len(contract)
    if k > 1 and xs.endswith(contract) and ws.startswith(contract):
        x = x.reshape(x.shape[:-k] + (-1,))
        flat = lambda a: a.reshape((-1,) + a.shape[k:])
        w = QWeight(flat(w.q), w.scale) if isinstance(w, QWeight) else flat(w)
        eq = f"{xs[:-k]}c,c{ws[k:]}->{out}"  # c: the contracted dimensions, merged
    if isinstance(w, QWeight):
        acc = jnp.einsum(eq, x, w.q.astype(x.dtype), preferred_element_type=jnp.float32)
        return (acc * w.scale.astype(jnp.float32)).astype(x.dtype)
    return jnp.einsum(eq, x, w.astype(x.dtype))


def sum_of_squares(x_BLE):
    """Per token, in f32: [B, L, 1]."""
    return jnp.sum(jnp.square(x_BLE.astype(jnp.float32)), axis=-1, keepdims=True)


def rms_factor(ss_BL1, d_model: int):
    """1/rms per token from its sum of squares over all E. One number per token, so it
    commutes with any matmul over E: a layout may apply it after the matmul."""
    return jax.lax.rsqrt(ss_BL1 / d_model + EPS)


def rms_norm(x_BLE, scale_E, d_model: int, psum_axes: tuple[str, ...] = ()):
    """RMS-norm over E. When E is split over `psum_axes` (inside a layout), the sum of squares
    is all-reduced over them: B·L numbers, a small latency-bound collective."""
    ss_BL1 = sum_of_squares(x_BLE)
    if psum_axes:
        ss_BL1 = jax.lax.psum(ss_BL1, psum_axes)
    inv = rms_factor(ss_BL1, d_model)
    return (x_BLE * inv).astype(x_BLE.dtype) * scale_E.astype(x_BLE.dtype)


def rope(x_BLHD, pos_L):
    """Rotary position embedding (rotate-half form) at absolute positions `pos_L`."""
    D = x_BLHD.shape[-1]
    freq = ROPE_BASE ** (-jnp.arange(0, D, 2, dtype=jnp.float32) / D)
    angle_LD = pos_L.astype(jnp.float32)[:, None] * freq[None, :]
    cos, sin = jnp.cos(angle_LD)[None, :, None, :], jnp.sin(angle_LD)[None, :, None, :]
    x1, x2 = jnp.split(x_BLHD.astype(jnp.float32), 2, axis=-1)
    out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return out.astype(x_BLHD.dtype)


def write_cache(cache_BSKD, new_BLKD, pos):
    return jax.lax.dynamic_update_slice(cache_BSKD, new_BLKD.astype(cache_BSKD.dtype),
                                        (0, pos, 0, 0))


def write_kv(cache: dict, k_BLKD, v_BLKD, pos) -> dict:
    """One layer's cache with this step's K and V written at positions pos.., in the cache's
    own format: int8 quantized per token and head (their scales written beside them), fp8
    clipped to e4m3's range and cast, anything else cast."""
    out = {}
    for t, new_BLKD in (("k", k_BLKD), ("v", v_BLKD)):
        if f"{t}_scale" in cache:  # int8 over D, as a weight over its contracted dimension
            new_BLKD, scale_BLK = quantize(new_BLKD, (3,), "int8")
            out[f"{t}_scale"] = jax.lax.dynamic_update_slice(cache[f"{t}_scale"], scale_BLK,
                                                             (0, pos, 0))
        elif cache[t].dtype == jnp.float8_e4m3fn:
            new_BLKD = jnp.clip(new_BLKD, -kv_formats.FP8_MAX, kv_formats.FP8_MAX)
        out[t] = write_cache(cache[t], new_BLKD, pos)
    return out


def attend(q_BLHD, cache: dict, pos):
    """Causal attention of L queries at positions pos.. against a layer's cache of S
    positions ({'k', 'v'} [B, S, K, D], and an int8 cache's scales). Query head j reads K/V
    head j·K/H: K = 1 is multiquery (every query head reads the one K/V head), K = H
    multihead, between them grouped-query attention. Queries go in blocks of QUERY_BLOCK, so
    the f32 scores held at once are at most B·H·QUERY_BLOCK·S."""
    L = q_BLHD.shape[1]
    if L > QUERY_BLOCK:
        return jnp.concatenate([_attend_block(q_BLHD[:, i:i + QUERY_BLOCK], cache, pos + i)
                                for i in range(0, L, QUERY_BLOCK)], 1)
    return _attend_block(q_BLHD, cache, pos)


def _attend_block(q_BLHD, cache, pos):
    k_BSKD, v_BSKD = cache["k"], cache["v"]
    B, L, H, D = q_BLHD.shape
    S, K = k_BSKD.shape[1], k_BSKD.shape[2]
    q_BLKGD = q_BLHD.reshape(B, L, K, H // K, D)
    # An int8 cache's scales (one per token and head) are applied to what the matmuls
    # produce, not to the cache: q·(k·s) = (q·k)·s for the scores, and p·(v·s) = (p·s)·v for
    # the values, so the matmuls take the int8 values themselves (converted to the activation
    # dtype: exact, |q| <= 127). XLA:CPU still converts each int8 slice in a fusion of its
    # own before the dot (it fuses no convert into a dot's operand), so on the emulated mesh
    # a step reads the int8 cache once and writes and reads its converted copy; a compiler
    # that fuses the convert into the matmul reads only the int8 bytes.
    # scores in f32 from the matmul itself (as a TPU's matrix unit accumulates), not rounded
    # to the activation dtype first
    s_BKGLS = jnp.einsum("BLKGD,BSKD->BKGLS", q_BLKGD, k_BSKD.astype(q_BLHD.dtype),
                         preferred_element_type=jnp.float32) / jnp.sqrt(jnp.float32(D))
    if "k_scale" in cache:
        s_BKGLS = s_BKGLS * _per_position(cache["k_scale"])
    q_pos_L = pos + jnp.arange(L)
    visible_LS = jnp.arange(S)[None, :] <= q_pos_L[:, None]
    s_BKGLS = jnp.where(visible_LS, s_BKGLS, -jnp.inf)
    p_BKGLS = jax.nn.softmax(s_BKGLS, axis=-1)
    if "v_scale" in cache:
        p_BKGLS = p_BKGLS * _per_position(cache["v_scale"])
    o_BLKGD = jnp.einsum("BKGLS,BSKD->BLKGD", p_BKGLS.astype(q_BLHD.dtype),
                         v_BSKD.astype(q_BLHD.dtype))
    return o_BLKGD.reshape(B, L, H, D)


def _per_position(scale_BSK):
    """[B, S, K] scales as [B, K, 1, 1, S] f32: one per position of each head's scores."""
    return jnp.transpose(scale_BSK.astype(jnp.float32), (0, 2, 1))[:, :, None, None, :]


def ffn_act(cfg: ModelConfig, gate_BLF, up_BLF):
    """SwiGLU (swish(x·W_gate) * x·W_up) for PaLM; GELU(x·W_up) for a non-gated MLP."""
    if cfg.gated_ffn:
        return jax.nn.silu(gate_BLF) * up_BLF
    return jax.nn.gelu(up_BLF)


def embed_lookup(embed_VE, tokens_BL, dtype):
    if isinstance(embed_VE, QWeight):
        return embed_VE.q[tokens_BL].astype(dtype) * embed_VE.scale[tokens_BL][..., None].astype(dtype)
    return embed_VE[tokens_BL].astype(dtype)


# ---- the reference forward ----------------------------------------------------------------
def _attention(cfg, w, h_BLE, cache, pos):
    L = h_BLE.shape[1]
    pos_L = pos + jnp.arange(L)
    q_BLHD = rope(mm("BLE,EHD->BLHD", h_BLE, w["w_q"]), pos_L)
    k_BLKD = rope(mm("BLE,EKD->BLKD", h_BLE, w["w_k"]), pos_L)
    v_BLKD = mm("BLE,EKD->BLKD", h_BLE, w["w_v"])
    cache = write_kv(cache, k_BLKD, v_BLKD, pos)
    o_BLHD = attend(q_BLHD, cache, pos)
    return mm("BLHD,HDE->BLE", o_BLHD, w["w_o"]), cache


def _ffn(cfg, w, h_BLE):
    if cfg.n_experts:
        return _mixture(cfg, w, h_BLE)
    gate_BLF = mm("BLE,EF->BLF", h_BLE, w["w_gate"]) if cfg.gated_ffn else None
    up_BLF = mm("BLE,EF->BLF", h_BLE, w["w_up"])
    return mm("BLF,FE->BLE", ffn_act(cfg, gate_BLF, up_BLF), w["w_down"])


def _mixture(cfg, w, h_BLE):
    """The mixture of experts in the reference: every expert on this device (`tpuinfer.moe`'s
    steps 1 to 4), plus the shared experts."""
    r = moe.route(cfg, w["w_router"], h_BLE)
    moe.record_drops(r)
    out_BLE = moe.combine(experts(cfg, w, moe.dispatch(h_BLE, r, cfg.n_experts)), r)
    return out_BLE + shared_experts(cfg, w, h_BLE) if cfg.shared_d_ff else out_BLE


def experts(cfg, w, x_BMCE):
    """Step 3: each expert (as many as `w` holds) on its slots, [B, M, C, E] -> [B, M, C, E]
    (a layout's F split: partial sums over it)."""
    gate_BMCF = moe.expert_mm("BMCE,MEF->BMCF", x_BMCE, w["w_expert_gate"]) \
        if cfg.gated_ffn else None
    up_BMCF = moe.expert_mm("BMCE,MEF->BMCF", x_BMCE, w["w_expert_up"])
    return moe.expert_mm("BMCF,MFE->BMCE", ffn_act(cfg, gate_BMCF, up_BMCF),
                         w["w_expert_down"])


def shared_experts(cfg, w, h_BLE):
    """The shared experts every token goes through: one feed-forward block of hidden size U."""
    gate_BLU = mm("BLE,EU->BLU", h_BLE, w["w_shared_gate"]) if cfg.gated_ffn else None
    up_BLU = mm("BLE,EU->BLU", h_BLE, w["w_shared_up"])
    return mm("BLU,UE->BLE", ffn_act(cfg, gate_BLU, up_BLU), w["w_shared_down"])


def forward(params, cfg: ModelConfig, tokens_BL, cache, pos, dtype=jnp.float32,
            last_only: bool = False):
    """Reference step: L tokens per sequence at positions pos.. (prefill: L = prompt length;
    decode: L = 1). Returns logits [B, L, V] (or [B, 1, V] for the last position only, which
    is all generation needs) and the updated cache."""
    x_BLE = embed_lookup(params["embed"], tokens_BL, dtype)
    new_cache = []
    for w, c in zip(params["layers"], cache):
        if cfg.parallel_block:
            h_BLE = rms_norm(x_BLE, w["norm"], cfg.E)
            attn_BLE, c = _attention(cfg, w, h_BLE, c, pos)
            x_BLE = x_BLE + attn_BLE + _ffn(cfg, w, h_BLE)
        else:
            attn_BLE, c = _attention(cfg, w, rms_norm(x_BLE, w["norm_attn"], cfg.E), c, pos)
            x_BLE = x_BLE + attn_BLE
            x_BLE = x_BLE + _ffn(cfg, w, rms_norm(x_BLE, w["norm_ffn"], cfg.E))
        new_cache.append(c)
    if last_only:
        x_BLE = x_BLE[:, -1:]
    h_BLE = rms_norm(x_BLE, params["final_norm"], cfg.E)
    return mm("BLE,VE->BLV", h_BLE, params[output_table(cfg)]), new_cache
