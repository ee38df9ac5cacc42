"""What the chapters share to show things: plot set-up, tables, pictures of shardings, and
the check of an exercise's answer.

Nothing here prices or counts anything: every number a chapter shows comes from `tpuinfer`
(the cost model, the layout files, `measure`); this module only lays it out.
"""
from __future__ import annotations

import inspect
import math
import re
import statistics
import textwrap

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from tpuinfer.report import (host_error_summary, host_times, measurement_notes, seconds,
                             table)  # the command line's own

__all__ = ["table", "seconds", "measurement_notes", "host_times", "by_kind_table",
           "collectives_table", "sides_table", "time_figure", "ownership_figure", "mesh_figure",
           "accuracy_figure", "check"]

# Every figure is stored in the notebook twice: as plotly's JSON mimetype, which JupyterLab's
# plotly extension (installed with plotly) draws with no kernel and no network, and as HTML
# that draws it in viewers without that extension (nbviewer) with plotly.js from its CDN.
# Embedding plotly.js itself would add 4.8 MB to every chapter.
pio.renderers.default = "plotly_mimetype+notebook_connected"
pio.templates.default = "plotly_white"


# ---- predicted against measured ------------------------------------------------------------
def by_kind_table(m) -> str:
    """One row per collective kind of a `tpuinfer.measure.Measurement`: calls per step and
    bytes moved per device over the step, predicted beside measured."""
    p, q = m.predicted.by_kind(), m.measured.by_kind()
    rows = []
    for kind in sorted(set(p) | set(q)):
        (n_p, b_p), (n_q, b_q) = p.get(kind, (0, 0.0)), q.get(kind, (0, 0.0))
        rows.append([kind, n_p, n_q, f"{b_p:,.0f}", f"{b_q:,.0f}",
                     "yes" if (n_p, b_p) == (n_q, b_q) else "NO"])
    return table(["collective", "calls predicted", "calls measured", "bytes predicted",
                  "bytes measured", "equal"], rows)


def collectives_table(m) -> str:
    """One row per distinct collective (kind, mesh axes of its groups, chips per group,
    element type, bytes per device per call): how many calls each side counts."""
    rows = [[kind, axes, group, dtype, f"{nbytes:,.0f}", n_p, n_q]
            for (kind, axes, group, dtype, nbytes), (n_p, n_q) in m.collective_counts().items()]
    return table(["collective", "axes", "group", "dtype", "bytes/device/call", "predicted",
                  "measured"], rows)


def sides_table(m) -> str:
    """FLOPs and the weights each device holds, predicted beside measured."""
    p, q = m.predicted, m.measured
    rows = [["weight-matmul FLOPs per device", f"{p.flops:,.0f}", f"{q.flops:,.0f}"],
            ["attention FLOPs per device", f"{p.attention_flops:,.0f}",
             f"{q.attention_flops:,.0f}"],
            ["weight bytes held per device", f"{p.weight_bytes_per_device:,.0f}",
             f"{q.weight_bytes_per_device:,.0f}"],
            ["collective bytes per device", f"{p.comm_bytes:,.0f}", f"{q.comm_bytes:,.0f}"]]
    return table(["", "predicted", "measured"], rows)


FAMILY_COLOURS = {"tpu-v4": "#4c78a8", "tpu-v5e": "#f58518", "h100": "#54a24b"}


def accuracy_figure(board: dict, band: float = 0.2) -> go.Figure:
    """Predicted against measured for every row of `tpuinfer.accuracy.board()`, log-log, with
    the y = x line and a ±`band` band; fitted rows filled, held-out rows open, a colour per
    chip family. A slider shows the calibrated profiles' predictions or the datasheets'."""
    rows = board["rows"]
    values = [r[k] for r in rows for k in ("measured", "predicted_calibrated",
                                           "predicted_datasheet")]
    lo, hi = min(values) / 2, max(values) * 2
    fig, owner = go.Figure(), []
    for step, which in enumerate(("calibrated", "datasheet")):
        for name, scale, dash in (("y = x", 1, "solid"), (f"+{band:.0%}", 1 + band, "dot"),
                                  (f"-{band:.0%}", 1 - band, "dot")):
            fig.add_trace(go.Scatter(x=[lo, hi], y=[lo * scale, hi * scale], mode="lines",
                                     name=name, line=dict(color="grey", dash=dash, width=1),
                                     showlegend=False, hoverinfo="skip", visible=step == 0))
            owner.append(step)
        for family, colour in FAMILY_COLOURS.items():
            for held_out, symbol in ((False, "circle"), (True, "circle-open")):
                chosen = [r for r in rows if r["family"] == family and r["held_out"] == held_out]
                if not chosen:
                    continue
                fig.add_trace(go.Scatter(
                    x=[r["measured"] for r in chosen],
                    y=[r[f"predicted_{which}"] for r in chosen], mode="markers",
                    name=f"{family}, {'held out' if held_out else 'fitted'}",
                    marker=dict(color=colour, symbol=symbol, size=9, line=dict(width=2)),
                    text=[f"{r['id']}<br>{r[f'{which}_profile']}: "
                          f"{r[f'error_{which}']:+.1%}" for r in chosen],
                    hovertemplate="%{text}<br>measured %{x:.4g}, predicted %{y:.4g}"
                                  "<extra></extra>", visible=step == 0))
                owner.append(step)
    fig.update_layout(
        sliders=[dict(active=0, currentvalue=dict(prefix="predicted on: "), pad=dict(t=50),
                      steps=[dict(label=label, method="update",
                                  args=[{"visible": [o == i for o in owner]}])
                             for i, label in enumerate(("each chip's calibrated profile",
                                                        "each chip's datasheet"))])],
        height=560, title="How far to trust the model: predicted against measured<br><sup>"
        "every row of tpuinfer/data/measurements.json; filled: a fit used it, open: held "
        f"out; dotted: ±{band:.0%}</sup>",
        xaxis=dict(type="log", title="measured (s; MFU and ratios as printed)"),
        yaxis=dict(type="log", title="predicted (the cost model)"))
    return fig


def time_figure(measured: dict, title: str) -> go.Figure:
    """Step time per step ({label: Measurement}): measured on this CPU beside the host
    profile's prediction (`tpuinfer calibrate`), with each step's error and the median error
    in the title; measured alone, saying so, before the host is calibrated."""
    labels = list(measured)
    median, worst = host_error_summary(measured)
    fig = go.Figure(go.Bar(name="measured (this CPU, median step)", x=labels,
                           y=[measured[k].measured.time_s * 1e3 for k in labels]))
    if median is None:
        sub = "no host prediction yet: run `tpuinfer calibrate` once, then this cell again"
    else:
        fig.add_bar(name="predicted (host profile x drift)", x=labels,
                    y=[(measured[k].predicted.time_s or 0) * 1e3 for k in labels],
                    text=[f"{measured[k].host_error:.0%} off" if measured[k].host_error
                          is not None else "" for k in labels], textposition="outside")
        drifts = [m.drift for m in measured.values() if m.drift is not None]
        machine = (f", machine running x{statistics.median(drifts):.2f} its calibrated time"
                   if drifts else "")
        sub = (f"host profile (`tpuinfer calibrate`): median error {median:.0%}, worst "
               f"{worst:.0%}{machine}")
    fig.update_layout(title=f"{title}<br><sup>{sub}</sup>", barmode="group", height=380,
                      width=720, yaxis_title="step time (ms)", legend=dict(orientation="h",
                      y=-0.25), margin=dict(t=70, b=90, l=60, r=20))
    return fig


# ---- pictures ------------------------------------------------------------------------------
def _coords(mesh, device) -> tuple[int, ...]:
    return tuple(int(i) for i in np.argwhere(mesh.devices == device)[0])


def ownership_figure(mesh, spec, shape, title: str, dims=("rows", "columns")) -> go.Figure:
    """Which devices hold which block of a 2-D array stored with `spec` on `mesh`, straight from
    JAX's own sharding (`NamedSharding.devices_indices_map`): one rectangle per distinct block,
    labelled with the mesh coordinates (x, y, z) of every device that holds it."""
    held: dict = {}
    for device, index in NamedSharding(mesh, P(*spec)).devices_indices_map(tuple(shape)).items():
        box = tuple((s.start or 0, s.stop if s.stop is not None else n)
                    for s, n in zip(index, shape))
        held.setdefault(box, []).append(_coords(mesh, device))
    fig = go.Figure()
    palette = [f"hsl({int(h)}, 60%, 75%)" for h in np.linspace(0, 330, max(len(held), 1))]
    for colour, ((rows, cols), holders) in zip(palette, sorted(held.items())):
        fig.add_shape(type="rect", x0=cols[0], x1=cols[1], y0=rows[0], y1=rows[1],
                      fillcolor=colour, line=dict(color="white", width=2))
        label = "<br>".join("".join(map(str, h)) for h in sorted(holders)[:4])
        if len(holders) > 4:
            label += f"<br>+{len(holders) - 4} more"
        fig.add_annotation(x=(cols[0] + cols[1]) / 2, y=(rows[0] + rows[1]) / 2, text=label,
                           showarrow=False, font=dict(size=10))
    fig.update_xaxes(range=[0, shape[1]], title=f"{dims[1]} (0..{shape[1]})", showgrid=False)
    fig.update_yaxes(range=[shape[0], 0], title=f"{dims[0]} (0..{shape[0]})", showgrid=False)
    fig.update_layout(title=title + "<br><sup>each block labelled with the xyz mesh "
                                    "coordinates of the devices holding it</sup>",
                      height=360, width=640, margin=dict(t=70, b=40, l=60, r=20))
    return fig


def mesh_figure(mesh, axes: tuple[str, ...], title: str) -> go.Figure:
    """The devices of `mesh` at their (x, y, z) positions, coloured by the group they join in
    a collective over `axes` (devices that differ only along `axes` form one group)."""
    names = mesh.axis_names
    pts = np.array([_coords(mesh, d) for d in mesh.devices.flat])
    ids = [d.id for d in mesh.devices.flat]
    others = [i for i, a in enumerate(names) if a not in axes]
    keys = sorted({tuple(p[others]) for p in pts})
    group = [keys.index(tuple(p[others])) for p in pts]
    fig = go.Figure(go.Scatter3d(
        x=pts[:, 0], y=pts[:, 1], z=pts[:, 2], mode="markers",
        marker=dict(size=5 if len(ids) > 64 else 9, color=group, colorscale="Turbo",
                    line=dict(width=0.5, color="black")),
        text=[f"device {i} at {tuple(map(int, p))}, group {g}" for i, p, g in
              zip(ids, pts, group)], hoverinfo="text"))
    fig.update_layout(title=title, height=420, width=560, margin=dict(t=50, b=0, l=0, r=0),
                      scene=dict(xaxis_title="x", yaxis_title="y", zaxis_title="z",
                                 aspectmode="data"))
    return fig


# ---- exercises -----------------------------------------------------------------------------
# An exercise's check names only the exercise and the reader's answer: `check("04.1",
# answer_1)`. What it is checked against is computed by the library in the answer key
# (book/answers.py, one entry per exercise, beside this file), never on the page.
# The instructor's edition (the repository's notebooks) fails loudly on a wrong answer, so that
# CI catches one. `python book/_build.py --student DIR` copies this file with STUDENT set to
# True: there a check never shows the expected value, only whether the answer is right and,
# if not, the exercise's hint.
STUDENT = False


def check(label: str, answer) -> None:
    """Print 'exercise <label>: correct' when `answer` equals what the answer key computes for
    exercise `label` ("NN.k": chapter NN, exercise k; numbers within the key's relative
    tolerance). Otherwise, in the instructor's edition fail, showing both; in the student's
    edition print the key's hint, never the expected value. The key may read what the
    chapter ran (its global variables): it is handed the calling notebook's namespace."""
    import answers  # book/answers.py, beside this file (and copied into a student edition)

    expected, rel, hint = answers.expected(label, inspect.currentframe().f_back.f_globals)
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool)
                  for v in (answer, expected))
    ok = math.isclose(answer, expected, rel_tol=rel) if numeric else answer == expected
    if ok:
        print(f"exercise {label}: correct")
    elif STUDENT:
        said = "not answered yet" if answer is Ellipsis else f"{answer!r} is not it yet"
        print(f"exercise {label}: {said}." + (f" Hint: {hint}" if hint else ""))
    else:
        raise AssertionError(f"exercise {label}: your answer is {answer!r}; the answer key "
                             f"says {expected!r}")


# ---- text that fits the page ---------------------------------------------------------------
WIDTH = 100  # the widest output line every front-end shows without wrapping it


def wrapped(lines) -> str:
    """Prose lines (a measurement's notes, a long error message) wrapped to WIDTH, each
    continuation indented."""
    return "\n".join(textwrap.fill(line, WIDTH, subsequent_indent="  ") for line in lines)


def notes(m) -> str:
    """What a measurement's flags mean (`tpuinfer.report.measurement_notes`), wrapped."""
    return wrapped(measurement_notes(m))


_STEP = re.compile(r'^\s*(# |"""|[a-z]\w* = """)?(\d+)\. ')
_WORK = re.compile(r"(\b(all_gather|reduce_scatter|all_reduce|fused_\w+|all_to_all)|"
                   r"\battend|\bffn_act|\bmm|\bmm_rows|\bmm_cols)\(")


def skeleton(fn) -> str:
    """A layout body's numbered steps without its branches: the `def` line, the first line of
    each numbered step's comment, and each statement that runs a collective, a matmul,
    attention or the nonlinearity, of the plain schedule only (the `if ctx.looped` branches
    left out), with '…' where lines are left out. The whole function is
    `inspect.getsource(fn)`."""
    lines = inspect.getsource(fn).splitlines()
    out, skip_below, dedent_below, gap, open_parens = [], None, None, False, 0
    for i, line in enumerate(lines):
        indent = len(line) - len(line.lstrip())
        text = line.strip()
        if skip_below is not None and (indent > skip_below or not text):
            continue  # inside a looped branch
        skip_below = None
        if dedent_below is not None and text and indent <= dedent_below:
            dedent_below = None
        if text.startswith("if ctx.looped"):
            skip_below = indent
            continue
        if text == "else:" and skipped_if(lines, i):
            dedent_below = indent  # the plain branch, shown at the if's depth
            continue
        shown = line[4:] if dedent_below is not None else line
        if _STEP.match(line):
            shown = _first_clause(shown)
        if open_parens or i == 0 or _STEP.match(line) or _WORK.search(line):
            if gap:
                out.append(" " * (len(shown) - len(shown.lstrip())) + "…")
            out.append(shown)
            gap = False
            if not _STEP.match(line):
                open_parens += line.count("(") - line.count(")")
        else:
            gap = gap or bool(text)
    return "\n".join(out)


def _first_clause(line: str) -> str:
    """A step's comment up to its first sentence's end (the rest says why, at length)."""
    head, rest = line.split(". ", 1)
    for end in (". ", ";"):
        rest = rest.split(end, 1)[0]
    if rest.count("(") > rest.count(")"):
        rest = rest[:rest.rindex("(")]
    return f"{head}. {rest.rstrip(' ,')}"


def skipped_if(lines, i) -> bool:
    """Whether the `else:` at line i closes an `if ctx.looped` branch."""
    indent = len(lines[i]) - len(lines[i].lstrip())
    for line in reversed(lines[:i]):
        if line.strip() and len(line) - len(line.lstrip()) == indent:
            return line.strip().startswith("if ctx.looped")
    return False


def excerpt(obj, first: str, last: str | None = None) -> str:
    """Part of a function's or class's source: its first line, then the lines from the first
    that contains `first` to the one that contains `last` (default: to the end), with '…'
    where lines are left out."""
    lines = inspect.getsource(obj).splitlines()
    start = next(i for i, line in enumerate(lines) if first in line)
    end = len(lines) if last is None else next(
        i for i, line in enumerate(lines) if i >= start and last in line) + 1
    def gap(line):
        return " " * (len(line) - len(line.lstrip())) + "…"
    return "\n".join(lines[:1] + ([gap(lines[start])] if start > 1 else lines[1:start])
                     + lines[start:end] + ([gap(lines[end - 1])] if end < len(lines) else []))
