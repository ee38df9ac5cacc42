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
≈ 2·E·F·N/n (weights) + 2·B·L·E/N (activations), optimal at N = √(B·L·n/F): for large B·L
the activations outweigh the weights, so the weights move instead (`tpuinfer.cost`).
"""
from __future__ import annotations

from . import _one_dim
from ._common import Axes

NAME = "wg-x"
AXES = Axes(batch=('x',), embed=('z', 'y'), heads=('z', 'y'))
GATHER = AXES.batch  # the weights are all-gathered over the batch axes
E_STAYS_SPLIT: tuple[str, ...] = ()  # the matmuls see the whole of E


def layer_specs(cfg) -> dict:
    return _one_dim.gathered_specs(cfg)


def block(ctx, x_BLE, w, cache, pos):
    return _one_dim.block(ctx, x_BLE, w, cache, pos, layer_specs(ctx.cfg))


def collectives(step) -> list:
    return _one_dim.collectives(step, layer_specs(step.cfg))


def check(step):
    _one_dim.check_gathered(step)
