"""Placing arrays on a mesh: parameters onto it, caches created on it, and both moved between
phases when the prefill and decode layouts split them differently; host arrays made global
(every process placing its own devices' pieces) and global arrays brought back to every host.

Specs arrive as the layouts write them (`layouts._common.Spec`: tuples of axis names, in
pytrees of dicts, lists and `QWeight`s) and become JAX's `PartitionSpec`s here
(`partition_specs`), where the engine builds and places a step.

Two paths, each where it is the faster:
- on the emulated CPU mesh, through the host: every device is host memory, so reading an
  array into numpy and cutting the pieces (`jax.make_array_from_callback`) takes milliseconds
  and compiles nothing, where XLA's resharding programs over 256 CPU devices take seconds each
  to compile;
- on real devices (TPU, GPU), device to device: `jax.device_put` reshards on the devices (or
  sends a host array's pieces straight to their devices), so a model is never copied device
  to host to device at every `generate` and `measure`.
Across processes, where no host holds every piece, a jitted identity reshards.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

CACHE_SIZE = 32  # compiled cache initializers kept (real devices), least recently used dropped


def _is_spec(s) -> bool:
    return isinstance(s, P) or type(s) is tuple  # a QWeight of specs is a pytree, not a spec


def partition_spec(spec) -> P:
    """One of the layouts' specs (a tuple of entries) as JAX's `PartitionSpec`."""
    return spec if isinstance(spec, P) else P(*spec)


def partition_specs(specs):
    """Every spec in a pytree of them (dicts, lists, `QWeight`s) as a `PartitionSpec`."""
    return jax.tree.map(partition_spec, specs, is_leaf=_is_spec)


def through_host(mesh) -> bool:
    """Whether placing on `mesh` goes through host memory: on the CPU backend that emulates
    the devices (`tpuinfer.emulate`), where host and devices share memory."""
    return mesh.devices.flat[0].platform == "cpu"


def shardings(mesh, specs):
    return jax.tree.map(lambda s: NamedSharding(mesh, partition_spec(s)), specs,
                        is_leaf=_is_spec)


def place(tree, mesh, specs):
    """`tree` (of jax or numpy arrays) with every leaf on `mesh` split as `specs` says."""
    target = shardings(mesh, specs)
    leaves, targets = jax.tree.leaves(tree), jax.tree.leaves(target)
    if all(isinstance(x, jax.Array) and x.sharding.is_equivalent_to(s, x.ndim)
           for x, s in zip(leaves, targets)):
        # Already there (parameters created in their shards for this very layout,
        # `init_params(shardings=)`): skip even a program that would only copy them.
        return tree
    if not all(getattr(x, "is_fully_addressable", True) for x in leaves):
        return jax.jit(lambda t: t, out_shardings=target)(tree)
    if through_host(mesh):
        return jax.tree.map(_via_host, tree, target)
    return jax.device_put(tree, target)


def _via_host(x, sharding):
    host = np.asarray(x)  # on the CPU backend: the device buffer itself, or one copy
    return jax.make_array_from_callback(host.shape, sharding, lambda idx: host[idx])


def zeros(arrays: dict, mesh, specs) -> list[dict]:
    """Zeros of one layer's cache arrays (`arrays`: name -> (shape, dtype), `model.cache_arrays`)
    for each entry of `specs` (a dict of specs per layer), each array made in its shards as its
    spec says: no host holds a whole array, and nothing compiles twice for one configuration."""
    arrays = {name: (tuple(shape), jnp.dtype(dtype)) for name, (shape, dtype) in arrays.items()}
    if through_host(mesh):
        # a zero-stride view: each device's piece is copied from one host scalar
        host = {name: np.broadcast_to(np.zeros((), dtype), shape)
                for name, (shape, dtype) in arrays.items()}
        return [{name: _via_host(host[name], NamedSharding(mesh, partition_spec(s[name])))
                 for name in arrays}
                for s in specs]
    frozen = tuple(tuple(s[name] for name in arrays) for s in specs)
    return _zeros_fn(tuple(arrays.items()), mesh, frozen)()


@functools.lru_cache(maxsize=CACHE_SIZE)
def _zeros_fn(arrays, mesh, specs):
    names = [name for name, _ in arrays]
    out = [{name: NamedSharding(mesh, partition_spec(s)) for name, s in zip(names, layer)}
           for layer in specs]
    return jax.jit(lambda: [{name: jnp.zeros(shape, dtype) for name, (shape, dtype) in arrays}
                            for _ in specs], out_shardings=out)


# ---- between host and mesh, across processes ------------------------------------------------
def to_host(x) -> np.ndarray:
    """A global array as numpy on every process (an all-gather when it spans processes)."""
    if getattr(x, "is_fully_addressable", True):
        return np.asarray(x)
    return _gather_across_processes(x)


def _gather_across_processes(x) -> np.ndarray:
    # Each process copies the shards it holds into a host array, and the host arrays are
    # all-gathered between one device per process; every process then knows from the sharding
    # which process held which piece. (`multihost_utils.process_allgather` would replicate x
    # onto every device instead: an all-gather over all 256 devices, a copy on each.)
    n = jax.process_count()
    mine = np.zeros(x.shape, x.dtype)
    for shard in x.addressable_shards:
        mine[shard.index] = np.asarray(shard.data)
    one_each = [next(d for d in jax.devices() if d.process_index == p) for p in range(n)]
    stacked = jax.make_array_from_single_device_arrays(
        (n,) + x.shape, NamedSharding(Mesh(np.array(one_each), ("p",)), P("p")),
        [jax.device_put(mine[None], one_each[jax.process_index()])])
    gathered = np.asarray(_replicated(stacked.sharding.mesh)(stacked).addressable_data(0))
    out = np.empty(x.shape, x.dtype)
    for device, index in x.sharding.devices_indices_map(x.shape).items():
        out[index] = gathered[device.process_index][index]
    return out


@functools.lru_cache(maxsize=None)
def _replicated(mesh):
    return jax.jit(lambda a: a, out_shardings=NamedSharding(mesh, P()))


def global_array(host_array: np.ndarray, mesh, spec):
    """A global array from a host array every process holds, each process placing only the
    pieces its own devices need."""
    if mesh is None:
        return jnp.asarray(host_array)
    sharding = NamedSharding(mesh, partition_spec(spec))
    return jax.make_array_from_callback(host_array.shape, sharding, lambda idx: host_array[idx])
