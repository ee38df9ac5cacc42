"""What a layout file provides: the interface every feed-forward and attention layout meets.

A layout is a module (`ws2d.py`, `attn_batch.py`, ...) that the registry (`registry.FFN`,
`registry.ATTENTION`) names. `FfnLayout` and `AttentionLayout` spell out what each must define;
tests/test_layouts.py checks every registered module against them. Two context objects carry
everything a layout is asked:
- `Ctx`, for the code: the model, the mesh shape, both layouts and the schedule (what a
  `shard_map` body needs; the same for every batch);
- `Step`, for the terms: a `Ctx` and one step's batch, tokens per sequence, bytes per
  activation element and weight format (what `check`, `collectives` and `per_chip` need).

`ws2d.py` is the model to follow: its docstring's numbered steps are the numbered comments of
its body, and `collectives()` beside it lists those same steps' collectives.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from ..axes import group_size
from ..config import ModelConfig
from ..terms import Collective


@dataclass(frozen=True)
class Axes:
    """Where a feed-forward layout puts things, as mesh-axis tuples (order = linearisation).

    batch: the residual's B is split over these (weight-gathered layouts).
    embed: the residual's E is split over these (between layers).
    heads: F and the attention heads are split over these at the nonlinearity / attention.
    """
    batch: tuple[str, ...]
    embed: tuple[str, ...]
    heads: tuple[str, ...]


@dataclass(frozen=True)
class Ctx:
    """Static facts a `shard_map` body needs: the model, the mesh sizes, the layouts."""
    cfg: ModelConfig
    mesh_shape: tuple[int, int, int]
    axes: Axes
    attention: AttentionLayout
    ffn: FfnLayout
    looped: bool = False  # Looped CollectiveEinsum for the collectives around the matmuls
    bidirectional: bool = False

    def size(self, axes: tuple[str, ...]) -> int:
        return group_size(self.mesh_shape, axes)


@dataclass(frozen=True)
class Step:
    """One step of a layout on a mesh, as the terms see it: `tokens` per sequence (1 in
    decode) for `batch` sequences, activations of `act_bytes` bytes per element (2: bf16 on a
    chip; 4: the f32 emulated engine), weights in format `weights`."""
    ctx: Ctx
    batch: int
    tokens: int = 1
    act_bytes: float = 2
    weights: str = "bf16"

    @property
    def cfg(self) -> ModelConfig:
        return self.ctx.cfg

    @property
    def mesh_shape(self) -> tuple[int, int, int]:
        return self.ctx.mesh_shape

    @property
    def axes(self) -> Axes:
        return self.ctx.axes

    def size(self, axes: tuple[str, ...]) -> int:
        return self.ctx.size(axes)

    @property
    def sequences(self) -> int:
        """Sequences each chip runs the matmuls for: B/|b|."""
        return self.batch // self.size(self.axes.batch)


@runtime_checkable
class FfnLayout(Protocol):
    """A feed-forward layout, with attention fused into its block (the paper's Section 3.2)."""
    NAME: str  # the name users pass (`Layout(ffn=...)`)
    AXES: Axes  # where the residual's B and E, and F and the heads, are split
    GATHER: tuple[str, ...]  # axes the weights are all-gathered over before use (() if none)
    E_STAYS_SPLIT: tuple[str, ...]  # axes E stays split over inside the matmuls (() if none)

    def layer_specs(self, cfg: ModelConfig, mesh_shape=None) -> dict[str, tuple]:
        """The partition spec (`_common.Spec`) of each of one layer's parameters, as stored
        (grouped-query attention's W_k, W_v depend on the mesh's sizes: `_common.kv_split`)."""

    def kv_axes(self, ctx: Ctx) -> tuple[str, ...]:
        """The axes the K/V heads a chip computes are split over, as attention receives them:
        a prefix of AXES.heads (none for multiquery, all of them for multihead)."""

    def check(self, step: Step) -> None:
        """Raise `LayoutError` naming the first dimension this mesh does not divide."""

    def block(self, ctx: Ctx, x_BLE, w: dict, cache: dict, pos):
        """One layer inside the `shard_map` body: (x_BLE, cache) after the layer."""

    def collectives(self, step: Step) -> list[Collective]:
        """Every collective one layer of `block` runs, per chip, in the order it runs them."""


@runtime_checkable
class AttentionLayout(Protocol):
    """An attention layout inside a feed-forward layout's block (the paper's Section 3.3)."""
    NAME: str  # the name users pass (`Layout(attention=...)`)
    # The layout splits the KV cache over every chip the batch allows (all n of them once B
    # is a multiple of n): the planner prefers it between two of equal time (they then run
    # the same program).
    CACHE_OVER_ALL_CHIPS: bool

    def cache_spec(self, step: Step) -> tuple:
        """The spec of every layer's K and V cache, [B, S, K, D], for this step's batch."""

    def check(self, step: Step) -> None:
        """Raise `LayoutError` when this batch cannot be split as the layout splits it."""

    def attend(self, ctx: Ctx, q_BLHD, k_BLKD, v_BLKD, cache: dict, pos):
        """Attention inside the body: (o_BLHD split as q_BLHD came, the updated cache)."""

    def collectives(self, step: Step) -> list[Collective]:
        """The collectives `attend` runs, per chip, per attention pass of a layer."""

    def per_chip(self, step: Step) -> tuple[int, int]:
        """(sequences, query heads) each chip attends for: the attention FLOPs and the
        largest score block follow from them."""
