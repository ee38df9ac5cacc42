"""The site's explorable figures: the cost model's answers, precomputed over a grid of its
inputs when the site is built, so that a reader with no kernel can move a slider and see them.

Every number comes from `tpuinfer` (the same calls the chapters and widgets make); this module
only lays the answers out as plotly figures whose slider steps show one precomputed set of
traces each. Each figure names its profile and rule: all are predictions.
"""
from __future__ import annotations

import html

import plotly.graph_objects as go
import plotly.io as pio

import booktools  # beside this module in book/: chapter 14 draws the same figure
from tpuinfer import accuracy, cost, planner, sweeps
from tpuinfer.errors import UsageError
from tpuinfer.hardware import PAPER_MESHES, mesh_shapes
from tpuinfer.layouts import FFN_LAYOUTS, Layout

COLOURS = dict(zip(FFN_LAYOUTS, ("#636efa", "#ef553b", "#00cc96", "#ab63fa", "#ffa15a")))


def slider_figure(steps: list[tuple[str, list[go.BaseTraceType]]], prefix: str, *,
                  height: int = 460, **layout) -> go.Figure:
    """A figure holding every step's traces, the first step's shown, and a slider whose steps
    show one step's traces each (plotly's own "update" method: no kernel involved). No width:
    the page draws it as wide as its column, a phone's screen included."""
    fig = go.Figure()
    owner = []
    for i, (_, traces) in enumerate(steps):
        for trace in traces:
            trace.visible = i == 0
            fig.add_trace(trace)
            owner.append(i)
    fig.update_layout(sliders=[dict(
        active=0, currentvalue=dict(prefix=prefix), pad=dict(t=50),
        steps=[dict(label=label, method="update",
                    args=[{"visible": [o == i for o in owner]}])
               for i, (label, _) in enumerate(steps)])], height=height,
        **layout)
    return fig


def gib_traces(x, bytes_by_name: dict, colours: dict | None = None) -> list[go.Scatter]:
    """One line per name, in GiB; a None point (the layout or variant cannot run there) is a
    gap."""
    return [go.Scatter(x=x, y=[None if y is None else y / 2**30 for y in ys], name=name,
                       mode="lines+markers", line=dict(color=(colours or {}).get(name)))
            for name, ys in bytes_by_name.items()]


# ---- the figures ------------------------------------------------------------------------
def roofline() -> go.Figure:
    """Chapter 1: a decode step's compute, weight reads and communication against the batch."""
    batches = [2**k for k in range(13)]
    steps = []
    for hw in ("tpu-v4", "tpu-v5p"):
        for weights in ("bf16", "int8"):
            es = [cost.estimate("palm-540b-64heads", Layout("ws2d", "heads"), (4, 4, 4),
                                batch=b, tokens=1, context=1, weights=weights, hardware=hw)
                  for b in batches]
            steps.append((f"{hw}, {weights}", [
                go.Scatter(x=batches, y=[getattr(e, a) * 1e3 for e in es], name=n,
                           mode="lines+markers",
                           line=dict(dash="solid" if a == "step_s" else "dot"))
                for n, a in (("compute", "compute_s"), ("weights", "weights_s"),
                             ("communication", "comm_s"), ("step", "step_s"))]))
    return slider_figure(
        steps, "chip, weights: ",
        title="PaLM 540B: one decode step on 64 chips<br><sup>2D weight-stationary, 4×4×4, "
              "plain schedule; predicted on the chip's datasheet, rule overlap</sup>",
        xaxis=dict(type="log", title="batch (sequences, one token each)"),
        yaxis=dict(type="log", title="ms"))


def one_d_against_two_d() -> go.Figure:
    """Chapter 4: the decode step of 1D and 2D weight-stationary against the chip count."""
    chips = [8, 16, 32, 64, 128]
    steps = []
    for batch in (1, 16, 64, 256, 1024):
        traces = []
        for ffn in ("ws1d", "ws2d"):
            best = [min((cost.estimate("mt-nlg-530b", Layout(ffn, "heads"), s, batch=batch,
                                       tokens=1, context=2048) for s in mesh_shapes("tpu-v4", n)),
                        key=lambda e: e.step_s) for n in chips]
            meshes = ["x".join(map(str, e.mesh_shape)) for e in best]
            for what, attr, dash in (("communication", "comm_s", "solid"),
                                     ("step", "step_s", "dot")):
                traces.append(go.Scatter(
                    x=chips, y=[getattr(e, attr) * 1e3 for e in best], mode="lines+markers",
                    name=f"{ffn} {what}", line=dict(color=COLOURS[ffn], dash=dash),
                    text=meshes, hovertemplate="%{x} chips, mesh %{text}: %{y:.3g} ms"))
        steps.append((str(batch), traces))
    return slider_figure(
        steps, "batch: ",
        title="MT-NLG 530B decode: 1D communication stays flat, 2D keeps falling<br><sup>"
              "context 2048, the fastest mesh per layout, plain schedule; predicted, tpu-v4 "
              "datasheet, rule overlap</sup>",
        xaxis=dict(type="log", title="chips", tickvals=chips),
        yaxis=dict(type="log", title="ms per decode step"))


def weight_gathered_crossover() -> go.Figure:
    """Chapter 5: communication per chip of one prefill against the tokens in the batch."""
    tokens = [2**k for k in range(10, 23)]
    steps = []
    for n in (16, 32, 64, 128, 256):
        curves = sweeps.crossover("palm-540b-64heads", PAPER_MESHES[n], tokens, weights="bf16",
                                  attention="batch")
        steps.append((f"{n} ({'x'.join(map(str, PAPER_MESHES[n]))})",
                      gib_traces(tokens, curves["comm_bytes"], COLOURS)))
    return slider_figure(
        steps, "chips (the paper's mesh): ",
        title="PaLM 540B prefill: communication per chip by layout<br><sup>attention by "
              "batch, bf16; bytes from each layout's step_terms</sup>",
        xaxis=dict(type="log", title="tokens per batch (B·L)"),
        yaxis=dict(type="log", title="GiB per chip per prefill"))


def context_length() -> go.Figure:
    """Chapter 6: the KV cache per chip against the context, per attention variant."""
    contexts = [2**k for k in range(7, 18)]
    steps = []
    for batch in (16, 64, 128, 256, 512, 1024):
        curves = sweeps.context_curves("palm-540b", 64, batch, contexts, [batch])
        steps.append((str(batch), gib_traces(contexts, curves["kv_bytes_per_chip"])))
    return slider_figure(
        steps, "batch: ",
        title="PaLM 540B on 64 chips: KV cache per chip<br><sup>bf16; the paper reserves 30% "
              "of a TPU v4's HBM for it, 9.6 GiB</sup>",
        xaxis=dict(type="log", title="context length S"),
        yaxis=dict(type="log", title="GiB per chip"))


def prefill_mfu() -> go.Figure:
    """Chapter 5: a whole prefill's MFU against the batch, per feed-forward layout."""
    batches = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512]
    steps = []
    for n in (16, 32, 64, 128):
        curves = sweeps.prefill_mfu("palm-540b", PAPER_MESHES[n], batches, weights="bf16")
        steps.append((f"{n} ({'x'.join(map(str, PAPER_MESHES[n]))})", [
            go.Scatter(x=curves["tokens"], y=ys, name=ffn, mode="lines+markers",
                       line=dict(color=COLOURS[ffn]), text=curves["layouts"][ffn],
                       hovertemplate="%{x} tokens: MFU %{y:.0%}, %{text}")
            for ffn, ys in curves["mfu"].items()]))
    return slider_figure(
        steps, "chips (the paper's mesh): ",
        title="PaLM 540B, a 2048-token prefill: MFU by layout<br><sup>bf16, the planner's "
              "attention layout and schedule; predicted, tpu-v4 datasheet, rule overlap</sup>",
        xaxis=dict(type="log", title="tokens per prefill (batch × 2048)"),
        yaxis=dict(title="MFU", tickformat=".0%", range=[0, 1.05]))


def planner_choice() -> go.Figure:
    """Chapters 7 and 10: the layout the planner chooses against chips and batch."""
    chips, batches = [8, 16, 32, 64, 128, 256], [1, 4, 16, 64, 256, 1024]
    names = list(FFN_LAYOUTS)
    steps = []
    for phase in ("prefill", "decode"):
        for weights in ("bf16", "int8"):
            z, text, hover = [], [], []
            for n in chips:
                row_z, row_t, row_h = [], [], []
                for b in batches:
                    try:
                        p = planner.plan("palm-540b", "tpu-v4", n, b, input_len=2048,
                                         gen_len=64, weights=weights, mesh=PAPER_MESHES[n])
                        best = getattr(p, phase).best
                        fits = best.fits
                        row_t.append(f"{best.layout.ffn}/{best.layout.attention}"
                                     if fits else "no fit")
                        row_h.append(str(best.layout) if fits else best.unfit_reason)
                    except UsageError as err:
                        fits = False
                        row_t.append("no fit")
                        row_h.append(str(err)[:120])
                    row_z.append(names.index(best.layout.ffn) if fits else None)
                z.append(row_z)
                text.append(row_t)
                hover.append(row_h)
            steps.append((f"{phase}, {weights}", [go.Heatmap(
                x=[str(b) for b in batches], y=[str(n) for n in chips], z=z, text=text,
                customdata=hover, zmin=-0.5, zmax=len(names) - 0.5, texttemplate="%{text}",
                textfont=dict(size=12),
                colorscale=[[edge / len(names), COLOURS[ffn]] for i, ffn in enumerate(names)
                            for edge in (i, i + 1)],  # one flat colour per layout
                showscale=False, hovertemplate="%{y} chips, batch %{x}: %{customdata}")]))
    return slider_figure(
        steps, "phase, weights: ", height=520,
        title="PaLM 540B: the planner's layout by chips and batch<br><sup>2048 input tokens, "
              "64 generated; the paper's mesh for each chip count; tpu-v4 datasheet, rule "
              "overlap</sup>",
        xaxis=dict(title="batch", type="category"), yaxis=dict(title="chips", type="category"))


def accuracy_board() -> go.Figure:
    """Chapter 14: every public measurement against the model's prediction of it (the
    chapter's own figure, from booktools)."""
    return booktools.accuracy_figure(accuracy.board())


FIGURES = (
    ("Rooflines: a decode step's time against the batch", "chapter 1", roofline),
    ("1D against 2D weight-stationary as chips are added", "chapter 4", one_d_against_two_d),
    ("The weight-gathered crossover", "chapter 5", weight_gathered_crossover),
    ("Prefill MFU by layout", "chapter 5", prefill_mfu),
    ("Context length: the KV cache per chip", "chapter 6", context_length),
    ("The planner's choice", "chapters 7 and 10", planner_choice),
    ("How far to trust the model", "chapter 14", accuracy_board),
)


def explore_page(nav: str, style: str) -> str:
    """The page: each figure in its own div, drawn by the site's plotly.js (`style`: the site's
    stylesheet)."""
    parts = []
    for i, (title, chapter, make) in enumerate(FIGURES):
        fig = make()
        payload = pio.to_json(fig, validate=False).replace("</", "<\\/")
        parts.append(f'<section><h2 id="figure-{i}">{html.escape(title)}</h2>'
                     f'<p>From {chapter}. Move the slider: every step was computed by the '
                     f'library when this site was built. A layout missing from a step cannot '
                     f'run there (a batch smaller than the chips it splits, say); hover a '
                     f'point for its details.</p>'
                     f'<div class="site-plot explore-plot" id="explore-{i}"></div>'
                     f'<script>(() => {{ const f = {payload}; Plotly.newPlot("explore-{i}", '
                     f'f.data, f.layout, {{responsive: true}}); }})();</script></section>')
    return ('<!DOCTYPE html><html><head><meta charset="utf-8"><title>Explore the cost model'
            f'</title><style>{style}</style><script src="assets/plotly.min.js"></script>'
            f'</head><body>{nav}<div class="site-index"><h1>Explore the cost model</h1>'
            '<p>Predictions of the analytical cost model (arXiv 2211.05102, Section 2 and 3), '
            'each labelled with its hardware profile and rule, precomputed for every slider '
            'step. The explorers that run real steps on an emulated mesh need a kernel: run '
            'the chapters in JupyterLab for those.</p>' + "".join(parts)
            + '</div></body></html>')

