"""`generate`: prefill a batch of prompts, then decode, each phase in its own layout.

Arrays are global from the start: prompts are built from per-process pieces and the KV cache
is created in its shards, so the same code runs on one process or on many (a multi-host
slice). Between the phases the weights, the cache and the next tokens are resharded to the
decode layout when it differs from prefill's. On a mesh of replicas (`make_mesh(shape,
replicas=R)`) each replica runs both layouts on its own B/R sequences.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np

from . import engine
from .config import ModelConfig
from .errors import UsageError
from .kv_formats import check_kv
from .layouts import Layout
from .mesh import mesh_shape
from .placement import global_array, to_host
from .quant import format_of, prepare


@dataclass
class Generation:
    """What `generate` returns. Arrays are host numpy, gathered from every process."""
    tokens: np.ndarray  # [B, steps] the generated tokens
    prefill_logits: np.ndarray  # [B, V] the logits after the prompt's last token
    step_logits: np.ndarray  # [B, steps, V] logits each generated token was sampled from
    cache: list = field(repr=False)  # the final KV cache (global arrays)
    timings: dict = field(default_factory=dict)  # per phase: compile_s, step_s (median), steps
    # a mixture of experts: per phase, the routes each sequence had dropped over capacity,
    # all layers and steps ({"prefill": [B], "decode": [B]}); None for a dense model
    dropped: dict | None = None


def _sample(logits_BV, key, temperature: float, top_k: int | None):
    if temperature == 0.0:
        return jnp.argmax(logits_BV, axis=-1).astype(jnp.int32)
    logits_BV = logits_BV.astype(jnp.float32) / temperature
    if top_k is not None:  # only the k likeliest tokens stay candidates
        kth_B1 = jax.lax.top_k(logits_BV, top_k)[0][:, -1:]
        logits_BV = jnp.where(logits_BV < kth_B1, -jnp.inf, logits_BV)
    return jax.random.categorical(key, logits_BV, axis=-1).astype(jnp.int32)


_sample_jit = jax.jit(_sample, static_argnames=("temperature", "top_k"))


class _Phase:
    """One phase's compiled step, run and timed."""

    def __init__(self, name, cfg, layout, mesh, weights):
        self.name, self.cfg, self.layout, self.mesh, self.weights = name, cfg, layout, mesh, weights
        self.compile_s, self.step_s, self.dropped = 0.0, [], []

    def __call__(self, params, tokens_BL, cache, pos):
        pos = jnp.int32(pos)
        exe, compile_s = engine.compiled_step(self.cfg, self.layout, self.mesh, self.weights,
                                              params, tokens_BL, cache, pos)
        self.compile_s += compile_s
        t0 = time.perf_counter()
        logits_B1V, cache, *dropped_B = exe(params, tokens_BL, cache, pos)
        jax.block_until_ready((logits_B1V, cache))
        self.step_s.append(time.perf_counter() - t0)
        self.dropped += dropped_B  # a mixture of experts' routes over capacity
        return logits_B1V, cache

    def dropped_per_sequence(self, batch: int) -> np.ndarray:
        return sum((to_host(d) for d in self.dropped), np.zeros(batch, np.int32))

    def timing(self):
        return {"layout": str(self.layout) if self.mesh is not None else "reference",
                "compile_s": self.compile_s, "steps": len(self.step_s),
                "step_s": float(np.median(self.step_s)) if self.step_s else 0.0}


def generate(params, cfg: ModelConfig, prompt_BL, steps: int, mesh=None,
             prefill: Layout = Layout("ws2d", "heads"), decode: Layout = Layout("ws2d", "batch"),
             weights: str | None = None, temperature: float = 0.0, top_k: int | None = None,
             seed: int = 0, kv: str | None = None) -> Generation:
    """Prefill `prompt_BL` (host ints [B, L]) and generate `steps` tokens per sequence.

    `mesh=None` runs the unsharded reference; otherwise the prefill and decode layouts run on
    `mesh` (a mesh of replicas too: `make_mesh(shape, replicas=R)`, each replica B/R of the
    sequences). `weights` is None (as the parameters are), "f32", "bf16", "int8" or "fp8".
    `kv` is the KV cache's format: None (the activation dtype), "bf16", "int8" (a bf16 scale
    per token and head) or "fp8" (`tpuinfer.kv_formats`); the reference runs the same cache.
    Greedy when temperature is 0; otherwise sampled with a key from `seed` (the same key on
    a mesh as in the reference), from the `top_k` likeliest tokens when given.
    """
    prompt_BL = np.asarray(prompt_BL, dtype=np.int32)
    if prompt_BL.ndim != 2 or prompt_BL.shape[1] < 1:
        raise UsageError(f"prompt must be [batch, length] token ids, got shape {prompt_BL.shape}")
    if prompt_BL.min() < 0 or prompt_BL.max() >= cfg.V:
        raise UsageError(f"prompt token ids must lie in [0, {cfg.V}) for model {cfg.name}")
    if steps < 0:
        raise UsageError(f"steps must be >= 0, got {steps}")
    if top_k is not None and not 1 <= top_k <= cfg.V:
        raise UsageError(f"top_k must lie in [1, {cfg.V}] for model {cfg.name}, got {top_k}")
    check_kv(kv)
    B, L = prompt_BL.shape
    fmt = weights or format_of(params)
    params = prepare(params, weights)
    max_len = L + steps
    if mesh is not None:
        for layout in (prefill, decode):
            engine.check_on(cfg, layout, mesh, B)
    pre, dec = (_Phase(n, cfg, lay, mesh, fmt) for n, lay in (("prefill", prefill),
                                                               ("decode", decode)))
    key = jax.random.key(seed)

    # Prefill: all L prompt tokens at positions 0..L-1 fill the cache.
    if mesh is not None:
        params = engine.place(params, mesh, engine.param_specs(cfg, prefill, fmt,
                                                                mesh_shape(mesh)))
    cache = engine.init_cache(cfg, prefill, mesh, B, max_len, fmt, kv)
    tokens_BL = global_array(prompt_BL, mesh,
                             engine.token_spec_on(prefill, mesh) if mesh else None)
    logits_B1V, cache = pre(params, tokens_BL, cache, 0)
    last_BV = logits_B1V[:, -1]
    prefill_logits = to_host(last_BV)

    # Decode: one token per step against the growing cache, in the decode layout.
    if mesh is not None and decode != prefill:
        params = engine.place(params, mesh, engine.param_specs(cfg, decode, fmt,
                                                                mesh_shape(mesh)))
        cache = engine.place(cache, mesh, engine.cache_specs_on(cfg, decode, mesh, B, kv))
    tokens, step_logits = [], []
    for t in range(steps):
        step_logits.append(to_host(last_BV))
        next_B = _sample_jit(last_BV, jax.random.fold_in(key, t), temperature=float(temperature),
                             top_k=top_k)
        host_next = to_host(next_B)
        tokens.append(host_next)
        if t == steps - 1:
            break  # the last token needs no forward pass of its own
        next_B1 = global_array(host_next[:, None], mesh,
                               engine.token_spec_on(decode, mesh) if mesh else None)
        logits_B1V, cache = dec(params, next_B1, cache, L + t)
        last_BV = logits_B1V[:, -1]
    timings = {"prefill": pre.timing(), "decode": dec.timing()}
    dropped = {p.name: p.dropped_per_sequence(B) for p in (pre, dec)} if cfg.n_experts else None
    return Generation(tokens=np.stack(tokens, 1) if tokens else np.zeros((B, 0), np.int32),
                      prefill_logits=prefill_logits,
                      step_logits=np.stack(step_logits, 1) if step_logits else
                      np.zeros((B, 0, cfg.V), np.float32),
                      cache=cache, timings=timings, dropped=dropped)
