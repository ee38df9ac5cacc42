"""The sharded step and generation: one `shard_map` over the whole forward pass.

A step is the embedding lookup, every layer (the feed-forward layout's block, with the
attention layout inside it), the final norm and the output projection, as one SPMD body whose
collectives are all written out in the layout files. Compiled steps are cached per
configuration, so a second `generate` or `measure` of the same configuration never compiles.
"""
from __future__ import annotations

import functools
import math
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from . import model
from .config import ModelConfig
from .layouts import Layout, head
from .layouts.interface import Ctx
from .layouts.registry import cache_specs, context, logits_spec, param_specs, token_spec
from .layouts.registry import check  # noqa: F401  (engine.check: a step's errors, up front)
from .mesh import mesh_shape as shape_of
from .quant import activation_dtype


def shardings(mesh, specs):
    return jax.tree.map(lambda s: NamedSharding(mesh, s), specs,
                        is_leaf=lambda s: isinstance(s, P))


def param_shardings(cfg, layout, mesh, weights="f32"):
    return shardings(mesh, param_specs(cfg, layout, weights))


def place(tree, mesh, specs):
    """Move (reshard) a pytree onto the mesh: parameters onto it, and between phases when the
    layouts differ. On one process the arrays go through the host: on 256 CPU devices that
    takes milliseconds, where XLA's resharding programs take seconds each to compile. Across
    processes (no host holds everything) XLA reshards."""
    target = shardings(mesh, specs)
    if not all(getattr(x, "is_fully_addressable", True) for x in jax.tree.leaves(tree)):
        # Parameters created in their shards for this very layout (`init_params(shardings=)`)
        # need nothing: skip compiling a program that would only copy them.
        if all(x.sharding.is_equivalent_to(s, x.ndim)
               for x, s in zip(jax.tree.leaves(tree), jax.tree.leaves(target))):
            return tree
        return jax.jit(lambda t: t, out_shardings=target)(tree)

    def one(x, sharding):
        host = np.asarray(x)
        return jax.make_array_from_callback(host.shape, sharding, lambda idx: host[idx])

    return jax.tree.map(one, tree, target)


# ---- the step -------------------------------------------------------------------------------
def _body(ctx: Ctx, dtype, params, tokens_BL, cache, pos):
    # tokens_BL here: [B/|b|, L]; the ends of the step and their collectives: `layouts.head`
    x_BLE = head.embed(ctx, params["embed"], tokens_BL, dtype)
    new_cache = []
    for w, layer_cache in zip(params["layers"], cache):
        x_BLE, layer_cache = ctx.ffn.block(ctx, x_BLE, w, layer_cache, pos)
        new_cache.append(layer_cache)
    return head.logits(ctx, x_BLE, params["final_norm"], params["embed"]), new_cache


@functools.lru_cache(maxsize=None)
def step_fn(cfg: ModelConfig, layout: Layout, mesh, weights: str, batch: int):
    """The jitted sharded step `(params, tokens_BL, cache, pos) -> (logits_B1V, cache)`: the
    logits of each sequence's last position, and the cache with this step's K/V written.
    The cache's spec depends on the batch (attention by batch splits what it divides)."""
    ctx = context(cfg, layout, shape_of(mesh))
    body = functools.partial(_body, ctx, activation_dtype(weights))
    cspecs = cache_specs(cfg, layout, shape_of(mesh), batch)
    sharded = jax.shard_map(
        body, mesh=mesh,
        in_specs=(param_specs(cfg, layout, weights), token_spec(layout), cspecs, P()),
        out_specs=(logits_spec(layout), cspecs),
        # Multiquery K/V under attention by heads are computed identically on every chip of
        # the heads axes and cached replicated; the varying-axes check cannot see through the
        # all-gather that makes them equal, so replication is asserted here and the tests
        # check it against the reference.
        check_vma=False)
    return jax.jit(sharded, donate_argnums=(2,))


@functools.lru_cache(maxsize=None)
def reference_step_fn(cfg: ModelConfig, weights: str):
    dtype = activation_dtype(weights)

    def step(params, tokens_BL, cache, pos):
        return model.forward(params, cfg, tokens_BL, cache, pos, dtype, last_only=True)

    return jax.jit(step, donate_argnums=(2,))


_COMPILED: dict = {}


def compiler_options(platform: str) -> dict:
    """A step holds one layer's gathered weights at a time, as on a device. XLA:CPU's default
    scheduler starts every independent operation as early as it can (for its threads), so in
    a weight-gathered layout it ran every layer's all-gathers first and kept all the layers'
    gathered weights live at once; ordering the layers with `lax.optimization_barrier` changes
    nothing there (XLA:CPU removes barriers before it schedules). Its memory-minimising
    scheduler gathers each weight just before the matmul that reads it. A TPU's or GPU's
    scheduler already bounds memory: they get no option."""
    return {"xla_cpu_scheduler_type": "CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED"} \
        if platform == "cpu" else {}


def compiled_step(cfg, layout, mesh, weights, params, tokens_BL, cache, pos):
    """The compiled executable for these argument shapes, compiled once per configuration.
    Returns (executable, compile seconds spent now: 0.0 when it was cached)."""
    key = (cfg, layout, mesh, weights, tokens_BL.shape, cache[0]["k"].shape)
    if key not in _COMPILED:
        t0 = time.perf_counter()
        fn = reference_step_fn(cfg, weights) if mesh is None else \
            step_fn(cfg, layout, mesh, weights, tokens_BL.shape[0])
        _COMPILED[key] = fn.lower(params, tokens_BL, cache, pos).compile(
            compiler_options(jax.devices()[0].platform if mesh is None else
                             mesh.devices.flat[0].platform))
        return _COMPILED[key], time.perf_counter() - t0
    return _COMPILED[key], 0.0


def init_cache(cfg, layout, mesh, batch, max_len, weights):
    """Zeros, created directly in their shards (no host holds the whole cache)."""
    dtype = activation_dtype(weights)
    shape = (batch, max_len, cfg.K, cfg.D)
    if mesh is None:
        return model.init_cache(cfg, batch, max_len, dtype)
    zeros = jax.jit(lambda: [{"k": jnp.zeros(shape, dtype), "v": jnp.zeros(shape, dtype)}
                             for _ in range(cfg.n_layers)],
                    out_shardings=shardings(mesh, cache_specs(cfg, layout, shape_of(mesh),
                                                              batch)))
    return zeros()


def local_bytes(tree) -> int:
    """Bytes of a pytree of arrays held by the first addressable device."""
    total = 0
    for leaf in jax.tree.leaves(tree):
        shard = leaf.addressable_shards[0].data
        total += math.prod(shard.shape) * shard.dtype.itemsize
    return total
