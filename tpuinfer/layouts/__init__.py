"""The paper's partitionings. One file per layout; this module names them and dispatches.

Feed-forward layouts (`ffn`): ws1d, ws2d, wg-x, wg-xy, wg-xyz; for a mixture of experts, the
expert-parallel layouts ep-x, ep-xy, ep-xyz.
Attention layouts (`attention`): heads, batch.
"""
from __future__ import annotations

from .layout import ATTENTION_LAYOUTS, EXPERT_LAYOUTS, FFN_LAYOUTS, Layout
from .step_terms import step_terms

__all__ = ["ATTENTION_LAYOUTS", "EXPERT_LAYOUTS", "FFN_LAYOUTS", "Layout", "step_terms"]
