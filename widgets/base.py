"""What every explorer shares: controls that re-run a library call, a message line that shows
progress and errors, a plotly FigureWidget, and a static copy of it for readers without a
kernel.

An explorer subclass says which library call to make (`compute`) and how to draw its plain
result (`draw`); it holds no formula. `update` runs the two: a `TpuinferError` from the
library is shown word for word in the message and the previous plot stays; any other exception
is shown too, with its type, never raised into the kernel (a workshop must not see a
traceback).

A subclass with a slow part (`measure`: compile and run a step) draws `compute`'s prediction
first, then measures. With `background` on, a control's change returns at once: the
measurement runs on one worker thread, its progress in the message line, and lands in the plot
when done; a newer change cancels it (at its next progress report, or discarded when it
lands), so only the latest configuration is ever drawn. Code that sets controls (`set`,
`update`) waits for the measurement, and `wait()` waits for a pending one.

Where a front-end cannot load plotly's FigureWidget (it needs anywidget, which some hosted
notebooks and editors fail to load: the cell stays blank), an explorer draws into a plain
plotly figure instead and redraws it, as static output, into an `ipywidgets.Output` after every
change. `use_static_figures()` chooses that for the explorers made after it (or set
TPUINFER_WIDGET_FIGURES=static before importing); without anywidget installed, when a
FigureWidget cannot be made, or in a Voilà app (whose FigureWidgets draw no traces), it is
chosen on its own.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import html
import json
import os
import threading

import ipywidgets as W

from tpuinfer.errors import TpuinferError
from tpuinfer.report import progress_bar

try:
    import plotly.graph_objects as go
    import plotly.io as pio
except ImportError as err:  # pragma: no cover - depends on the installation
    raise ImportError(f"tpuinfer_widgets needs plotly ({err}); install it with "
                      'pip install -e ".[dev]"') from None
try:
    import anywidget  # noqa: F401  (plotly 6+ draws its FigureWidget through anywidget)
except ImportError:  # pragma: no cover - depends on the installation
    anywidget = None  # the explorers draw static figures instead

FIGURE_MODES = ("auto", "widget", "static")
_figures = {"mode": os.environ.get("TPUINFER_WIDGET_FIGURES", "auto")}


def use_static_figures(static: bool = True) -> None:
    """Make the explorers created from now on draw a plain plotly figure into an
    `ipywidgets.Output`, redrawn after every change (`static=True`), or plotly's FigureWidget
    (`static=False`; the default, "auto", uses the FigureWidget when it can be made). For a
    front-end that cannot load anywidget: one call before creating the explorers."""
    _figures["mode"] = "static" if static else "widget"


def figure_mode() -> str:
    """"widget" or "static": how an explorer made now would draw."""
    mode = _figures["mode"]
    if mode not in FIGURE_MODES:
        raise ValueError(f"TPUINFER_WIDGET_FIGURES={mode!r}; choose one of "
                         f"{', '.join(FIGURE_MODES)}")
    if mode == "auto":
        # Voilà (0.5.13, with plotly 7.1 and anywidget 0.11) draws a FigureWidget's axes but
        # none of its traces; it names its kernels in VOILA_KERNEL_ID before running a notebook
        voila = "VOILA_KERNEL_ID" in os.environ
        return "widget" if anywidget is not None and not voila else "static"
    return mode

_STYLE = {"info": "color:#555; font-size:0.9em; line-height:1.4",
          "busy": "color:#1f5fa8", "error":
          "color:#a40000; background:#fdecea; padding:2px 6px; border-radius:3px"}
_SPINNER = ("<span style='display:inline-block; animation:tpuinfer-spin 1s linear infinite'>"
            "&#8987;</span><style>@keyframes tpuinfer-spin {to {transform:rotate(360deg)}}"
            "</style> ")

CONTROL_STYLE = {"description_width": "initial"}


class Static:
    """A plotly figure as stored output: plotly's JSON mime bundle (JupyterLab draws it
    without a kernel) and an HTML copy loading plotly.js from its CDN (nbviewer and other
    HTML viewers). A FigureWidget on its own is saved as a widget reference, which a reader
    without a kernel sees as text only."""

    def __init__(self, figure):
        self.figure = go.Figure(figure)

    def _repr_mimebundle_(self, include=None, exclude=None):
        fig = json.loads(pio.to_json(self.figure, validate=False))
        return {"application/vnd.plotly.v1+json": {**fig, "config": {"responsive": True}},
                "text/html": pio.to_html(self.figure, include_plotlyjs="cdn",
                                         full_html=False),
                "text/plain": f"<plotly figure: {self.figure.layout.title.text or ''}>"}


class Cancelled(Exception):
    """A newer change of the controls superseded this measurement."""


def static(figure) -> Static:
    """A copy of `figure` (a Figure or FigureWidget) that stays visible in a saved notebook
    opened without a kernel."""
    return Static(figure)


class Explorer:
    """Base class: `controls` (name -> ipywidget), `figure` (a go.FigureWidget, or in static
    mode a go.Figure redrawn into `output`), `message` (an HTML widget), `widget` (the whole
    layout), `data` (the last good result), `update()`, `snapshot()`. Displaying an explorer
    displays `widget`."""

    title = ""
    background = False  # measure in the background (a subclass with `measure` may turn it on)

    def __init__(self, controls: dict, figure, rows=None):
        """`rows`: the control names of each row of the panel (default: one wrapping row)."""
        self.controls = controls
        self.output = None  # the Output a static figure is redrawn into (static mode only)
        if figure_mode() == "widget":
            try:
                self.figure = go.FigureWidget(figure)
            except Exception:  # noqa: BLE001 - anywidget or its front-end bridge unusable
                self.figure = None
        else:
            self.figure = None
        if self.figure is None:
            self.figure = go.Figure(figure)
            self.output = W.Output()
        self.message = W.HTML(layout=W.Layout(min_height="1.6em"))
        self.data = None
        self.error = None  # the last update's error message, None when it succeeded
        self.cancelled = 0  # measurements a newer change superseded
        self._muted = 0
        self._generation = 0  # bumped by every update: a measurement of an older one is stale
        self._lock = threading.RLock()  # one drawing at a time, kernel thread or worker
        self._worker = None  # the one thread measurements run on, made when first needed
        self._pending = None  # the Future of the latest background measurement
        rows = rows or [list(controls)]
        panel = [W.HBox([controls[name] for name in row], layout=W.Layout(flex_flow="row wrap"))
                 for row in rows]
        self.widget = W.VBox(panel + [self.message, self.output or self.figure])
        self.widget.add_class("tpuinfer-explorer")
        for control in controls.values():
            control.observe(self._changed, names="value")

    # ---- what a subclass provides ----------------------------------------------------------
    def compute(self):
        """Call the library for the current controls; return plain data."""
        raise NotImplementedError

    def draw(self, data) -> None:
        """Put `data` into `self.figure` (called inside a batch update)."""
        raise NotImplementedError

    def busy_text(self) -> str:
        return "computing …"

    def notes(self, data) -> list[str]:
        return []

    def needs_measuring(self, data) -> bool:
        """Whether `data` (from `compute`) still lacks a slow part for `measure` to add."""
        return False

    def measure(self, data, progress):
        """The slow part: `data` completed (a measurement added). `progress(done, total,
        what)` shows how far it got, and raises `Cancelled` once a newer change came."""
        return data

    # ---- shared behaviour ------------------------------------------------------------------
    def update(self, wait: bool = True) -> bool:
        """Recompute and redraw from the controls. Returns whether it succeeded; on failure
        the message says why and the figure keeps its last good data. With `background` on
        and `wait` False, a measurement still to come runs on the worker thread (and this
        returns True once the prediction is drawn)."""
        with self._lock:
            self._generation += 1
            generation = self._generation
        self.show(self.busy_text(), "busy")
        try:
            data = self.compute()
        except Exception as err:  # noqa: BLE001 - nothing may raise into the kernel
            return self._fail(err)
        if not self._draw(data, generation):
            return False
        if not self.needs_measuring(data):
            return self._settle(data)
        if not self.background:
            return self._measure(data, generation)
        if self._worker is None:
            self._worker = concurrent.futures.ThreadPoolExecutor(
                1, thread_name_prefix="tpuinfer-measure")
        self._pending = self._worker.submit(self._measure, data, generation)
        return self._pending.result() if wait else True

    def wait(self) -> bool:
        """Wait for the pending background measurement; whether it landed."""
        pending = self._pending
        return True if pending is None else pending.result()

    def _measure(self, data, generation) -> bool:
        def progress(done, total, what):
            with self._lock:
                if generation != self._generation:
                    raise Cancelled
                self.show(f"{self.busy_text()} {what} ({done} of {total})", "busy")
        try:
            full = self.measure(data, progress)
        except Cancelled:
            self.cancelled += 1
            return False
        except Exception as err:  # noqa: BLE001 - nothing may raise into the kernel
            with self._lock:
                return self._fail(err) if generation == self._generation else False
        with self._lock:  # drawn and worded together, unless a newer change came meanwhile
            if generation != self._generation:
                self.cancelled += 1  # landed after a newer change: never drawn
                return False
            return self._draw(full, generation) and self._settle(full)

    def _draw(self, data, generation) -> bool:
        """Draw `data` unless a newer update began; False (with the message) on failure."""
        with self._lock:
            if generation != self._generation:
                return False
            try:
                with self.figure.batch_update():
                    self.draw(data)
            except Exception as err:  # noqa: BLE001
                return self._fail(err)
            self.data = data
            if self.output is not None:
                self._redraw_static()
            return True

    def _redraw_static(self) -> None:
        """Static mode: replace the Output's figure with the current one (set directly, so
        that a background thread may do it too)."""
        bundle = Static(self.figure)._repr_mimebundle_()
        self.output.outputs = ({"output_type": "display_data", "data": bundle,
                                "metadata": {}},)

    def _settle(self, data) -> bool:
        self.error = None
        self.show(" · ".join(self.notes(data)), "info")
        return True

    def progress(self, desc: str):
        """A `progress(done, total, what)` callback (a context manager yielding it) that shows
        a text progress bar in the message line, beside the plot it is for."""
        return progress_bar(desc, show=lambda bar: self.show(bar, "busy"))

    def _fail(self, err: Exception) -> bool:
        # the library's own errors say what was chosen and what would work: show them as they
        # are; anything else is a bug (or XLA failing) worth reporting, so name its type
        text = str(err) if isinstance(err, TpuinferError) else f"{type(err).__name__}: {err}"
        self.error = text
        self.show(text + (" (the plot still shows the last configuration that ran)"
                          if self.data is not None else ""), "error")
        return False

    def show(self, text: str, kind: str = "info") -> None:
        spinner = _SPINNER if kind == "busy" else ""
        self.message.value = (f"<div class='tpuinfer-{kind}' style='{_STYLE[kind]}'>"
                              f"{spinner}{html.escape(text)}</div>") if text else ""

    def _changed(self, change) -> None:
        if not self._muted:
            self.update(wait=not self.background)

    @contextlib.contextmanager
    def hold(self):
        """Change several controls at once with one update at the end (also used inside,
        where one control resets others)."""
        self._muted += 1
        try:
            yield self
        finally:
            self._muted -= 1

    def set(self, **values) -> bool:
        """Set controls by name and update once: `explorer.set(ffn="ws1d", batch=8)`."""
        with self.hold():
            for name, value in values.items():
                self.controls[name].value = value
        return self.update()

    def snapshot(self) -> Static:
        """The current figure as plain plotly output, for a reader without a kernel (after
        the pending measurement, if any, has landed)."""
        self.wait()
        return static(self.figure)

    def _repr_mimebundle_(self, include=None, exclude=None):
        return self.widget._repr_mimebundle_(include=include, exclude=exclude)


def toggles(description: str, options, value, tooltip: str = "") -> W.ToggleButtons:
    return W.ToggleButtons(description=description, options=list(options), value=value,
                           tooltip=tooltip or None,
                           style={**CONTROL_STYLE, "button_width": "5.5em"},
                           layout=W.Layout(width="auto"))


def dropdown(description: str, options, value, tooltip: str = "", **kw) -> W.Dropdown:
    return W.Dropdown(description=description, options=options, value=value,
                      tooltip=tooltip or None, style=CONTROL_STYLE,
                      layout=W.Layout(width="auto"), **kw)


def int_text(description: str, value: int, lo: int = 1, hi: int = 2**20,
             tooltip: str = "") -> W.BoundedIntText:
    return W.BoundedIntText(description=description, value=value, min=lo, max=hi,
                            tooltip=tooltip or None, style=CONTROL_STYLE,
                            layout=W.Layout(width="11em"))
