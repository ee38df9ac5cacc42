"""The slices each chip family is sold in, the logical meshes placed on them, and what a
collective over a group of their chips costs, link by link (`tpuinfer.slices`).

Hand-worked on the datasheets: TPU v4 45 GB/s per link and direction (Pope et al. 2022,
Section 4), v5e 50 (400 GB/s over 4 links, both ways), v6e 100, v5p 100; 1 µs a hop; H100
450 GB/s into its NVSwitch, 50 GB/s (400 Gb/s) through its NIC, 5 µs a step across nodes.
"""
import pytest

from tpuinfer.cost import collective_time
from tpuinfer.hardware import (chip_counts, get_hardware, group_links, mesh_shapes,
                               slice_shapes, wrapped_axes)
from tpuinfer.slices import placement
from tpuinfer.terms import Collective


@pytest.mark.parametrize("hw,chips,slices", [
    # cloud.google.com/tpu/docs/v5e and /v6e: 1x1, 2x2, 2x4, 4x4, 4x8, 8x8, 8x16, 16x16
    ("tpu-v5e", 16, [(4, 4)]), ("tpu-v5e", 8, [(2, 4)]), ("tpu-v6e", 128, [(8, 16)]),
    ("tpu-v5e", 2, []),
    # types-topologies: all sides at most 4 (2x2x1 to 2x4x4), or whole 4x4x4 cubes
    ("tpu-v4", 4, [(2, 2, 1)]), ("tpu-v4", 16, [(2, 2, 4)]), ("tpu-v4", 64, [(4, 4, 4)]),
    ("tpu-v4", 256, [(4, 8, 8), (4, 4, 16)]), ("tpu-v5p", 32, [(2, 4, 4)]), ("tpu-v4", 2, []),
    # 8-GPU NVSwitch nodes: up to 8 in one, whole nodes beyond
    ("h100-sxm", 4, [(1, 4)]), ("h100-sxm", 16, [(2, 8)]), ("h100-sxm", 12, [])])
def test_each_family_comes_in_its_makers_slices(hw, chips, slices):
    assert slice_shapes(hw, chips) == slices


def test_chip_counts_are_the_slices_sizes():
    assert chip_counts("tpu-v5e") == [1, 4, 8, 16, 32, 64, 128, 256]
    assert chip_counts("tpu-v4", 1, 256) == [4, 8, 16, 32, 64, 128, 256]
    assert chip_counts("h100-sxm", 1, 24) == [1, 2, 3, 4, 5, 6, 7, 8, 16, 24]


def test_a_logical_axis_spans_whole_physical_axes_or_half_of_one():
    """v5e-16 is a 4x4: 16 chips as one logical axis over both physical axes, or 4x4; the
    1x8x2 of jax-llm-examples' `jax.make_mesh((1, 8, 2))` splits one physical axis, its run
    of 2 neighbours under y beside the other axis, its stride of 2 under z."""
    v5e = get_hardware("tpu-v5e")
    assert placement(v5e, (16, 1, 1)) == (((4, False, 1, 0, 4), (4, False, 1, 1, 4)), (), ())
    assert placement(v5e, (1, 8, 2)) == ((), ((4, False, 1, 0, 4), (2, False, 1, 1, 4)),
                                         ((2, False, 2, 1, 4),))
    assert (1, 8, 2) in mesh_shapes(v5e, 16) and (16, 1, 1) in mesh_shapes(v5e, 16)
    assert len(mesh_shapes(v5e, 16)) == 15  # every (2^a, 2^b, 2^c), a+b+c = 4
    # the paper's 2x4x2 for 16 chips is the 2x2x4 slice's axes in another order, whole
    assert placement(get_hardware("tpu-v4"), (2, 4, 2)) == (
        ((2, False, 1, 0, 2),), ((4, False, 1, 2, 4),), ((2, False, 1, 1, 2),))


@pytest.mark.parametrize("hw,mesh,axes,bandwidth,steps", [
    # v5e 4x4, no wraparound (a side short of 16): a line of 4 carries 2·50·3/4 = 75 GB/s;
    # over both axes, y then x: V/4·3/4 then V·3/4 at 75 GB/s: V·15/16 at 75 GB/s; 3+3 hops
    ("tpu-v5e", (16, 1, 1), "x", 75e9, 6),
    ("tpu-v5e", (4, 4, 1), "x", 75e9, 3),
    # the stride-2 pair of 1x8x2's z: members two chips apart on a line of 4, each link shared
    # with the pair beside it: 2·50·1/2 / 2 = 25 GB/s, 2 hops
    ("tpu-v5e", (1, 8, 2), "z", 25e9, 2),
    # v6e 16x16: each full side of 16 wraps: a ring, 2·100 GB/s, 8 hops
    ("tpu-v6e", (16, 16, 1), "y", 200e9, 8),
    # v4 cube: rings of 4 (90 GB/s, 2 hops); v5p's links 100 GB/s a direction
    ("tpu-v4", (4, 4, 4), "z", 90e9, 2), ("tpu-v5p", (4, 4, 4), "yz", 200e9, 4),
    # v4 2x2x4: lines; the 4 a line of 3 hops at 2·45·3/4
    ("tpu-v4", (2, 2, 4), "z", 67.5e9, 3),
    # H100: one NVSwitch hop a step inside a node; across nodes the NIC
    ("h100-sxm", (1, 2, 8), "z", 450e9, 7), ("h100-sxm", (1, 2, 8), "y", 50e9, 1)])
def test_links_a_group_uses(hw, mesh, axes, bandwidth, steps):
    g = group_links(hw, mesh, axes)
    assert (g.bandwidth, g.steps) == (pytest.approx(bandwidth), steps)


@pytest.mark.parametrize("hw,mesh,coll,seconds", [
    # v5e-16 TP16 all-gather of 8·8192 bf16 (131 kB out per chip): 131072·15/16 / 75 GB/s
    # + 6 hops of 1 µs
    ("tpu-v5e", (16, 1, 1), Collective("all-gather", ("x", "y", "z"), 16, 131072),
     131072 * 15 / 16 / 75e9 + 6e-6),
    # H100 pair inside a node: one NVLink step of 1 µs; the same pair across two nodes
    # (1x2x8's y): the NIC's 50 GB/s and 5 µs
    ("h100-sxm", (1, 2, 8), Collective("reduce-scatter", ("z",), 8, 8e6),
     8e6 * 7 / 8 / 450e9 + 7e-6),
    ("h100-sxm", (1, 2, 8), Collective("reduce-scatter", ("y",), 2, 8e6),
     8e6 / 2 / 50e9 + 5e-6),
    # v4-calibrated: its fitted link efficiency and hop latency on the cube's ring of 4
    ("tpu-v4-calibrated", (4, 4, 4), Collective("all-gather", ("x",), 4, 1.2e6),
     1.2e6 * 3 / 4 / (90e9 * 0.6454) + 2 * 4.257e-6)])
def test_collective_priced_per_link_and_hop(hw, mesh, coll, seconds):
    assert collective_time(coll, hw, mesh).total_s == pytest.approx(seconds)


def test_wraparound_per_family():
    assert wrapped_axes("tpu-v5e", (4, 4, 1)) == (False, False, True)  # size-1 z: nothing
    assert wrapped_axes("tpu-v6e", (16, 16, 1)) == (True, True, True)
    assert wrapped_axes("tpu-v4", (4, 4, 4)) == (True, True, True)
    assert wrapped_axes("h100-sxm", (1, 2, 8)) == (False, False, False)
