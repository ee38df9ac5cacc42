"""The logical mesh as the cost path sees it: its axes' names and sizes, with no devices.

A mesh shape is three sizes (x, y, z); a group of chips spans some of its axes. The cost model,
the planner and the layouts' terms need only these; the devices themselves (`tpuinfer.mesh`,
JAX) come in where a step runs. Imports nothing of tpuinfer but its errors.
"""
from __future__ import annotations

from .errors import UsageError

AXES = ("x", "y", "z")  # the mesh's axes, in this order everywhere (specs, profiles, shapes)
REPLICA = "r"  # the data-parallel replicas' axis, in front of AXES when there is more than one


def format_shape(shape) -> str:
    return "x".join(str(s) for s in shape)


def parse_shape(text: str) -> tuple[int, int, int]:
    """'4x8x8' -> (4, 8, 8)."""
    try:
        shape = tuple(int(s) for s in text.lower().split("x"))
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise UsageError(f"mesh {text!r} is not XxYxZ with positive sizes, e.g. 4x8x8")
    return shape


_INDEX = {a: i for i, a in enumerate(AXES)}


def group_size(mesh_shape, axes) -> int:
    """Chips in one group spanning `axes` of a mesh of `mesh_shape`."""
    n = 1
    for a in axes:  # a plain loop: the planner asks this ~10^5 times a plan
        n *= mesh_shape[_INDEX[a]]
    return n


def factorizations(n: int) -> list[tuple[int, int, int]]:
    """Every (x, y, z) with x·y·z = n, x then y ascending."""
    return [(x, y, n // (x * y)) for x in range(1, n + 1) if n % x == 0
            for y in range(1, n // x + 1) if (n // x) % y == 0]
