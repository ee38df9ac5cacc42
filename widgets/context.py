"""The context explorer: KV-cache memory per chip, and the longest context that fits, for
multihead attention, multiquery sharded by heads and multiquery sharded by batch
(`tpuinfer.sweeps.context_curves`, which calls `planner.kv_bytes_per_chip` and
`planner.max_context`)."""
from __future__ import annotations

import ipywidgets as W
from plotly.subplots import make_subplots

from tpuinfer import MODELS
from tpuinfer.hardware import hardware_names
from tpuinfer.kv import ATTENTION_VARIANTS
from tpuinfer.sweeps import context_curves

from .base import CONTROL_STYLE, Explorer, dropdown, int_text

COLOURS = dict(zip(ATTENTION_VARIANTS, ("#e45756", "#9d9d9d", "#4c78a8")))
NAMES = {"multihead": "multihead", "multiquery-heads": "multiquery, by heads",
         "multiquery-batch": "multiquery, by batch"}


class ContextExplorer(Explorer):
    """Controls: model, chips, batch, kv_fraction (the share of HBM kept for the cache; the
    paper keeps 30%), hardware. Left: KV bytes per chip against context at that batch;
    right: the longest context that fits against batch."""

    def __init__(self, model: str = "palm-540b", chips: int = 64, batch: int = 128, *,
                 kv_fraction: float = 0.3, hardware: str = "tpu-v4", contexts=None,
                 batches=None):
        self.contexts = list(contexts or [2**k for k in range(7, 18)])  # 128 .. 128k
        self.batches = list(batches or [2**k for k in range(11)])  # 1 .. 1024
        c = {
            "model": dropdown("model", list(MODELS), model),
            "chips": int_text("chips", chips, hi=4096),
            "batch": int_text("batch", batch, hi=2**16, tooltip="sequences (left plot)"),
            "kv_fraction": W.BoundedFloatText(
                value=kv_fraction, min=0.0, max=1.0, step=0.05, description="KV share of HBM",
                style=CONTROL_STYLE, layout=W.Layout(width="13em"),
                tooltip="fraction of each chip's HBM kept for the KV cache"),
            "hardware": dropdown("hardware", hardware_names(), hardware),
        }
        super().__init__(c, self._empty_figure())
        self.update()

    @staticmethod
    def _empty_figure():
        fig = make_subplots(rows=1, cols=2, subplot_titles=(
            "KV cache per chip against context", "longest context that fits against batch"))
        for col in (1, 2):
            for v in ATTENTION_VARIANTS:
                fig.add_scatter(x=[], y=[], mode="lines+markers", name=NAMES[v],
                                legendgroup=v, showlegend=col == 1,
                                line=dict(color=COLOURS[v]), row=1, col=col)
        fig.update_xaxes(type="log", title="context (tokens)", col=1)
        fig.update_xaxes(type="log", title="batch (sequences)", col=2)
        fig.update_yaxes(type="log", title="KV cache per chip (bytes)", tickformat=".2s",
                         col=1)
        fig.update_yaxes(type="log", title="max context (tokens)", col=2)
        fig.update_layout(width=960, height=460, margin=dict(t=90, l=70, r=20, b=50),
                          title_font_size=14)
        return fig

    def compute(self):
        v = {k: w.value for k, w in self.controls.items()}
        return context_curves(v["model"], v["chips"], v["batch"], self.contexts, self.batches,
                              kv_fraction=v["kv_fraction"], hardware=v["hardware"])

    def draw(self, data):
        n = len(ATTENTION_VARIANTS)
        for i, v in enumerate(ATTENTION_VARIANTS):
            self.figure.data[i].update(x=data["contexts"], y=data["kv_bytes_per_chip"][v])
            self.figure.data[n + i].update(x=data["batches"], y=data["max_context"][v])
        at = data["max_context_at_batch"]
        self.figure.layout.title.text = (
            f"{data['model']} on {data['chips']} {data['hardware']} chips, batch "
            f"{data['batch']}<br>longest context: " + ", ".join(
                f"{NAMES[v]} {at[v]:,}" for v in ATTENTION_VARIANTS if at[v] is not None))

    def notes(self, data):
        return [f"{NAMES[v]}: {why}" for v, why in data["errors"].items()]
