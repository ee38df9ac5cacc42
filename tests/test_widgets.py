"""The explorers driven from Python, as a student's clicks would drive them: each control
change redraws the library's own numbers, and an invalid choice leaves a message and the
previous plot. Real steps run on small meshes (2x2x2) to keep the file fast."""
import threading

import plotly.graph_objects as go
import pytest

from tpuinfer import MODELS, planner
from tpuinfer.cost import estimate
from tpuinfer.layouts import Layout
from tpuinfer.measure import measure
from tpuinfer.mesh import factorizations
from tpuinfer.errors import UsageError
from tpuinfer.sweeps import crossover, step_quantity
from tpuinfer_widgets import (ContextExplorer, CrossoverExplorer, LayoutExplorer,
                              ParetoExplorer, PredictionLock)

MESH = (2, 2, 2)


def ys(explorer, i):
    return list(explorer.figure.data[i].y)


def by_kind(side):
    return {kind: nbytes for kind, (_, nbytes) in side.by_kind().items()}


# ---- layout explorer ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def layout_explorer():
    return LayoutExplorer(mesh=MESH, batch=8, context=8, repeats=1)


def test_layout_explorer_plots_measure_and_estimate(layout_explorer):
    ex = layout_explorer
    before = ys(ex, 1)
    assert ex.set(ffn="wg-xy") and ex.error is None
    assert ys(ex, 1) != before
    layout = Layout("wg-xy", "heads")
    m = measure("tiny", MESH, layout, phase="prefill", batch=8, tokens=8, context=8,
                weights="f32", repeats=1)
    est = estimate("tiny", layout, MESH, batch=8, tokens=8, context=8, weights="f32")
    predicted, measured, tpu = ex.figure.data[:3]  # the collective-bytes panel
    assert dict(zip(measured.x, measured.y)) == by_kind(m.measured)
    assert dict(zip(predicted.x, predicted.y)) == by_kind(m.predicted)
    tpu_bytes = {}
    for x in est.terms.collectives:
        tpu_bytes[x.kind] = tpu_bytes.get(x.kind, 0.0) + x.bytes * x.count
    assert dict(zip(tpu.x, tpu.y)) == tpu_bytes
    assert tpu.name == "predicted (tpu-v4)"
    assert ys(ex, 4) == [m.measured.flops, m.measured.attention_flops]  # measured FLOPs
    assert ys(ex, 7)[0] == m.measured.memory_bytes
    assert ys(ex, 11) == [est.step_s]  # the TPU time, labelled a prediction
    assert "prediction" in ex.message.value


def test_the_explorer_words_the_host_predictions_error(layout_explorer, tmp_path, monkeypatch):
    """With a host profile, the message says how far its prediction of this CPU's step was
    from the measurement: the library's `Measurement.host_error`, as the benchmark counts."""
    from tpuinfer.hardware import HOST_KINDS, HardwareProfile, save_host_profile
    from tpuinfer.measure import relative_error
    from tpuinfer.sweeps import step_comparison
    monkeypatch.setenv("TPUINFER_CACHE", str(tmp_path))
    save_host_profile(HardwareProfile(
        name="host", description="made up", peak_flops=1e11, hbm_bytes=2**34,
        hbm_bandwidth=1e10, interconnect="host", link_bandwidth=0.0, hop_latency_s=0.0,
        rule="sum", host_collectives=tuple((k, 1e-4, 1e-5, 1e-7, 1e-10) for k in HOST_KINDS)))
    data = step_comparison("tiny", MESH, Layout("ws2d", "heads"), phase="prefill", batch=8,
                           context=8, repeats=1)
    predicted, measured = (data["sides"][f"{k} (this CPU)"]["time_s"]
                           for k in ("predicted", "measured"))
    assert data["host_error"] == relative_error(predicted, measured) > 0
    (line,) = [n for n in layout_explorer.notes(data) if "host profile predicted" in n]
    assert line.endswith(f"{data['host_error']:.0%} off")


def test_layout_explorer_invalid_batch_keeps_the_last_plot(layout_explorer):
    ex = layout_explorer
    ex.set(ffn="wg-xy", batch=8)
    before = [ys(ex, i) for i in range(12)]
    assert not ex.set(batch=3)
    assert "batch B=3 cannot be split" in ex.message.value
    assert "last configuration" in ex.message.value
    assert [ys(ex, i) for i in range(12)] == before
    assert ex.set(batch=8) and ex.error is None


def test_layout_explorer_keeps_a_layout_per_phase(layout_explorer):
    ex = layout_explorer
    ex.set(phase="prefill", ffn="wg-xy", attention="heads", batch=8)
    ex.controls["phase"].value = "decode"  # a click: shows and runs the decode layout
    assert (ex.controls["ffn"].value, ex.controls["attention"].value) == ("ws2d", "batch")
    assert ex.error is None and ex.data["phase"] == "decode" and ex.data["tokens"] == 1
    ex.controls["phase"].value = "prefill"
    assert (ex.controls["ffn"].value, ex.controls["attention"].value) == ("wg-xy", "heads")
    assert ex.layouts["decode"] == Layout("ws2d", "batch")


def test_layout_explorer_shows_large_models_from_the_cost_model_alone(layout_explorer):
    ex = layout_explorer
    assert ex.set(model="palm-8b", ffn="ws2d", attention="heads", batch=8)
    try:
        assert not ex.figure.data[0].visible and not ex.figure.data[1].visible
        assert "only the cost model" in ex.message.value
        est = estimate("palm-8b", Layout("ws2d", "heads"), MESH, batch=8, tokens=8, context=8,
                       weights="f32")
        assert ys(ex, 11) == [est.step_s]
        assert ys(ex, 5) == [est.terms.flops, est.terms.attention_flops]
    finally:
        with ex.hold():
            ex.controls["model"].value = "tiny"


def test_layout_explorer_offers_every_mesh_of_every_sub_mesh(layout_explorer):
    ex = layout_explorer
    assert ex.controls["devices"].options == (1, 2, 4, 8, 16, 32, 64, 128, 256)
    with ex.hold():  # only the options: no step runs
        ex.controls["devices"].value = 256
        assert [v for _, v in ex.controls["mesh"].options] == factorizations(256)
        assert ex.controls["mesh"].value == (4, 8, 8)
        ex.controls["devices"].value = 8
        ex.controls["mesh"].value = MESH


def test_layout_explorer_looped_control_follows_the_layout(layout_explorer):
    looped = layout_explorer.controls["looped"]
    assert not looped.disabled
    with layout_explorer.hold():
        looped.value = True
        assert layout_explorer.layout().looped
        looped.value = False
    assert not layout_explorer.layout().looped


def test_an_unexpected_error_is_shown_not_raised(layout_explorer, monkeypatch):
    ex = layout_explorer

    def broken():
        raise RuntimeError("boom")
    monkeypatch.setattr(ex, "compute", broken)
    assert ex.update() is False
    assert "RuntimeError: boom" in ex.message.value


@pytest.fixture
def gate(layout_explorer, monkeypatch):
    """An open gate the explorer's measurements pass before they start: `gate.clear()` holds
    them there, `gate.set()` lets them go."""
    gate = threading.Event()
    gate.set()
    real = layout_explorer.measure

    def gated(data, progress):
        assert gate.wait(60)
        return real(data, progress)
    monkeypatch.setattr(layout_explorer, "measure", gated)
    yield gate
    gate.set()
    layout_explorer.wait()


def test_a_click_draws_the_prediction_before_the_measurement(layout_explorer, gate):
    ex = layout_explorer
    assert ex.set(ffn="ws2d", attention="heads", batch=8)
    gate.clear()
    ex.controls["batch"].value = 16  # a click: returns with the measurement still held
    est = estimate("tiny", Layout("ws2d", "heads"), MESH, batch=16, tokens=8, context=8,
                   weights="f32")
    assert ys(ex, 11) == [est.step_s]  # the TPU v4 prediction for batch 16, drawn already
    assert not ex.data["ran"] and not ex.figure.data[1].visible  # nothing measured yet
    assert "measuring" in ex.message.value
    gate.set()
    assert ex.wait() and ex.data["ran"] and ex.data["batch"] == 16
    m = measure("tiny", MESH, Layout("ws2d", "heads"), phase="prefill", batch=16, tokens=8,
                context=8, weights="f32", repeats=0)
    measured = ex.figure.data[1]
    assert measured.visible and dict(zip(measured.x, measured.y)) == by_kind(m.measured)
    assert 1 <= ex.data["runs"] <= ex.repeats


def test_a_newer_click_cancels_the_pending_measurement(layout_explorer, gate):
    ex = layout_explorer
    assert ex.set(ffn="ws2d", attention="heads", batch=8)
    gate.clear()
    cancelled = ex.cancelled
    ex.controls["batch"].value = 16  # its measurement is held ...
    ex.controls["batch"].value = 32  # ... and superseded before it starts
    gate.set()
    assert ex.wait()
    assert ex.cancelled == cancelled + 1  # batch 16 was never measured nor drawn
    assert ex.data["ran"] and ex.data["batch"] == 32
    assert "batch 32" in ex.figure.layout.title.text


# ---- crossover explorer ---------------------------------------------------------------------
TOKENS = [1, 8, 64, 512, 4096]


@pytest.fixture(scope="module")
def crossover_explorer():
    return CrossoverExplorer(chips=8, tokens=TOKENS, measure_tokens=[8])


def test_crossover_explorer_plots_the_sweep(crossover_explorer):
    cx = crossover_explorer
    expected = crossover("tiny", MESH, TOKENS, attention="heads", weights="f32")
    assert {t.name: list(t.y) for t in cx.figure.data[:5]} == expected["comm_bytes"]
    before = ys(cx, 0)
    assert cx.set(d_model=512)
    wider = MODELS["tiny"].replace(name="tiny E=512 F=1024", d_model=512)
    assert ys(cx, 0) != before
    assert ys(cx, 0) == crossover(wider, MESH, TOKENS, weights="f32")["comm_bytes"]["ws1d"]
    # F=100 splits over 4 chips, not 8: the weight-stationary layouts (F over x, y, z) cannot
    # run; the weight-gathered ones (F stored over y, z) still can
    assert cx.set(d_ff=100)
    odd = crossover(wider.replace(name="odd", d_ff=100), MESH, TOKENS, weights="f32")
    assert "ws1d cannot run here: F=100 does not divide" in cx.message.value
    assert list(cx.figure.data[0].y) == [] and ys(cx, 4) == odd["comm_bytes"]["wg-xyz"]
    assert cx.set(model="palm-8b")  # a preset brings its own dimensions
    assert (cx.controls["d_model"].value, cx.controls["d_ff"].value) == (4096, 16384)
    assert cx.set(model="tiny")
    assert cx.controls["d_model"].value == 256 and ys(cx, 0) == before


def test_crossover_measured_points_lie_on_the_curves(crossover_explorer):
    cx = crossover_explorer
    assert cx.set(model="tiny", measured=True) and cx.error is None
    at = TOKENS.index(8)
    for curve, points in zip(cx.figure.data[:5], cx.figure.data[5:]):
        assert list(points.x) == [8]
        assert list(points.y) == [curve.y[at]], curve.name  # compiled bytes = predicted


# ---- Pareto explorer ------------------------------------------------------------------------
def test_pareto_explorer_plots_the_planners_frontier():
    px = ParetoExplorer(models=("palm-8b",), weights=("bf16",), chips=[8], batches=[1, 8])
    sweep = planner.pareto("palm-8b", chips=[8], batches=[1, 8], weights="int8")
    before = [list(t.x) for t in px.figure.data if t.visible]
    assert px.set(weights=("int8",))
    decode = next(t for t in px.figure.data if t.name == "palm-8b int8" and t.xaxis == "x2")
    assert list(decode.x) == [p["latency_s"] * 1e3 for p in sweep["decode"]]
    assert list(decode.y) == [p["cost_chip_s_per_token"] * 1e3 for p in sweep["decode"]]
    assert [list(c[:5]) for c in decode.customdata] == [
        [p["chips"], p["batch"], "×".join(map(str, p["mesh"])), p["ffn"], p["attention"]]
        for p in sweep["decode"]]
    assert [list(t.x) for t in px.figure.data if t.visible] != before
    shown = [list(t.x) for t in px.figure.data]
    assert not px.set(models=("palm-540b",))  # 540B fits on no 8-chip mesh
    assert "does not fit" in px.message.value
    assert [list(t.x) for t in px.figure.data] == shown


# ---- context explorer -----------------------------------------------------------------------
def test_context_explorer_plots_the_planners_context():
    kx = ContextExplorer(chips=64, batch=128, batches=[1, 64, 512], contexts=[1024, 2048])
    variants = planner.ATTENTION_VARIANTS
    assert [list(t.y) for t in kx.figure.data[3:]] == [
        [planner.max_context("palm-540b", 64, b, v) if b % 64 == 0 or v != "multiquery-batch"
         else None for b in (1, 64, 512)] for v in variants]
    assert [list(t.y) for t in kx.figure.data[:3]] == [
        [planner.kv_bytes_per_chip("palm-540b", v, 64, 128, s) for s in (1024, 2048)]
        for v in variants]
    shown = [list(t.y) for t in kx.figure.data]
    assert not kx.set(kv_fraction=0.0)
    assert "kv_fraction must be in (0, 1]" in kx.message.value
    assert [list(t.y) for t in kx.figure.data] == shown
    assert kx.set(kv_fraction=0.3, batch=3)  # by batch cannot split 3: explained, others drawn
    assert "multiquery-batch shards the batch" in kx.message.value
    assert list(kx.figure.data[0].y) == [
        planner.kv_bytes_per_chip("palm-540b", "multihead", 64, 3, s) for s in (1024, 2048)]


# ---- stored output --------------------------------------------------------------------------
def test_snapshot_is_plain_plotly_output():
    kx = ContextExplorer(batches=[64], contexts=[1024])
    bundle = kx.snapshot()._repr_mimebundle_()
    fig = bundle["application/vnd.plotly.v1+json"]
    assert [t["y"] for t in fig["data"]] == [list(t.y) for t in kx.figure.data]
    assert "plotly" in bundle["text/html"] and "<script" in bundle["text/html"]
    assert "application/vnd.jupyter.widget-view+json" in kx._repr_mimebundle_()


# ---- front-ends that cannot load plotly's FigureWidget ---------------------------------------
def shown_in_output(explorer):
    """The figure a static-mode explorer's Output holds: one display_data, plotly's JSON."""
    (out,) = explorer.output.outputs
    assert out["output_type"] == "display_data"
    return [t["y"] for t in out["data"]["application/vnd.plotly.v1+json"]["data"]]


def test_static_figures_are_redrawn_into_an_output_after_every_change(monkeypatch):
    from tpuinfer_widgets import base
    monkeypatch.setitem(base._figures, "mode", "auto")
    base.use_static_figures()
    assert base.figure_mode() == "static"
    kx = ContextExplorer(chips=64, batch=128, batches=[64, 512], contexts=[1024, 2048])
    assert type(kx.figure) is go.Figure and kx.output in kx.widget.children
    assert shown_in_output(kx) == [list(t.y) for t in kx.figure.data]
    before = shown_in_output(kx)
    assert kx.set(batch=512)
    assert shown_in_output(kx) != before
    assert shown_in_output(kx) == [list(t.y) for t in kx.figure.data]
    drawn = shown_in_output(kx)
    assert not kx.set(kv_fraction=0.0)  # an error keeps the last good plot, in the Output too
    assert "kv_fraction must be in (0, 1]" in kx.message.value
    assert shown_in_output(kx) == drawn
    base.use_static_figures(False)
    live = ContextExplorer(batches=[64], contexts=[1024])
    assert live.output is None and type(live.figure).__name__ == "FigureWidget"


def test_without_a_usable_figure_widget_the_explorers_fall_back_on_their_own(monkeypatch):
    from tpuinfer_widgets import base
    monkeypatch.setitem(base._figures, "mode", "auto")

    def no_widget(*args, **kwargs):
        raise ImportError("anywidget is not available in this front-end")
    monkeypatch.setattr(base.go, "FigureWidget", no_widget)
    kx = ContextExplorer(batches=[64], contexts=[1024])
    assert kx.output is not None and shown_in_output(kx) == [list(t.y) for t in kx.figure.data]
    assert base.figure_mode() == "widget"
    monkeypatch.setenv("VOILA_KERNEL_ID", "a-voila-kernel")  # Voilà sets it in its kernels
    assert base.figure_mode() == "static"
    monkeypatch.delenv("VOILA_KERNEL_ID")
    monkeypatch.setattr(base, "anywidget", None)
    assert base.figure_mode() == "static"
    monkeypatch.setitem(base._figures, "mode", "canvas")
    with pytest.raises(ValueError, match="TPUINFER_WIDGET_FIGURES='canvas'; choose one of "
                                         "auto, widget, static"):
        base.figure_mode()


# ---- prediction lock -------------------------------------------------------------------------
def _all_gathers():
    return step_quantity("tiny", MESH, Layout("ws1d", "heads"), phase="prefill", batch=8,
                         tokens=8, quantity="bytes:all-gather")


def test_step_quantity_is_the_measured_steps_own_number():
    r = _all_gathers()
    m = measure("tiny", MESH, Layout("ws1d", "heads"), phase="prefill", batch=8, tokens=8,
                repeats=0)
    assert r["measured"] == m.measured.by_kind()["all-gather"][1] == 131_072  # 2 x B·L·E·4
    assert r["predicted"] == m.predicted.by_kind()["all-gather"][1]
    assert "2x2x2" in r["measured_by"] and "no hardware profile" in r["predicted_by"]
    calls = step_quantity("tiny", MESH, Layout("ws1d", "heads"), phase="prefill", batch=8,
                          tokens=8, quantity="calls:all-to-all")
    assert calls["measured"] == calls["predicted"] == 0
    with pytest.raises(UsageError, match="calls:<kind>"):
        step_quantity("tiny", MESH, Layout("ws1d", "heads"), phase="prefill", batch=8,
                      quantity="bytes")


def test_a_locked_guess_is_revealed_beside_the_prediction_and_the_measurement():
    lock = PredictionLock("03.1", "all-gather bytes", _all_gathers, guess=100_000)
    assert lock.result == _all_gathers() and lock.guess == 100_000 and lock.error is None
    assert lock.entry.disabled and lock.button.disabled
    (guess, predicted, measured) = lock.rows()
    assert guess[2:] == (100_000, "24% low")  # |100000 - 131072| / 131072
    assert predicted[1:] == (lock.result["predicted_by"], 131_072, "exact")
    assert measured[1:3] == (lock.result["measured_by"], 131_072)
    assert "131,072 bytes" in lock.table.value and "24% low" in lock.table.value
    fig = lock.snapshot().figure
    assert list(fig.data[0].x) == [131_072, 131_072, 100_000]  # measured, predicted, guess
    assert lock.lock() is True  # locked once: a second click changes nothing


def test_the_lock_waits_for_a_number_and_says_what_is_wrong():
    calls = []
    lock = PredictionLock("x.1", "q", lambda: calls.append(1) or {
        "what": "a number", "unit": "s", "predicted": 2.0, "predicted_by": "cost model",
        "measured": None, "measured_by": ""}, guess=...)
    assert lock.result is None and not calls and "not revealed" in lock.figure().layout.title.text
    lock.entry.value = "about three"
    assert lock.lock() is False and not calls  # nothing runs before a number is locked
    assert lock.error.startswith("'about three' is not a number") and "error" in lock.message.value
    assert not lock.entry.disabled
    lock.entry.value, lock.why.value = "2.5", "half the weights"
    lock.button.click()
    assert calls == [1] and lock.guess == 2.5
    rows = lock.rows()
    assert len(rows) == 2 and rows[0][1] == "your prediction (half the weights)"
    assert rows[0][3] == "25% high"  # no measurement: against the prediction


def test_a_failed_reveal_is_a_message_and_the_lock_opens_again():
    lock = PredictionLock("x.2", "q", lambda: step_quantity(
        "tiny", MESH, Layout("ws2d", "batch"), phase="decode", batch=3,
        quantity="calls:all-to-all"), guess=4)
    assert lock.result is None and "batch B=3" in lock.error
    assert "Traceback" not in lock.message.value and not lock.button.disabled
    boom = PredictionLock("x.3", "q", lambda: 1 / 0, guess=1)
    assert boom.error == "ZeroDivisionError: division by zero"


def test_the_lock_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    lock = PredictionLock("x.4", "q", lambda: {
        "what": "w", "unit": "", "predicted": 1, "predicted_by": "p", "measured": 1,
        "measured_by": "m"}, guess=1)
    lock.snapshot()
    assert lock.result is not None and list(tmp_path.iterdir()) == []
