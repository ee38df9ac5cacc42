"""The prediction lock: predict, then run.

The reader types a number (and, if they like, why) and locks it; only then does the lock run
the real thing: a step compiled on the emulated mesh (`tpuinfer.sweeps.step_quantity`) or the
cost model against one of the paper's measurements (`tpuinfer.paper.against_paper`). It shows
the guess, the cost model's prediction (labelled with what made it) and the measurement side
by side, each with how far it was from the measurement.

A thin view: the `reveal` callable is a library call; the lock parses the number typed,
words the result and draws it. The distance is the library's `measure.relative_error`. Errors
(a word where a number belongs, a configuration the library refuses) are shown as a message,
never a traceback. Nothing is written anywhere: the guess lives in the widget, in the
notebook's kernel, and goes when the kernel does.
"""
from __future__ import annotations

import html

import ipywidgets as W
import plotly.graph_objects as go

from tpuinfer.errors import TpuinferError
from tpuinfer.measure import relative_error

from .base import _STYLE, static

COLOURS = {"guess": "#f58518", "predicted": "#4c78a8", "measured": "#54a24b"}


def _number(value) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        value = int(value)
    return f"{value:,.4g}" if isinstance(value, float) else f"{value:,}"


def distance(value, reference) -> str:
    """How far `value` was from `reference`, in words: exact, or the relative error and on
    which side."""
    err = relative_error(value, reference)
    if err is None:
        return ""
    if err == 0:
        return "exact"
    side = "high" if value > reference else "low"
    return f"{err:.1%} {side}" if err < 0.1 else f"{err:.0%} {side}"


class PredictionLock:
    """`PredictionLock(exercise, question, reveal, guess=None)`: a text box for the reader's
    number, one for why (optional), and a button that locks them and calls `reveal()`, which
    returns {"what", "unit", "predicted", "predicted_by", "measured", "measured_by"} (as
    `sweeps.step_quantity` and `paper.against_paper` do; "measured" may be None, and the guess
    is then set beside the prediction alone). A `guess` given here (a number, as an exercise's
    answer cell holds it) is locked and revealed at once; `...` or None waits for the reader.

    `result` holds what `reveal` returned, `guess` the locked number, `error` the last message
    of a failure (None after a success); `snapshot()` is the comparison as a plotly figure that
    stays visible in a notebook saved without its widgets."""

    def __init__(self, exercise: str, question: str, reveal, guess=None):
        self.exercise, self.question, self.reveal = exercise, question, reveal
        self.result = self.guess = self.error = None
        self.entry = W.Text(placeholder="your number", description="your prediction",
                            style={"description_width": "initial"},
                            layout=W.Layout(width="20em"))
        self.why = W.Text(placeholder="why (optional, stays in this notebook)",
                          layout=W.Layout(width="28em"))
        self.button = W.Button(description="Lock and reveal", button_style="primary",
                               tooltip="locks your prediction, then runs it")
        self.message = W.HTML(layout=W.Layout(min_height="1.6em"))
        self.table = W.HTML()
        self.table.add_class("tpuinfer-predict-result")
        self.button.on_click(lambda _: self.lock())
        head = W.HTML(f"<b>Exercise {html.escape(exercise)}</b>: {html.escape(question)}")
        self.widget = W.VBox([head, W.HBox([self.entry, self.why, self.button],
                                           layout=W.Layout(flex_flow="row wrap")),
                              self.message, self.table])
        self.widget.add_class("tpuinfer-predict")
        if guess is not None and guess is not Ellipsis:
            self.entry.value = str(guess)
            self.lock()

    def lock(self) -> bool:
        """Lock the number typed and reveal; False (with the message) when it cannot."""
        if self.result is not None:
            return True
        try:
            guess = float(self.entry.value.replace(",", "").replace("_", "").strip())
        except ValueError:
            return self._fail(f"{self.entry.value!r} is not a number: type one (for example "
                              "256, 0.35 or 1.2e9), then lock it")
        self.guess = int(guess) if guess.is_integer() else guess
        for control in (self.entry, self.why, self.button):
            control.disabled = True
        self._show("running it …", "busy")
        try:
            result = self.reveal()
        except Exception as err:  # noqa: BLE001 - nothing may raise into the kernel
            text = str(err) if isinstance(err, TpuinferError) else f"{type(err).__name__}: {err}"
            for control in (self.entry, self.why, self.button):
                control.disabled = False
            return self._fail(text)
        self.result, self.error = result, None
        self.table.value = self._table()
        self._show("locked and revealed", "info")
        return True

    def rows(self) -> list[tuple[str, str, object, str]]:
        """(side, label, value, how far) for the guess, the prediction and the measurement."""
        r = self.result
        reference = r["measured"] if r["measured"] is not None else r["predicted"]
        why = f" ({self.why.value.strip()})" if self.why.value.strip() else ""
        rows = [("guess", "your prediction" + why, self.guess, distance(self.guess, reference)),
                ("predicted", r["predicted_by"], r["predicted"],
                 distance(r["predicted"], reference) if r["measured"] is not None else "")]
        if r["measured"] is not None:
            rows.append(("measured", r["measured_by"], r["measured"], ""))
        return rows

    def _table(self) -> str:
        pad = "padding:0.15em 0.8em"
        cells = "".join(
            f"<tr><td style='color:{COLOURS[side]};{pad}'><b>{html.escape(label)}</b></td>"
            f"<td style='text-align:right;{pad}'>{html.escape(_number(value))}"
            f"{' ' + html.escape(self.result['unit']) if value is not None else ''}</td>"
            f"<td style='{pad}'>{html.escape(far)}</td></tr>"
            for side, label, value, far in self.rows() if value is not None)
        return (f"<div>{html.escape(self.result['what'])}</div><table>"
                f"<tr><th></th><th>value</th><th>how far from the "
                f"{'measurement' if self.result['measured'] is not None else 'prediction'}"
                f"</th></tr>{cells}</table>")

    def figure(self) -> go.Figure:
        """The comparison as a horizontal bar chart (empty, saying so, before the reveal)."""
        title = f"Exercise {self.exercise}: {self.question}"
        if self.result is None:
            fig = go.Figure()
            fig.update_layout(title=f"{title}<br><sup>not revealed yet: lock a prediction "
                                    f"first</sup>")
        else:
            rows = [r for r in self.rows() if r[2] is not None][::-1]
            fig = go.Figure(go.Bar(
                y=[label for _, label, _, _ in rows], x=[value for _, _, value, _ in rows],
                orientation="h", marker_color=[COLOURS[side] for side, _, _, _ in rows],
                text=[f"{_number(value)} {far}".strip() for _, _, value, far in rows],
                textposition="auto"))
            fig.update_layout(title=f"{title}<br><sup>{self.result['what']}</sup>")
            fig.update_xaxes(title=self.result["unit"])
        fig.update_layout(height=300, width=900, margin=dict(t=80, l=420, r=20, b=50),
                          title_font_size=13)
        return fig

    def snapshot(self):
        return static(self.figure())

    def _fail(self, text: str) -> bool:
        self.error = text
        self._show(text, "error")
        return False

    def _show(self, text: str, kind: str) -> None:
        self.message.value = (f"<div class='tpuinfer-{kind}' style='{_STYLE[kind]}'>"
                              f"{html.escape(text)}</div>")

    def _repr_mimebundle_(self, include=None, exclude=None):
        return self.widget._repr_mimebundle_(include=include, exclude=exclude)
