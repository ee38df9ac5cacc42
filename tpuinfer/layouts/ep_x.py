"""X-expert-parallel layout, for a mixture of experts: experts over x, tensor-parallel over y, z.

Weights: the experts `M_xEF_yz`, `M_xF_yzE` (each chip of x holds M/X experts, each split over
y·z), the router `EM` on every chip, attention `EH_yzD`, `H_yzDE` and the shared experts
`EU_yz`, `U_yzE` held alike by every chip of x. Activations `B_xLE_yz`: each chip of x runs its
own B/X sequences, and y, z act as 1D weight-stationary inside them.

a1-a3. attention as 1D weight-stationary over yz: all-gather(yz), heads over yz, reduce-scatter(yz)
1. all-gather(yz): `B_xLE_yz` -> `B_xLE`
2.-3. route and dispatch on the chip: `B_xMCE`
4. all-to-all(x): `B_xMCE` -> `BM_xCE`
5. the chip's M/X experts, F over yz: ·`M_xEF_yz`, ·`M_xF_yzE` -> `BM_xCE` partial-sum over yz
6. reduce-scatter(yz) -> `BM_xCE_yz`
7. all-to-all(x): `BM_xCE_yz` -> `B_xMCE_yz`
8. combine -> `B_xLE_yz`

Expert-parallel degree X, tensor-parallel degree Y·Z: on a mesh of X = 1 no all-to-all runs
and every chip holds a slice of every expert (tensor parallelism alone, as a dense model's
1D weight-stationary). The steps, their collectives and the checks: `_experts`.
"""
from __future__ import annotations

from . import _experts
# the interface's steps, terms and checks are the expert-parallel layouts' own (`_experts`):
# only the axes below differ between ep-x, ep-xy and ep-xyz
from ._experts import E_STAYS_SPLIT, GATHER, block, check, collectives, kv_axes
from .interface import Axes

NAME = "ep-x"
AXES = Axes(batch=("x",), embed=("y", "z"), heads=("y", "z"))


def layer_specs(cfg, mesh_shape=None) -> dict:
    return _experts.layer_specs(cfg, AXES, mesh_shape)

