"""The Pareto explorer (the paper's Figure 1): latency against cost for PaLM 8B, 62B and 540B
in bf16 and int8, prefill and decode (`tpuinfer.sweeps.pareto_curves`, which calls
`planner.pareto`). Hovering a point shows its chips, batch, mesh and layouts."""
from __future__ import annotations

import itertools

import ipywidgets as W
from plotly.subplots import make_subplots

from tpuinfer.hardware import hardware_names
from tpuinfer.sweeps import pareto_curves

from .base import CONTROL_STYLE, Explorer, dropdown, int_text

# palm-540b-64heads: the paper's own runs pad the heads to 64, so attention by heads spans 64+
MODELS = ("palm-8b", "palm-62b", "palm-540b", "palm-540b-64heads")
FORMATS = ("bf16", "int8")
COLOURS = dict(zip(MODELS, ("#4c78a8", "#54a24b", "#e45756", "#b279a2")))
DASH = {"bf16": "solid", "int8": "dot"}
HOVER = ("<b>%{fullData.name}</b><br>%{customdata[0]} chips (mesh %{customdata[2]}), "
         "batch %{customdata[1]}<br>ffn %{customdata[3]}, attention %{customdata[4]}, "
         "%{customdata[6]}<br>"
         "latency %{x:.3g} ms, cost %{y:.3g} chip-ms/token, MFU %{customdata[5]:.1%}"
         "<extra></extra>")


class ParetoExplorer(Explorer):
    """Controls: models, weights (multiple choice), hardware, input_len, gen_len. `chips` and
    `batches` narrow the sweep (default: the planner's, 1 to 256 chips and batch 1 to 1024;
    the full six curves take a minute or two on 2 cores, then come from a cache)."""

    def __init__(self, models=MODELS, weights=FORMATS, *, hardware: str = "tpu-v4",
                 input_len: int = 2048, gen_len: int = 64, chips=None, batches=None):
        self.chips, self.batches = chips, batches
        c = {
            "models": W.SelectMultiple(options=MODELS, value=tuple(models), rows=len(MODELS),
                                       description="models", style=CONTROL_STYLE,
                                       layout=W.Layout(width="16em")),
            "weights": W.SelectMultiple(options=FORMATS, value=tuple(weights), rows=2,
                                        description="weights", style=CONTROL_STYLE,
                                        layout=W.Layout(width="11em")),
            "hardware": dropdown("hardware", hardware_names(), hardware),
            "input_len": int_text("input tokens", input_len, lo=0,
                                  tooltip="prompt length each sequence prefills"),
            "gen_len": int_text("generated", gen_len, lo=0,
                                tooltip="tokens each sequence decodes"),
        }
        super().__init__(c, self._empty_figure(), rows=[
            ["models", "weights"], ["hardware", "input_len", "gen_len"]])
        self.update()

    @staticmethod
    def _empty_figure():
        fig = make_subplots(rows=1, cols=2, subplot_titles=(
            "prefill: latency of the whole prefill", "decode: latency per generated token"))
        for col, (model, fmt) in itertools.product((1, 2), itertools.product(MODELS, FORMATS)):
            fig.add_scatter(x=[], y=[], mode="lines+markers", name=f"{model} {fmt}",
                            legendgroup=f"{model} {fmt}", showlegend=col == 1,
                            line=dict(color=COLOURS[model], dash=DASH[fmt]),
                            hovertemplate=HOVER, row=1, col=col)
        fig.update_xaxes(type="log", title="latency (ms)")
        fig.update_yaxes(type="log", title="cost (chip-ms per token)", col=1)
        fig.update_yaxes(type="log", col=2)
        fig.update_layout(width=960, height=460, margin=dict(t=60, l=70, r=20, b=50),
                          title_font_size=14)
        return fig

    def busy_text(self):
        return "sweeping chips, batches, meshes and layouts …"

    def compute(self):
        v = {k: w.value for k, w in self.controls.items()}
        with self.progress("sweeping") as progress:
            return pareto_curves(v["models"], v["weights"], hardware=v["hardware"],
                                 input_len=v["input_len"], gen_len=v["gen_len"],
                                 chips=self.chips, batches=self.batches, progress=progress)

    def draw(self, data):
        for trace in self.figure.data:
            phase = "prefill" if trace.xaxis == "x" else "decode"
            curve = data[phase].get(trace.name)
            if curve is None:
                trace.update(x=[], y=[], customdata=[], visible=False)
                continue
            trace.update(visible=True, x=curve["latency_ms"], y=curve["cost_chip_ms_per_token"],
                         customdata=[[p["chips"], p["batch"], "×".join(map(str, p["mesh"])),
                                      p["ffn"], p["attention"], p["mfu"], p["schedule"]]
                                     for p in curve["points"]])
        self.figure.layout.title.text = f"latency against cost on {data['hardware']}"

    def notes(self, data):
        return [f"{label}: {why}" for label, why in data["errors"].items()]
