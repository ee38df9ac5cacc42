"""The sharded step and generation: one `shard_map` over the whole forward pass.

A step is the embedding lookup, every layer (the feed-forward layout's block, with the
attention layout inside it), the final norm and the output projection, as one SPMD body whose
collectives are all written out in the layout files. Compiled steps are cached per
configuration, so a second `generate` or `measure` of the same configuration never compiles.

The KV cache carries its own format (`model.kv_format_of`: its arrays' dtypes, and an int8
cache's scales), and a mesh its replicas (`mesh.replica_count`): on a mesh of R replicas the
same body runs in each replica on its B/R sequences, its collectives over x, y, z only, and
every array with a batch dimension is split over 'r' first (`*_on(..., mesh)` below).
"""
from __future__ import annotations

import collections
import functools
import math
import time

import jax
from jax.sharding import PartitionSpec as P

from . import caches, model, moe, placement
from .config import ModelConfig
from .errors import LayoutError
from .layouts import Layout, head
from .layouts.interface import Ctx
# a step's specs and its errors, up front: `engine.param_specs`, `engine.check` are the
# registry's; placing arrays on the mesh (`engine.place`, `engine.shardings`) is placement's
from .layouts.registry import (cache_specs, check, context, logits_spec, over_replicas,
                               param_specs, token_spec)
from .mesh import mesh_shape as shape_of
from .mesh import replica_count
from .placement import partition_spec, partition_specs, place, shardings
from .quant import activation_dtype
from .shapes import output_table

__all__ = ["param_specs", "check", "place", "shardings", "param_shardings", "per_replica",
           "check_on", "token_spec_on", "logits_spec_on", "cache_specs_on", "step_fn",
           "reference_step_fn", "compiled_step", "init_cache", "local_bytes", "COMPILED_STEPS",
           "compiler_options"]


def param_shardings(cfg, layout, mesh, weights="f32"):
    return shardings(mesh, param_specs(cfg, layout, weights, shape_of(mesh)))


# ---- the step -------------------------------------------------------------------------------
def _body(ctx: Ctx, dtype, params, tokens_BL, cache, pos):
    # tokens_BL here: [B/|b|, L]; the ends of the step and their collectives: `layouts.head`
    x_BLE = head.embed(ctx, params["embed"], tokens_BL, dtype)
    new_cache = []
    with moe.counting_drops() as dropped:  # a mixture of experts' layers report their drops
        for w, layer_cache in zip(params["layers"], cache):
            x_BLE, layer_cache = ctx.ffn.block(ctx, x_BLE, w, layer_cache, pos)
            new_cache.append(layer_cache)
    logits = head.logits(ctx, x_BLE, params["final_norm"], params[output_table(ctx.cfg)])
    return (logits, new_cache) + ((sum(dropped),) if dropped else ())


# ---- specs on a mesh, its replicas included --------------------------------------------------
def per_replica(mesh, batch: int) -> int:
    """The sequences each replica of `mesh` runs: B/R (a clear error when R does not divide
    B)."""
    r = replica_count(mesh)
    if batch % r:
        raise LayoutError(f"batch B={batch} does not split over {r} replicas; use a batch of "
                          f"{r}, {2 * r}, ... or fewer replicas")
    return batch // r


def check_on(cfg, layout, mesh, batch: int) -> None:
    """`check` of one replica's step (B/R sequences on its x, y, z)."""
    check(cfg, layout, shape_of(mesh), per_replica(mesh, batch))


def _batched(spec, mesh):
    return over_replicas(spec) if replica_count(mesh) > 1 else spec


def token_spec_on(layout, mesh):
    return _batched(token_spec(layout), mesh)


def logits_spec_on(layout, mesh):
    return _batched(logits_spec(layout), mesh)


def cache_specs_on(cfg, layout, mesh, batch: int, kv: str | None = None) -> list:
    """Every layer's cache specs on `mesh` for a batch of `batch` (all replicas'): a replica's
    (`cache_specs` for B/R), the batch split over 'r' first."""
    specs = cache_specs(cfg, layout, shape_of(mesh), per_replica(mesh, batch), kv)
    return [{name: _batched(s, mesh) for name, s in layer.items()} for layer in specs]


@functools.lru_cache(maxsize=64)  # bounded: `COMPILED_STEPS`
def step_fn(cfg: ModelConfig, layout: Layout, mesh, weights: str, batch: int,
            kv: str | None = None):
    """The jitted sharded step `(params, tokens_BL, cache, pos) -> (logits_B1V, cache)`: the
    logits of each sequence's last position, and the cache with this step's K/V written; a
    mixture of experts' also returns its routes dropped per sequence, all layers ([B] int32).
    The cache's spec depends on the batch (attention by batch splits what it divides) and on
    its format `kv` (an int8 cache's scales)."""
    ctx = context(cfg, layout, shape_of(mesh))
    body = functools.partial(_body, ctx, activation_dtype(weights))
    cspecs = cache_specs_on(cfg, layout, mesh, batch, kv)
    # the layouts' specs (tuples of axis names) become JAX's here, where the step is built
    cspecs = partition_specs(cspecs)
    sharded = jax.shard_map(
        body, mesh=mesh,
        in_specs=(partition_specs(param_specs(cfg, layout, weights, shape_of(mesh))),
                  partition_spec(token_spec_on(layout, mesh)), cspecs, P()),
        # (drops per sequence, where it has experts: split as the batch is)
        out_specs=(partition_spec(logits_spec_on(layout, mesh)), cspecs) + (
            (P(token_spec_on(layout, mesh)[0]),) if cfg.n_experts else ()),
        # Multiquery (and grouped-query) K/V under attention by heads are computed
        # identically on every chip of the heads axes they do not split over and cached
        # replicated; the varying-axes check cannot see through the all-gather that makes
        # them equal, so replication is asserted here and the tests check it against the
        # reference.
        check_vma=False)
    return jax.jit(sharded, donate_argnums=(2,))


@functools.lru_cache(maxsize=16)
def reference_step_fn(cfg: ModelConfig, weights: str):
    dtype = activation_dtype(weights)

    def step(params, tokens_BL, cache, pos):
        with moe.counting_drops() as dropped:  # a mixture of experts' drops, an output
            out = model.forward(params, cfg, tokens_BL, cache, pos, dtype, last_only=True)
        return out + ((sum(dropped),) if dropped else ())

    return jax.jit(step, donate_argnums=(2,))


COMPILED_STEPS = 32  # compiled steps kept: the bulk of a long session's memory


class _Recent(collections.OrderedDict):
    """A dict that keeps its `maxsize` most recently used entries: a workshop's widget clicks
    compile a step for every configuration they visit, and must not keep them all."""

    def __init__(self, maxsize: int):
        super().__init__()
        self.maxsize = maxsize

    def __getitem__(self, key):
        self.move_to_end(key)
        return super().__getitem__(key)

    def __setitem__(self, key, value):
        super().__setitem__(key, value)
        self.move_to_end(key)
        if len(self) > self.maxsize:
            while len(self) > self.maxsize:
                self.popitem(last=False)
            caches.release_memory()  # a dropped program's pages back to the system


# (configuration, shapes) -> compiled step
_COMPILED = caches.register("tpuinfer.engine._COMPILED", _Recent(COMPILED_STEPS))


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
    kv = model.kv_format_of(cache)
    key = (cfg, layout, mesh, weights, tokens_BL.shape, cache[0]["k"].shape, kv)
    if key not in _COMPILED:
        t0 = time.perf_counter()
        fn = reference_step_fn(cfg, weights) if mesh is None else \
            step_fn(cfg, layout, mesh, weights, tokens_BL.shape[0], kv)
        _COMPILED[key] = fn.lower(params, tokens_BL, cache, pos).compile(
            compiler_options(jax.devices()[0].platform if mesh is None else
                             mesh.devices.flat[0].platform))
        return _COMPILED[key], time.perf_counter() - t0
    return _COMPILED[key], 0.0


def init_cache(cfg, layout, mesh, batch, max_len, weights, kv: str | None = None):
    """Zeros in the KV format `kv` (None: the activation dtype of `weights`), created directly
    in their shards (no host holds the whole cache; compiled, where it compiles, once per
    configuration: `placement.zeros`)."""
    dtype = activation_dtype(weights)
    if mesh is None:
        return model.init_cache(cfg, batch, max_len, dtype, kv)
    return placement.zeros(model.cache_arrays(cfg, batch, max_len, dtype, kv), mesh,
                           cache_specs_on(cfg, layout, mesh, batch, kv))


def local_bytes(tree) -> int:
    """Bytes of a pytree of arrays held by the first addressable device."""
    total = 0
    for leaf in jax.tree.leaves(tree):
        shard = leaf.addressable_shards[0].data
        total += math.prod(shard.shape) * shard.dtype.itemsize
    return total
