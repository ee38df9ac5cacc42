"""X-weight-gathered feed-forward layout, with attention fused into it.

Weights stored `E_xF_yz` (as 2D weight-stationary), all-gathered over x before use: each chip
holds `EF_yz`. Activations `B_xLE_yz`: the batch is split over x, and y, z act as a 1D
weight-stationary layout.

0. all-gather(x) of each weight matrix: `E_xF_yz` -> `EF_yz`
1. all-gather(yz): `B_xLE_yz` -> `B_xLE`
2. ·`EF_yz` (and ·`EH_yzD`) -> `B_xLF_yz`, `B_xLH_yzD`; attention on the local heads
3. nonlinearity; ·`F_yzE` + ·`H_yzDE` -> `B_xLE` partial-sum over yz
4. reduce-scatter(yz) -> `B_xLE_yz`

With N = X chips the weights are gathered over, communication per layer is
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

NAME = "wg-x"
AXES = Axes(batch=('x',), embed=('z', 'y'), heads=('z', 'y'))
GATHER = AXES.batch  # the weights are all-gathered over the batch axes
E_STAYS_SPLIT: tuple[str, ...] = ()  # the matmuls see the whole of E

__all__ = ["NAME", "AXES", "GATHER", "E_STAYS_SPLIT", "layer_specs", "block", "collectives",
           "kv_axes", "check"]
