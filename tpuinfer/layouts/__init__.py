"""The paper's partitionings. One file per layout; this module names them and dispatches.

Feed-forward layouts (`ffn`): ws1d, ws2d, wg-x, wg-xy, wg-xyz; for a mixture of experts, the
expert-parallel layouts ep-x, ep-xy, ep-xyz.
Attention layouts (`attention`): heads, batch.

Each file holds its layout's formula, partition specs, terms and checks, which are the cost
path's and import no JAX, and beside them its `shard_map` body, which imports JAX (and what
bodies share, `_spmd` and `looped`) only when the engine traces a step.
"""
from __future__ import annotations

from .layout import ATTENTION_LAYOUTS, EXPERT_LAYOUTS, FFN_LAYOUTS, Layout
from .step_terms import step_terms

__all__ = ["ATTENTION_LAYOUTS", "EXPERT_LAYOUTS", "FFN_LAYOUTS", "Layout", "step_terms"]
