"""XY-expert-parallel layout, for a mixture of experts: experts over x·y, tensor-parallel over z.

Weights: the experts `M_xyEF_z`, `M_xyF_zE` (each chip of x·y holds M/(XY) experts, each split
over z), the router `EM` on every chip, attention `EH_zD`, `H_zDE` and the shared experts
`EU_z`, `U_zE` held alike by every chip of x·y. Activations `B_xyLE_z`.

a1-a3. attention as 1D weight-stationary over z: all-gather(z), heads over z, reduce-scatter(z)
1. all-gather(z): `B_xyLE_z` -> `B_xyLE`
2.-3. route and dispatch on the chip: `B_xyMCE`
4. all-to-all(xy): `B_xyMCE` -> `BM_xyCE`
5. the chip's M/(XY) experts, F over z -> `BM_xyCE` partial-sum over z
6. reduce-scatter(z) -> `BM_xyCE_z`
7. all-to-all(xy): `BM_xyCE_z` -> `B_xyMCE_z`
8. combine -> `B_xyLE_z`

Expert-parallel degree X·Y, tensor-parallel degree Z. The steps, their collectives and the
checks: `_experts`.
"""
from __future__ import annotations

from . import _experts
# the interface's steps, terms and checks are the expert-parallel layouts' own (`_experts`):
# only the axes below differ between ep-x, ep-xy and ep-xyz
from ._experts import E_STAYS_SPLIT, GATHER, block, check, collectives, kv_axes
from .interface import Axes

NAME = "ep-xy"
AXES = Axes(batch=("x", "y"), embed=("z",), heads=("z",))


def layer_specs(cfg, mesh_shape=None) -> dict:
    return _experts.layer_specs(cfg, AXES, mesh_shape)

