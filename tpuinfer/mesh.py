"""Emulated devices and the (x, y, z) mesh.

JAX fixes its device count when the backend starts, so a process asks for its devices once,
before anything touches JAX, and every smaller mesh is built from the first devices.
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


def emulate(n: int = 256) -> int:
    """Give this process `n` CPU devices (call it before anything else uses JAX).

    Called again after the backend started, it is a no-op if the count is already `n` and an
    `EmulationError` otherwise: the count cannot change in a running process.
    """
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"emulate(n) needs a positive device count, got {n!r}")
    if _backend_started():
        have = jax.device_count()
        if have == n:
            return n
        raise EmulationError(
            f"JAX's backend already started with {have} device(s); emulate({n}) cannot change "
            f"that in a running process. Restart the kernel (or process) and call "
            f"tpuinfer.emulate({n}) first, before any other JAX call.")
    jax.config.update("jax_platforms", "cpu")
    jax.config.update("jax_num_cpu_devices", n)
    return n


def make_mesh(shape: tuple[int, int, int]) -> Mesh:
    """A mesh with axes ('x', 'y', 'z') over the first x·y·z devices."""
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"a mesh shape is three positive sizes (x, y, z), got {shape}")
    n = math.prod(shape)
    have = jax.device_count()
    if n > have:
        raise ValueError(
            f"mesh {format_shape(shape)} needs {n} devices but JAX has {have}; choose a mesh of "
            f"at most {have} devices, or restart and call tpuinfer.emulate({n}) first")
    devices = np.array(jax.devices()[:n]).reshape(shape)
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
