"""The crossover explorer (the paper's Figure 3): communication per chip against tokens per
batch for every feed-forward layout (`tpuinfer.sweeps.crossover`), with real steps measured
on the emulated mesh laid over the curves (`tpuinfer.sweeps.measured_crossover`)."""
from __future__ import annotations

import ipywidgets as W
import plotly.graph_objects as go

from tpuinfer import MODELS
from tpuinfer.config import get_model
from tpuinfer.errors import UsageError
from tpuinfer.hardware import PAPER_MESHES
from tpuinfer.layouts import ATTENTION_LAYOUTS, FFN_LAYOUTS
from tpuinfer.measure import Flag
from tpuinfer.mesh import format_shape
from tpuinfer.quant import WEIGHT_FORMATS
from tpuinfer.report import flag_text
from tpuinfer.sweeps import crossover, measured_crossover

from .base import Explorer, dropdown, int_text, toggles

COLOURS = dict(zip(FFN_LAYOUTS, ("#4c78a8", "#f58518", "#54a24b", "#e45756", "#b279a2")))


class CrossoverExplorer(Explorer):
    """Controls: chips (the paper's mesh for that many), model, d_model, d_ff, attention,
    weights, measured (overlay real steps of the same prefill at `measure_tokens`).

    f32 weights are the default: the emulated CPU then moves exactly the bytes the curves
    predict (it widens bf16 collectives to f32), and the crossovers lie at the same tokens per
    batch as in bf16, where every byte is halved."""

    def __init__(self, model: str = "tiny", chips: int = 64, *, attention: str = "heads",
                 weights: str = "f32", tokens=None, measure_tokens=None,
                 measured: bool = False):
        cfg = get_model(model)
        self.tokens = list(tokens or [2**k for k in range(21)])  # 1 .. 1M tokens per batch
        self.measure_tokens = measure_tokens
        c = {
            "chips": dropdown("chips", [(f"{n} ({format_shape(s)})", n)
                                        for n, s in PAPER_MESHES.items()], chips,
                              "chip count, on the mesh the paper used for it"),
            # the dense models: the feed-forward layouts here split a dense block
            "model": dropdown("model", [m for m, c in MODELS.items() if not c.n_experts],
                              model),
            "d_model": int_text("d_model (E)", cfg.E, tooltip="model width"),
            "d_ff": int_text("d_ff (F)", cfg.F, tooltip="feed-forward width"),
            "attention": dropdown("attention", ATTENTION_LAYOUTS, attention),
            "weights": toggles("weights", WEIGHT_FORMATS, weights),
            "measured": W.Checkbox(value=measured, description="overlay real steps",
                                   indent=False, tooltip="compile and measure each layout "
                                   "on the emulated mesh (tiny-sized models only)"),
        }
        c["model"].observe(self._reset_dimensions, names="value")
        super().__init__(c, self._empty_figure(), rows=[
            ["chips", "model", "d_model", "d_ff"], ["attention", "weights", "measured"]])
        self.update()

    @staticmethod
    def _empty_figure():
        fig = go.Figure()
        for ffn in FFN_LAYOUTS:
            fig.add_scatter(x=[], y=[], mode="lines", name=ffn, legendgroup=ffn,
                            line=dict(color=COLOURS[ffn], width=2))
        for ffn in FFN_LAYOUTS:
            fig.add_scatter(x=[], y=[], mode="markers", name=f"{ffn} measured",
                            legendgroup=ffn, showlegend=False,  # until it has points
                            marker=dict(color=COLOURS[ffn], size=11, symbol="x-thin-open",
                                        line=dict(width=3)))
        fig.update_xaxes(type="log", title="tokens per batch (B·L)")
        # the byte convention (tpuinfer.terms): an all-gather's output, a reduce-scatter's
        # input, per chip; a chip sends (K-1)/K of that over its links
        fig.update_yaxes(type="log", title="collective bytes per chip, one step (convention: "
                                           "all-gather output, reduce-scatter input)",
                         tickformat=".2s", title_font_size=11)
        fig.update_layout(width=900, height=480, margin=dict(t=60, l=70, r=20, b=50),
                          title_font_size=14, hovermode="closest")
        return fig

    def _reset_dimensions(self, change):
        cfg = get_model(change["new"])
        with self.hold():
            self.controls["d_model"].value, self.controls["d_ff"].value = cfg.E, cfg.F

    def config(self):
        v = {k: w.value for k, w in self.controls.items()}
        base = get_model(v["model"])
        if (v["d_model"], v["d_ff"]) == (base.E, base.F):
            return base
        return base.replace(name=f"{base.name} E={v['d_model']} F={v['d_ff']}",
                            d_model=v["d_model"], d_ff=v["d_ff"])

    def busy_text(self):
        return ("compiling and measuring every layout …" if self.controls["measured"].value
                else "pricing every layout …")

    def compute(self):
        v = {k: w.value for k, w in self.controls.items()}
        cfg, mesh = self.config(), PAPER_MESHES[v["chips"]]
        data = crossover(cfg, mesh, self.tokens, attention=v["attention"], weights=v["weights"])
        data["measured"], data["measured_error"] = None, None
        if v["measured"]:
            points = self.measure_tokens or [v["chips"], 4 * v["chips"]]
            try:
                with self.progress("measuring") as progress:
                    data["measured"] = measured_crossover(
                        cfg, mesh, points, attention=v["attention"], weights=v["weights"],
                        progress=progress)
            except UsageError as err:  # the curves still stand; say why there are no points
                data["measured_error"] = f"no real steps: {err}"
        return data

    def draw(self, data):
        n = len(FFN_LAYOUTS)
        for i, ffn in enumerate(FFN_LAYOUTS):
            ys = data["comm_bytes"].get(ffn)
            self.figure.data[i].update(x=data["tokens"] if ys else [], y=ys or [])
            m = data["measured"]
            if m and ffn in m["comm_bytes"]:
                self.figure.data[n + i].update(
                    x=m["tokens"], y=m["comm_bytes"][ffn], showlegend=True,
                    hovertext=[None if p is None else f"predicted for this CPU: {p:.4g} B"
                               for p in m["predicted_comm_bytes"][ffn]])
            else:
                self.figure.data[n + i].update(x=[], y=[], showlegend=False)
        self.figure.layout.title.text = (
            f"{data['model']} on {data['mesh'][0]}×{data['mesh'][1]}×{data['mesh'][2]}, "
            f"attention by {data['attention']}, {data['weights']} weights: one prefill step")

    def notes(self, data):
        out = [f"{ffn} cannot run here: {why}" for ffn, why in data["errors"].items()]
        m = data["measured"]
        if m:
            out += [f"{ffn} measured: {why}" for ffn, why in m["errors"].items()]
            # only widened collectives bear on communication bytes
            out += [flag_text(f) for f in m["flags"] if f == Flag.COLLECTIVES_WIDENED.value]
        if data["measured_error"]:
            out.append(data["measured_error"])
        return out
