"""XYZ-weight-gathered feed-forward layout, with attention fused into it.

Weights stored `E_xF_yz`, all-gathered over x, y and z before use: every chip holds whole
matrices. Activations `B_xyzLE`: the batch is split over every chip, and activations never
move (attention by heads and by batch coincide: each chip owns whole sequences).

0. all-gather(xyz) of each weight matrix: `E_xF_yz` -> `EF`
1. ·`EF` (and ·`EHD`) -> `B_xyzLF`, `B_xyzLHD`; attention on all heads of its sequences
2. nonlinearity; ·`FE` + ·`HDE` -> `B_xyzLE`, complete: no reduce-scatter

With N = XYZ chips the weights are gathered over, communication per layer is
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

NAME = "wg-xyz"
AXES = Axes(batch=('x', 'y', 'z'), embed=(), heads=())
GATHER = AXES.batch  # the weights are all-gathered over the batch axes
E_STAYS_SPLIT: tuple[str, ...] = ()  # the matmuls see the whole of E

__all__ = ["NAME", "AXES", "GATHER", "E_STAYS_SPLIT", "layer_specs", "block", "collectives",
           "kv_axes", "check"]
