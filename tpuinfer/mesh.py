"""Emulated devices and the (x, y, z) mesh, and meshes of data-parallel replicas.

JAX fixes its device count when the backend starts, so a process asks for its devices once,
before anything touches JAX, and every smaller mesh is built from the first devices (across
several processes: the first devices of each).

`make_mesh(shape, replicas=R)` is R copies of the (x, y, z) mesh side by side: axes
('r', 'x', 'y', 'z'), replica i on devices i·n .. (i+1)·n − 1. A layout runs inside each
replica as on the (x, y, z) mesh alone, its collectives over x, y, z only (so within one
replica's group); the batch splits over 'r' first and the parameters are held by every
replica (`layouts.registry.over_replicas`). `mesh_shape(mesh)` is a replica's (x, y, z),
`replica_count(mesh)` is R.
"""
from __future__ import annotations

import math
import os

import jax
from jax.sharding import AxisType, Mesh

from . import compile_cache, distributed
# the mesh's names and sizes are the cost path's (`axes`, no JAX); asked of `mesh` too
from .axes import AXES, REPLICA, factorizations, format_shape, group_size, parse_shape
from .errors import TpuinferError, UsageError

__all__ = ["AXES", "REPLICA", "EmulationError", "emulate", "factorizations", "format_shape",
           "group_size", "make_mesh", "mesh_shape", "parse_shape", "replica_count"]



# XLA:CPU flags an emulating process compiles with, unless XLA_FLAGS names the flag itself.
# XLA:CPU's default fusion emitters compile every fusion through its own MLIR pipeline, and a
# 256-way all-to-all becomes a piece per device, each its own fusion: on 2 cores the 4x8x8
# ws2d/batch decode step compiled in 8.2 s with them and 3.2 s with the older emitters, and
# ran in 302 ms instead of 345 (ws1d/heads prefill at batch 256: 1.86 s instead of 2.20).
CPU_FLAGS = ("--xla_cpu_use_fusion_emitters=false",)


class EmulationError(TpuinferError, RuntimeError):
    """JAX's backend already started with a device count other than the one asked for."""


def _set_cpu_flags() -> None:
    """Add `CPU_FLAGS` to XLA_FLAGS, which XLA reads once, when the backend starts (later it
    changes nothing here; processes started from this one inherit it, as they would emulate)."""
    have = os.environ.get("XLA_FLAGS", "")
    new = [f for f in CPU_FLAGS if f.split("=")[0] not in have]
    if new:
        os.environ["XLA_FLAGS"] = " ".join([have, *new]).strip()


def _ask_for_cpu_devices(count: int) -> bool:
    """Ask JAX for `count` CPU devices in this process; False when its backend has already
    started. JAX has no public "has it started" query, but it refuses (RuntimeError) to change
    the CPU device count once it has: that refusal is the answer. Asking for the count it
    already has is no change and no refusal, so the caller checks the count it got."""
    try:
        jax.config.update("jax_num_cpu_devices", count)
    except RuntimeError:
        return False
    return True


def emulate(n: int = 256, processes: int = 1, process_id: int = 0,
            coordinator: str | None = None) -> int:
    """Give this process `n` CPU devices (call it before anything else uses JAX).

    With `processes=P` the n devices are split over P processes, as over the hosts of a slice:
    every process calls `emulate(n, processes=P, process_id=i, coordinator="HOST:PORT")` with
    its own i and the same coordinator, and holds n/P devices; `jax.distributed` joins them and
    gloo carries the collectives between them (`tpuinfer.multihost`). On a real multi-host
    slice or cluster, call `jax.distributed.initialize()` instead of `emulate`.

    Called again after the backend started, it is a no-op if JAX already has this setup and an
    `EmulationError` otherwise: the count cannot change in a running process.

    XLA:CPU compiles with `CPU_FLAGS` (set in XLA_FLAGS unless it names them already). One
    process also turns on JAX's persistent compilation cache in tpuinfer's cache
    directory (`tpuinfer.compile_cache`; `TPUINFER_COMPILE_CACHE=off` leaves it off).
    """
    if not isinstance(n, int) or n < 1:
        raise UsageError(f"emulate(n) needs a positive device count, got {n!r}")
    distributed.check_args(n, processes, process_id, coordinator)
    _set_cpu_flags()
    if processes == 1:
        compile_cache.enable()
    if jax.config.jax_num_cpu_devices == n // processes and processes == 1:
        # Asked for before (or set by hand): asking again tells nothing. Starting the backend
        # (if it has not started) is what this call is for: then see what it has.
        jax.config.update("jax_platforms", "cpu")  # ignored by a backend already running
        started = True
    else:
        started = not _ask_for_cpu_devices(n // processes)
    if started:
        have = jax.device_count()
        if (have, jax.process_count(), jax.process_index()) == (n, processes, process_id):
            return n
        call = f"emulate({n})" if processes == 1 else f"emulate({n}, processes={processes}, ...)"
        where = f" in {jax.process_count()} processes" if jax.process_count() > 1 else ""
        raise EmulationError(
            f"JAX's backend already started with {have} device(s){where}; {call} cannot change "
            f"that in a running process. Restart the kernel (or process) and call "
            f"tpuinfer.{call} first, before any other JAX call.")
    if processes > 1:
        distributed.initialize(n, processes, process_id, coordinator)
        return n
    jax.config.update("jax_platforms", "cpu")
    return n


def make_mesh(shape: tuple[int, int, int], replicas: int = 1) -> Mesh:
    """A mesh with axes ('x', 'y', 'z') over the first x·y·z devices (all of a real
    accelerator slice's devices: in the order of its physical topology). With `replicas` R >
    1, R such meshes side by side, axes ('r', 'x', 'y', 'z') over the first R·x·y·z devices
    (the module docstring)."""
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 1:
        raise UsageError(f"a mesh shape is three positive sizes (x, y, z), got {shape}")
    if not isinstance(replicas, int) or replicas < 1:
        raise UsageError(f"replicas must be a positive number of copies of the mesh, got "
                         f"{replicas!r}")
    axes = ((REPLICA,) if replicas > 1 else ()) + AXES
    full = ((replicas,) if replicas > 1 else ()) + shape
    n = math.prod(full)
    have = jax.device_count()
    if n > have:
        what = f"{replicas} replicas of mesh {format_shape(shape)}" if replicas > 1 else \
            f"mesh {format_shape(shape)}"
        raise UsageError(
            f"{what} needs {n} devices but JAX has {have}; choose a mesh of "
            f"at most {have} devices, or restart and call tpuinfer.emulate({n}) first")
    # Sharding in types (`Explicit`, jax.make_mesh's default) is not what the shard_map bodies
    # and NamedShardings here are written for: every axis is `Auto`, as `Mesh(devices, axes)`
    # makes.
    types = (AxisType.Auto,) * len(axes)
    devices = jax.devices()[:n]
    if n == have and devices[0].platform != "cpu":
        # A real slice or cluster: order the devices by the physical topology, so that mesh
        # neighbours are torus (or NVLink) neighbours, as the cost model's links assume.
        return jax.make_mesh(full, axes, axis_types=types)
    if jax.process_count() > 1 and n < have:
        # Every process must hold part of the mesh (each runs the same program on its own
        # devices): take the first n/P devices of each process rather than process 0's alone.
        per = n // jax.process_count()
        if per * jax.process_count() != n:
            raise UsageError(f"mesh {format_shape(full)} of {n} devices does not split evenly "
                             f"over {jax.process_count()} processes; choose a mesh whose size "
                             f"divides by {jax.process_count()}")
        local = [[d for d in jax.devices() if d.process_index == p]
                 for p in range(jax.process_count())]
        devices = [d for devices_of_p in local for d in devices_of_p[:per]]
    # given the devices, jax.make_mesh keeps their order: the first n, row-major over (r,) x,
    # y, z
    return jax.make_mesh(full, axes, axis_types=types, devices=devices)


def mesh_shape(mesh: Mesh) -> tuple[int, int, int]:
    """(x, y, z): on a mesh of replicas, one replica's."""
    return tuple(mesh.shape[a] for a in AXES)


def replica_count(mesh: Mesh | None) -> int:
    """The data-parallel replicas a mesh holds (1 without an 'r' axis, or no mesh)."""
    return 1 if mesh is None else dict(mesh.shape).get(REPLICA, 1)
