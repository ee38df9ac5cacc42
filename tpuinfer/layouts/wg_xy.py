"""XY-weight-gathered feed-forward layout, with attention fused into it.

Weights stored `E_xF_yz`, all-gathered over x and y before use: each chip holds `EF_z`.
Activations `B_xyLE_z`: the batch is split over x and y, and z acts as 1D weight-stationary.

0. all-gather(xy) of each weight matrix: `E_xF_yz` -> `EF_z`
1. all-gather(z): `B_xyLE_z` -> `B_xyLE`
2. ·`EF_z` (and ·`EH_zD`) -> `B_xyLF_z`, `B_xyLH_zD`; attention on the local heads
3. nonlinearity; ·`F_zE` + ·`H_zDE` -> `B_xyLE` partial-sum over z
4. reduce-scatter(z) -> `B_xyLE_z`

With N = XY chips the weights are gathered over, communication per layer is
≈ 2·E·F·N/n (weights) + 2·B·L·E/N (activations): for large B·L the activations outweigh
the weights, so the weights move instead, over more chips the more tokens there are
(`tpuinfer.theory.wg_optimal_gather` has the best N; chapter 5 of the book derives it).
"""
from __future__ import annotations

from .interface import Axes
# The block, its collectives and its checks are the weight-gathered layouts' own (_one_dim):
# only the axes below differ between X-, XY- and XYZ-weight-gathered.
from ._one_dim import check_gathered as check
from ._one_dim import gathered_block as block
from ._one_dim import gathered_collectives as collectives
from ._one_dim import gathered_kv_axes as kv_axes
from ._one_dim import gathered_specs as layer_specs

NAME = "wg-xy"
AXES = Axes(batch=('x', 'y'), embed=('z',), heads=('z',))
GATHER = AXES.batch  # the weights are all-gathered over the batch axes
E_STAYS_SPLIT: tuple[str, ...] = ()  # the matmuls see the whole of E

__all__ = ["NAME", "AXES", "GATHER", "E_STAYS_SPLIT", "layer_specs", "block", "collectives",
           "kv_axes", "check"]
