"""XYZ-expert-parallel layout, for a mixture of experts: experts over every chip, no tensor
parallelism.

Weights: the experts `M_xyzEF`, `M_xyzFE` (each chip holds M/n whole experts); the router,
attention and the shared experts whole on every chip (attention is data-parallel: each chip
its own sequences). Activations `B_xyzLE`: nothing moves but the tokens going to their experts.

a1-a3. attention on the chip's own B/n sequences, every head (by heads and by batch coincide)
1.-3. norm, route and dispatch on the chip: `B_xyzMCE`
4. all-to-all(xyz): `B_xyzMCE` -> `BM_xyzCE`
5. the chip's M/n experts, whole -> `BM_xyzCE`
7. all-to-all(xyz): `BM_xyzCE` -> `B_xyzMCE`
8. combine -> `B_xyzLE`

Expert-parallel degree n, tensor-parallel degree 1: the fewest expert weights a chip reads,
the most chips each all-to-all spans, and every chip holds all of attention. The steps,
their collectives and the checks: `_experts`.
"""
from __future__ import annotations

from . import _experts
# the interface's steps, terms and checks are the expert-parallel layouts' own (`_experts`):
# only the axes below differ between ep-x, ep-xy and ep-xyz
from ._experts import E_STAYS_SPLIT, GATHER, block, check, collectives, kv_axes
from .interface import Axes

NAME = "ep-xyz"
AXES = Axes(batch=("x", "y", "z"), embed=(), heads=())
GATHER: tuple[str, ...] = ()  # weights never move: tokens do
E_STAYS_SPLIT: tuple[str, ...] = ()  # E is never split


def layer_specs(cfg, mesh_shape=None) -> dict:
    return _experts.layer_specs(cfg, AXES, mesh_shape)

