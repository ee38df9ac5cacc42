"""Emulated devices and the (x, y, z) mesh.

JAX fixes its device count when the backend starts, so a process asks for its devices once,
before anything touches JAX, and every smaller mesh is built from the first devices (across
several processes: the first devices of each).
"""
from __future__ import annotations

import math

import jax
import numpy as np
from jax.sharding import Mesh

AXES = ("x", "y", "z")


class EmulationError(RuntimeError):
    """JAX's backend already started with a device count other than the one asked for."""


def _backend_started() -> bool:
    from jax._src import xla_bridge  # the only place JAX says whether it has started
    return xla_bridge.backends_are_initialized()


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
    """
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"emulate(n) needs a positive device count, got {n!r}")
    from . import multihost
    multihost.check_args(n, processes, process_id, coordinator)
    if _backend_started():
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
        multihost.initialize(n, processes, process_id, coordinator)
        return n
    jax.config.update("jax_platforms", "cpu")
    jax.config.update("jax_num_cpu_devices", n)
    return n


def make_mesh(shape: tuple[int, int, int]) -> Mesh:
    """A mesh with axes ('x', 'y', 'z') over the first x·y·z devices (all of a real
    accelerator slice's devices: in the order of its physical topology)."""
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"a mesh shape is three positive sizes (x, y, z), got {shape}")
    n = math.prod(shape)
    have = jax.device_count()
    if n > have:
        raise ValueError(
            f"mesh {format_shape(shape)} needs {n} devices but JAX has {have}; choose a mesh of "
            f"at most {have} devices, or restart and call tpuinfer.emulate({n}) first")
    devices = jax.devices()[:n]
    if n == have and devices[0].platform != "cpu":
        # A real slice or cluster: order the devices by the physical topology, so that mesh
        # neighbours are torus (or NVLink) neighbours, as the cost model's links assume.
        from jax.experimental import mesh_utils
        return Mesh(mesh_utils.create_device_mesh(shape), AXES)
    if jax.process_count() > 1 and n < have:
        # Every process must hold part of the mesh (each runs the same program on its own
        # devices): take the first n/P devices of each process rather than process 0's alone.
        per = n // jax.process_count()
        if per * jax.process_count() != n:
            raise ValueError(f"mesh {format_shape(shape)} of {n} devices does not split evenly "
                             f"over {jax.process_count()} processes; choose a mesh whose size "
                             f"divides by {jax.process_count()}")
        local = [[d for d in jax.devices() if d.process_index == p]
                 for p in range(jax.process_count())]
        devices = [d for devices_of_p in local for d in devices_of_p[:per]]
    devices = np.array(devices).reshape(shape)
    return Mesh(devices, AXES)


def format_shape(shape) -> str:
    return "x".join(str(s) for s in shape)


def parse_shape(text: str) -> tuple[int, int, int]:
    """'4x8x8' -> (4, 8, 8)."""
    try:
        shape = tuple(int(s) for s in text.lower().split("x"))
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"mesh {text!r} is not XxYxZ with positive sizes, e.g. 4x8x8")
    return shape


def mesh_shape(mesh: Mesh) -> tuple[int, int, int]:
    return tuple(mesh.shape[a] for a in AXES)


def factorizations(n: int) -> list[tuple[int, int, int]]:
    """Every (x, y, z) with x·y·z = n."""
    return [(x, y, n // (x * y)) for x in range(1, n + 1) if n % x == 0
            for y in range(1, n // x + 1) if (n // x) % y == 0]
