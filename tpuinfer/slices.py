"""Physical slices, the logical (x, y, z) meshes the layouts run on them, and the links a
collective group uses.

A chip comes in the shapes its maker sells, and the cost model prices only those:

- TPU v5e and v6e: 2D slices of 1x1, 2x2, 2x4, 4x4, 4x8, 8x8, 8x16 and 16x16 chips
  (cloud.google.com/tpu/docs/v5e and /v6e, "supported 2D slice shapes"). A side of 16 is a
  ring (wraparound), a shorter side a line: an 8x16 slice wraps along its 16 only (jax-ml
  scaling book, "How to think about TPUs").
- TPU v4 and v5p: AxBxC with A <= B <= C, all sides at most 4 or all multiples of 4
  (cloud.google.com/tpu/docs/types-topologies): 2x2x1, 2x2x2, 2x2x4, 2x4x4, then whole 4x4x4
  cubes (4x4x4, 4x4x8, 4x8x8, 4x4x16, ...). A slice of whole cubes wraps every axis (the
  optical switches close each into a ring); a smaller one is a mesh of lines (Jouppi et al.,
  "TPU v4", ISCA 2023, Section 2). Only power-of-two sides are planned.
- GPUs: up to `node_size` GPUs on one NVSwitch, or whole nodes joined by InfiniBand.

The layouts see a logical mesh (X, Y, Z). On a torus each logical axis is one or more whole
physical axes of the slice: 16 chips as one logical axis over a 4x4 slice, or as 4x4; the
paper's 2x4x2 for 16 chips is the 2x2x4 slice with its axes reordered. Where one logical
shape can be placed more than one way, the physical axes (in the slice's A <= B <= C order)
fill x first, then y, then z, splitting a physical axis into an inner run and an outer
stride only where no whole-axis placement exists; the first slice shape that holds it wins. A
group of chips over some logical axes spans the physical axes under them, and a collective
over it runs axis by axis (`group_links`). On a GPU cluster the logical mesh numbers GPUs
row-major (z fastest), as `jax.make_mesh` does, and each run of `node_size` GPUs is a node.
"""
from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass

from .axes import AXES, factorizations
from .errors import UsageError

# source: cloud.google.com/tpu/docs/v5e and cloud.google.com/tpu/docs/v6e (the 2D slice shapes)
SLICES_2D = ((1, 1), (2, 2), (2, 4), (4, 4), (4, 8), (8, 8), (8, 16), (16, 16))
# source: cloud.google.com/tpu/docs/types-topologies and /v5p: the slices of TPU v4 and v5p
# smaller than one 4x4x4 cube; larger slices are whole cubes (`_slice_shapes`)
SLICES_3D = ((2, 2, 1), (2, 2, 2), (2, 2, 4), (2, 4, 4))
# The meshes the paper ran for each chip count (Pope et al. 2022, Section 4): logical meshes on
# the v4 slices of those sizes; the planner weighs every placement, these are what the book and
# `tpuinfer paper` show beside its choice.
PAPER_MESHES = {8: (2, 2, 2), 16: (2, 4, 2), 32: (4, 2, 4), 64: (4, 4, 4), 128: (8, 4, 4),
                256: (4, 8, 8)}


def _hw(hw):
    """A profile, from its name (the cost model passes profiles: they come back at once)."""
    if not isinstance(hw, str):
        return hw
    from .hardware import get_hardware  # hardware imports this module for its mesh names
    return get_hardware(hw)


# ---- the shapes a chip comes in -----------------------------------------------------------
def slice_shapes(hw, chips: int) -> list[tuple[int, ...]]:
    """The physical slices of `chips` chips `hw` comes in: sides of a torus (most cube-like
    first), (nodes, GPUs per node) on a switch, (chips,) on an emulated host. [] if none."""
    hw = _hw(hw)
    return list(_slice_shapes(hw, chips))


@functools.lru_cache(maxsize=1024)
def _slice_shapes(hw, chips: int) -> tuple:
    if chips < 1 or chips > hw.max_chips:
        return ()
    if hw.interconnect == "host":
        return ((chips,),)
    if hw.interconnect == "switch":
        if chips <= hw.node_size:
            return ((1, chips),)
        return ((chips // hw.node_size, hw.node_size),) if chips % hw.node_size == 0 else ()
    if hw.torus_dims == 2:
        return tuple(s for s in SLICES_2D if math.prod(s) == chips and max(s) <= hw.max_side)
    if chips < 4**3:
        return tuple(s for s in SLICES_3D if math.prod(s) == chips)
    sides = [s for s in (4, 8, 16, 32) if s <= hw.max_side]  # whole cubes: multiples of 4
    shapes = [s for s in itertools.combinations_with_replacement(sides, 3)
              if math.prod(s) == chips]
    return tuple(sorted(shapes, key=lambda s: (max(s), s)))


def _rings(hw, shape) -> tuple[bool, ...]:
    """Per physical axis of a torus slice: whether it wraps round (module docstring)."""
    if hw.wrap_each_axis:
        return tuple(s % hw.wrap_unit == 0 for s in shape)
    whole = all(s % hw.wrap_unit == 0 for s in shape)
    return (whole,) * len(shape)


# A part of a physical axis under one logical axis: (chips, ring, stride, axis, whole side).
# A physical axis is under one logical axis whole (stride 1), or split in two: an inner run of
# neighbours (stride 1, never a ring) under one logical axis and an outer factor whose members
# sit `stride` = the inner run apart under another (a ring if the axis is one).
Part = tuple


def _parts(physical, rings):
    """Every way to hand the physical axes to logical axes: lists of (owner, Part), whole
    axes before split ones (the placement order of the module docstring)."""
    options = []
    for i, (side, ring) in enumerate(zip(physical, rings)):
        if side == 1:
            options.append([()])
            continue
        whole = [((a, (side, ring, 1, i, side)),) for a in range(3)]
        split = [((a, (inner, False, 1, i, side)), (b, (side // inner, ring, inner, i, side)))
                 for inner in (2, 4, 8) if inner < side and side % inner == 0
                 for a in range(3) for b in range(3) if a != b]
        options.append(whole + split)
    for combo in itertools.product(*options):
        yield sum((list(c) for c in combo), []), sum(len(c) == 2 for c in combo)


def placement(hw, mesh_shape) -> tuple[tuple[Part, ...], ...] | None:
    """Where a logical mesh sits on a torus: per logical axis x, y, z, the parts of physical
    axes under it (`Part`); None where no slice holds it. The first slice shape that holds it,
    with the fewest split axes, in the module docstring's order."""
    for physical in _slice_shapes(hw, math.prod(mesh_shape)):
        where = _placements(hw, physical).get(tuple(mesh_shape))
        if where is not None:
            return where
    return None


@functools.lru_cache(maxsize=256)
def _placements(hw, physical) -> dict:
    """Every logical mesh one slice holds, each at its first placement (fewest splits)."""
    best = {}
    for parts, splits in _parts(physical, _rings(hw, physical)):
        sides = tuple(math.prod(p[0] for a, p in parts if a == axis) for axis in range(3))
        if sides not in best or splits < best[sides][0]:
            best[sides] = (splits, tuple(tuple(p for a, p in parts if a == axis)
                                         for axis in range(3)))
    return {sides: where for sides, (_, where) in best.items()}


def _where(hw, mesh_shape):
    """`placement`, or for a mesh no slice of the chip holds (the emulated meshes `measure`
    prices the TPU's time on, 1x1x2 or 3x1x1) its axes as if they were physical ones, with
    the chip's rule for which wrap. The planner and `check_mesh` take only real slices."""
    where = placement(hw, mesh_shape)
    if where is not None:
        return where
    rings = _rings(hw, mesh_shape)
    return tuple(((s, r, 1, i, s),) if s > 1 else () for i, (s, r) in
                 enumerate(zip(mesh_shape, rings)))


# ---- logical meshes -----------------------------------------------------------------------
def _mesh_allowed(hw, shape) -> bool:
    if hw.interconnect in ("switch", "host"):
        return bool(_slice_shapes(hw, math.prod(shape)))
    return placement(hw, tuple(shape)) is not None


def chip_counts(hw, lo: int = 1, hi: int | None = None) -> list[int]:
    """Every chip count from lo to hi that `hw` comes in."""
    hw = _hw(hw)
    hi = min(hi or hw.max_chips, hw.max_chips)
    if hw.interconnect == "torus":  # powers of two only: skip the rest quickly
        return [n for n in (2**k for k in range(hi.bit_length())) if lo <= n <= hi
                and _slice_shapes(hw, n)]
    return [n for n in range(lo, hi + 1) if _slice_shapes(hw, n)]


def mesh_shapes(hw, chips: int) -> list[tuple[int, int, int]]:
    """Every logical (X, Y, Z) of `chips` chips that a slice of `hw` holds; a clear error if
    none."""
    hw = _hw(hw)
    shapes = [s for s in factorizations(chips) if _mesh_allowed(hw, s)]
    if not shapes:
        allowed = chip_counts(hw)
        near = [n for n in (max((a for a in allowed if a < chips), default=None),
                            min((a for a in allowed if a > chips), default=None)) if n]
        if hw.interconnect == "torus" and hw.torus_dims == 2:
            why = ("it comes in 2D slices of " + ", ".join("x".join(map(str, s))
                                                           for s in SLICES_2D)
                   + f" chips (2D torus), {hw.max_chips} chips at most")
        elif hw.interconnect == "torus":
            why = (f"it comes in AxBxC slices of power-of-two sides, all at most "
                   f"{hw.wrap_unit} or all multiples of {hw.wrap_unit}, sides up to "
                   f"{hw.max_side}, {hw.max_chips} chips at most")
        elif hw.interconnect == "host":
            why = f"this machine's emulated mesh has {hw.max_chips} devices"
        else:
            why = (f"beyond one node of {hw.node_size} it takes whole nodes, "
                   f"{hw.max_chips} GPUs at most")
        raise UsageError(f"{hw.name} has no mesh of {chips} chips: {why}; try "
                         f"{' or '.join(str(n) for n in near)} chips")
    return shapes


def check_mesh(hw, mesh_shape) -> tuple[int, int, int]:
    hw = _hw(hw)
    shape = tuple(int(s) for s in mesh_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise UsageError(f"a mesh is three positive sizes (X, Y, Z), got {mesh_shape!r}")
    allowed = mesh_shapes(hw, math.prod(shape))
    if shape not in allowed:
        slices = " or ".join("x".join(map(str, s)) for s in slice_shapes(hw, math.prod(shape)))
        raise UsageError(f"{hw.name} cannot run the mesh {'x'.join(map(str, shape))} on its "
                         f"{slices} slice; its meshes of {math.prod(shape)} chips are "
                         + ", ".join("x".join(map(str, s)) for s in allowed))
    return shape


def wrapped_axes(hw, mesh_shape) -> tuple[bool, bool, bool]:
    """Per logical axis x, y, z: whether every physical axis under it is a ring (an axis of
    one chip counts as one: nothing to wrap). A switch or host has no rings."""
    hw = _hw(hw)
    if hw.interconnect != "torus":
        return (False, False, False)
    return tuple(all(p[1] for p in parts) for parts in _where(hw, tuple(mesh_shape)))


def wraps(hw, mesh_shape) -> bool:
    """Whether every axis of this mesh's slice wraps round."""
    hw = _hw(hw)
    return hw.interconnect == "torus" and all(wrapped_axes(hw, mesh_shape))


# ---- links available to a collective group ------------------------------------------------
@dataclass(frozen=True)
class GroupLinks:
    """What a group of chips spanning some mesh axes has to communicate with.

    bandwidth: the rate at which an all-gather of V output bytes over the group moves them:
      it takes V·(K−1)/K / bandwidth. One physical axis: both directions of its links (a
      line's middle link carries half of every shard each way). Several: the axis-by-axis
      phases' time (`_torus_links`).
    a2a_distance: mean hops a byte of an all-to-all travels (its own chunk counted as 0), so
      an all-to-all of V input bytes takes V·a2a_distance / bandwidth; on one ring of K chips it
      is about K/4: a quarter of an all-gather of the K·V-byte tensor (Pope et al. 2022,
      Section 3.1).
    steps, step_latency_s: hops of a ring collective over the group and the latency of each.
    neighbour_bandwidth: bytes/s from a chip to one neighbour, one way (a collective permute
      round a ring: one link on a torus, the chip's own link into the switch).
    """
    chips: int
    bandwidth: float
    a2a_distance: float
    steps: int
    step_latency_s: float
    neighbour_bandwidth: float


def group_links(hw, mesh_shape, axes) -> GroupLinks:
    hw = _hw(hw)
    return _group_links(hw, tuple(mesh_shape), tuple(sorted(set(axes), key=AXES.index)))


@functools.lru_cache(maxsize=4096)
def _group_links(hw, mesh_shape, axes) -> GroupLinks:
    k = math.prod(mesh_shape[AXES.index(a)] for a in axes)
    if k == 1:
        return GroupLinks(1, math.inf, 0.0, 0, 0.0, math.inf)
    if hw.interconnect == "torus":
        where = _where(hw, mesh_shape)
        return _torus_links(hw, _merged([p for a in axes for p in where[AXES.index(a)]]))
    return _switch_links(hw, mesh_shape, axes, k)


def _merged(parts) -> list[Part]:
    """A group holding both halves of a split physical axis holds the whole axis."""
    by_axis = {}
    for p in parts:
        by_axis.setdefault(p[3], []).append(p)
    out = []
    for axis, ps in by_axis.items():
        side = ps[0][4]
        if len(ps) == 2:  # inner and outer: the whole axis, a ring if the outer part was
            out.append((side, any(p[1] for p in ps), 1, axis, side))
        else:
            out.append(ps[0])
    return out


def _torus_links(hw, parts) -> GroupLinks:
    # A collective over several physical axes runs axis by axis (dimension-ordered): an
    # all-gather gathers along one axis, then the next with the grown data, so its hops add
    # over the axes and each axis carries the data gathered so far at that axis's own
    # bandwidth; the order is the fastest one. `bandwidth` is what makes V·(K−1)/K /
    # bandwidth that time. A part whose members sit `stride` chips apart shares each link
    # with the stride−1 groups beside it and crosses `stride` links a step.
    axis = []  # per physical axis: (chips, bandwidth, mean a2a distance, steps)
    for s, ring, stride, _, _ in parts:
        if ring:  # a bidirectional ring: both directions of both neighbours' links
            axis.append((s, 2 * hw.link_bandwidth / stride, stride * (s * s // 4) / s,
                         stride * (s // 2)))
        else:  # a line: its middle link carries half of every shard each way
            axis.append((s, 2 * hw.link_bandwidth * (s - 1) / s / stride,
                         stride * (s * s - 1) / (3 * s), stride * (s - 1)))
    k = math.prod(a[0] for a in axis)
    gather_s = min(_phases(order, k) for order in itertools.permutations(axis))
    a2a_s = sum(dist / bw for _, bw, dist, _ in axis)  # per byte: each phase moves it all
    bandwidth = (k - 1) / k / gather_s
    return GroupLinks(k, bandwidth, a2a_s * bandwidth, sum(a[3] for a in axis),
                      hw.hop_latency_s, hw.link_bandwidth)


def _phases(order, k) -> float:
    """Seconds per output byte of a dimension-ordered all-gather in this axis order."""
    held, t = 1, 0.0
    for s, bw, _, _ in order:
        held *= s
        t += held / k * (s - 1) / s / bw  # the data gathered so far, over this axis's links
    return t


def _switch_links(hw, mesh_shape, axes, k) -> GroupLinks:
    # The groups are the devices that differ only along `axes` (numbered row-major over x, y,
    # z); a group stays inside a node when all its members' ids fall in one run of node_size.
    keep = [i for i, a in enumerate(AXES) if a not in axes]
    nodes: dict[tuple, set] = {}
    for device, coords in enumerate(itertools.product(*map(range, mesh_shape))):
        nodes.setdefault(tuple(coords[i] for i in keep), set()).add(device // hw.node_size)
    inside = all(len(n) == 1 for n in nodes.values())
    # a group that leaves its node crosses InfiniBand: every ring through it goes through a
    # GPU's own NIC, at the network's bandwidth and latency
    bandwidth = hw.link_bandwidth if inside else hw.network_bandwidth
    latency = hw.hop_latency_s if inside else hw.network_latency_s
    # a switch delivers every chunk in one hop; a ring collective still takes K−1 steps
    return GroupLinks(k, bandwidth, (k - 1) / k, k - 1, latency, bandwidth)
