"""Measurement against prediction: what the compiler emits for every layout, phase and mesh
equals what the layout files predict (collectives per kind in count and bytes, FLOPs, the
weights each device holds, memory held), and the machinery reading it.

The steps have test_layouts.py's and test_looped.py's shapes (batch = devices, a 4-token
prompt, a 7-position cache), so in one session the compiled steps are shared through the
engine's cache. Memory during the step (the compiler's temporaries) is reported, not compared:
tpuinfer/measure.py says why.
"""
import importlib
import json
import statistics
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import pytest
from jax.sharding import PartitionSpec as P

import tpuinfer as ti
from tpuinfer import hlo, report
from tpuinfer.cli import main
from tpuinfer.measure import Flag, group_axes, measure
from tpuinfer.report import measurement_notes

CFG = ti.MODELS["tiny"]
MESHES = [(2, 2, 2), (1, 4, 2), (4, 8, 8)]  # cubic, a size-1 axis, the full mesh
PROMPT_LEN, CACHE_LEN = 4, 7
PHASES = ("prefill", "decode")
CONFIGS = [(shape, ti.Layout(f, a), phase) for shape in MESHES for f in ti.FFN_LAYOUTS
           for a in ti.ATTENTION_LAYOUTS for phase in PHASES]
# On the full mesh the models have one layer, as in test_layouts.py and test_looped.py (whose
# compiled steps these are): every layer is the same program, and a second doubled the
# compile. Two layers' gathered weights never held at once is checked on the smaller meshes.
MTNLG = ti.MODELS["tiny-mtnlg"]


def model_on(shape, cfg=CFG):
    """The model a test measures on this mesh: `cfg`, with one layer on the full mesh."""
    return cfg.replace(name=f"{cfg.name}-1-layer", n_layers=1) if tuple(shape) == (4, 8, 8) \
        else cfg


ONE_LAYER, MTNLG_ONE = model_on((4, 8, 8)), model_on((4, 8, 8), MTNLG)


LOOPED = [(s, ti.Layout(f, a, looped=True, bidirectional=b), phase) for f, a, b, s in
          [(f, "heads", False, s) for f in ti.FFN_LAYOUTS for s in [(2, 2, 2), (1, 4, 2)]]
          + [("ws2d", "batch", False, (2, 2, 2)), ("wg-xy", "batch", False, (2, 2, 2)),
             ("ws1d", "heads", True, (2, 2, 2)), ("ws2d", "batch", True, (2, 2, 2)),
             ("ws2d", "heads", True, (1, 4, 2))]
          for phase in PHASES]
STEPS = [(s, l, ph, model_on(s)) for s, l, ph in CONFIGS + LOOPED] + [
    ((4, 8, 8), ti.Layout("ws2d", "heads", looped=True), ph, ONE_LAYER) for ph in PHASES]
# Attention by batch below the chip count, and MT-NLG's block (serial, GELU, multihead):
# test_layouts.py's small-batch and tiny-mtnlg runs (the same compiled steps), each layout in
# the phase it ran there: (model, shape, batch, layout, phase)
L_ = ti.Layout
SMALL = ([(CFG, (2, 2, 2), 4, L_("ws2d", "batch"), ph) for ph in PHASES]
         + [(CFG, (2, 2, 2), 2, L_("ws1d", "batch"), ph) for ph in PHASES]
         + [(CFG, (1, 4, 2), 4, L_("wg-x", "batch"), ph) for ph in PHASES]
         + [(ONE_LAYER, (4, 8, 8), 16, L_("ws2d", "batch"), "decode")]
         + [(MTNLG, (2, 2, 2), 8, L_(f, a), ph) for f in ti.FFN_LAYOUTS
            for a, ph in (("heads", "prefill"), ("batch", "decode"))]
         + [(MTNLG_ONE, (4, 8, 8), b, L_(f, a), ph) for b, (f, a, ph) in [
             (32, ("ws1d", "heads", "prefill")), (32, ("ws2d", "batch", "decode")),
             (64, ("ws2d", "heads", "prefill")), (64, ("ws1d", "batch", "decode")),
             (32, ("wg-xy", "heads", "prefill")), (32, ("wg-x", "batch", "decode"))]])


@pytest.fixture(scope="session")
def measured():
    """measure(...) of one configuration, each read once per session (not run: repeats=0)."""
    seen = {}

    def get(shape, layout, phase, weights="f32", batch=None, cfg=None):
        cfg = cfg or model_on(shape)
        batch = batch or shape[0] * shape[1] * shape[2]
        key = (shape, layout, phase, weights, batch, cfg)
        if key not in seen:
            seen[key] = measure(cfg, ti.make_mesh(shape), layout, phase=phase, batch=batch,
                                tokens=PROMPT_LEN if phase == "prefill" else None,
                                context=CACHE_LEN, weights=weights, repeats=0)
        return seen[key]
    return get


def assert_matches_prediction(m):
    p, q = m.predicted, m.measured
    # collectives: per kind, the same count and the same bytes (within 1%) ...
    assert q.by_kind().keys() == p.by_kind().keys()
    for kind, (n_p, b_p) in p.by_kind().items():
        n_q, b_q = q.by_kind()[kind]
        assert n_q == n_p, (kind, n_q, n_p)
        assert b_q == pytest.approx(b_p, rel=0.01), kind
    # ... over the same mesh axes, group by group
    axes = lambda side: sorted((x.kind, x.axes, x.group, x.count) for x in side.collectives)
    assert axes(q) == axes(p)
    assert q.flops == pytest.approx(p.flops, rel=0.05)
    assert q.attention_flops == pytest.approx(p.attention_flops, rel=0.05)
    assert q.weight_bytes_per_device == p.weight_bytes_per_device
    # held memory: measured, the step's arguments and outputs, so besides the weights and
    # cache its token ids and last-position logits too (6 KB a device at batch 256 on 4x8x8,
    # 13% of a one-layer tiny's share), which the prediction leaves out
    assert q.memory_bytes == pytest.approx(p.memory_bytes, rel=0.10, abs=8192)
    # the matmul FLOPs read from the text agree with the compiler's own count
    assert m.compiler_flops and Flag.FLOPS_MISREAD not in m.flags


@pytest.mark.slow
@pytest.mark.parametrize("shape, layout, phase, cfg", STEPS,
                         ids=[f"{'x'.join(map(str, s))}-{l}-{ph}"
                              + ("" if c == CFG else f"-{c.name}") for s, l, ph, c in STEPS])
def test_measured_step_matches_prediction(measured, shape, layout, phase, cfg):
    m = measured(shape, layout, phase, cfg=cfg)
    assert_matches_prediction(m)
    if shape == (4, 8, 8):
        # memory during the step: the compiler's temporaries within 3x of the predicted
        # transient (largest activation plus one layer's gathered weights)
        assert m.measured.transient_bytes <= 3 * m.predicted.transient_bytes, (
            m.measured.transient_bytes, m.predicted.transient_bytes)
    # where gathered weights outweigh the activations, never two layers' gathered weights at
    # once (with tiny's two layers, on the smaller meshes)
    gathered = m.terms.gathered_weight_bytes
    if cfg.n_layers > 1 and gathered > m.terms.activation_bytes:
        assert m.measured.transient_bytes < 2 * gathered, (m.measured.transient_bytes,
                                                           gathered)


@pytest.mark.slow
@pytest.mark.parametrize("cfg, shape, batch, layout, phase", SMALL,
                         ids=[f"{c.name}-{'x'.join(map(str, s))}-B{b}-{l}-{ph}"
                              for c, s, b, l, ph in SMALL])
def test_small_batch_and_mtnlg_steps_match_prediction(measured, cfg, shape, batch, layout,
                                                      phase):
    m = measured(shape, layout, phase, batch=batch, cfg=cfg)
    assert_matches_prediction(m)
    # byte for byte, collective by collective
    exact = lambda side: sorted((x.kind, x.axes, x.group, x.count, x.bytes)
                                for x in side.collectives)
    assert exact(m.measured) == exact(m.predicted)


@pytest.mark.parametrize("weights, layout", [
    ("bf16", ti.Layout("ws2d", "batch")),  # bf16 activations: XLA:CPU moves them as f32
    ("int8", ti.Layout("wg-x", "heads")),  # int8 matrices gathered as s8, their bf16 scales too
], ids=str)
def test_weight_formats_match_prediction(measured, weights, layout):
    m = measured((2, 2, 2), layout, "decode", weights)
    assert_matches_prediction(m)
    assert Flag.COLLECTIVES_WIDENED in m.flags
    assert "runs bf16 collectives in f32" in " ".join(measurement_notes(m))
    if weights == "int8":  # the weights themselves cross the wire in int8
        assert any(x.kind == "all-gather" and x.dtype == "s8" for x in m.measured.collectives)
    assert m.terms.stored_weight_bytes == m.measured.weight_bytes_per_device


@pytest.mark.slow
def test_full_mesh_decode_in_numbers(measured):
    """2D weight-stationary decode, attention by batch, on 4x8x8 (per device, f32): written
    out from ws2d.py's formulas with B=256, L=1, E=256, F=1024, H=256, D=8, one layer (each
    layer's collectives once more per layer)."""
    m = measured((4, 8, 8), ti.Layout("ws2d", "batch"), "decode")
    got = {(x.kind, "".join(x.axes), x.bytes): x.count for x in m.measured.collectives}
    assert got == {
        ("all-gather", "yz", 256 * 64 * 4): 1,  # 1. BLE_xyz -> BLE_x
        # 3. gate, up and q, with X=4 copies of the norm's sum of squares and K, V
        ("reduce-scatter", "x", 256 * ((2 * 1024 + 2048) // 64 + 4 * (1 + 2 * 8)) * 4): 1,
        ("all-to-all", "xyz", 256 * 256 * 8 // 256 * 4): 2,  # Q to batch, O back
        ("all-gather", "x", 256 * (1024 + 2048) // 64 * 4): 1,  # 5. act and o
        ("reduce-scatter", "yz", 256 * 64 * 4): 1,  # 7. BLE_x -> BLE_xyz
        ("all-reduce", "xyz", 256 * 4): 1,  # final norm's sum of squares
        ("reduce-scatter", "xyz", 256 * 512 * 4): 1,  # output projection, last position
    }


def test_second_measure_reuses_the_compiled_step():
    shape, layout = (2, 2, 2), ti.Layout("ws2d", "heads")
    # compiled here (or earlier, if still among the engine's most recent compiled steps) ...
    measure(CFG, ti.make_mesh(shape), layout, phase="decode", batch=8, context=CACHE_LEN,
            repeats=0)
    # ... and not again
    again = measure(CFG, ti.make_mesh(shape), layout, phase="decode", batch=8,
                    context=CACHE_LEN, repeats=2)
    assert again.compile_s == 0.0  # no time spent compiling: the step was reused
    # and it was timed: one warm-up, then the median of the runs, each blocking
    assert len(again.step_times_s) == 2 and all(t > 0 for t in again.step_times_s)
    assert again.to_json()["measured"]["runs"] == again.runs == 2
    assert again.measured.time_s == statistics.median(again.step_times_s)


measure_module = importlib.import_module("tpuinfer.measure")  # the package exports the function


def clocked_step(monkeypatch, durations):
    """A step whose runs take `durations` (the warm-up first) on a clock it advances itself,
    so the stopping rule is checked without timing anything real."""
    clock, runs = [0.0], iter(durations)
    monkeypatch.setattr(measure_module.time, "perf_counter", lambda: clock[0])

    def step(params, tokens_BL, cache, pos):
        clock[0] += next(runs)
        return jnp.zeros(1), cache
    return step


@pytest.mark.parametrize("durations, budget_s, runs", [
    ([1.0, 0.5, 0.2, 0.2, 0.2, 9, 9], None, 4),  # the last three agree: stop
    ([1.0] + [0.1, 0.2] * 5, None, 8),  # never settled: every one of the repeats
    ([1.0] + [0.1, 0.2] * 5, 0.5, 4),  # the budget spent after 0.6 s of runs
    ([1.0, 2.0, 0.1, 0.1], 0.5, 1),  # at least one run, however long
])
def test_timing_stops_once_runs_agree_or_the_budget_is_spent(monkeypatch, durations, budget_s,
                                                             runs):
    seen = []
    times = measure_module._time(clocked_step(monkeypatch, durations), None, None, None, 0, 8,
                                 budget_s, lambda done, total, what: seen.append(what))
    assert times == pytest.approx(durations[1:1 + runs])
    assert seen == [f"running step {k} of at most 8" for k in range(1, runs + 1)]
    assert measure_module.spread(times) == (
        None if runs == 1 else pytest.approx((max(times) - min(times)) / statistics.median(times)))


def test_warm_up_by_time_and_a_floor_on_timed_runs(monkeypatch):
    """`measure.PRECISE`'s two knobs: warm-up runs until `warmup_s` has passed (the first
    runs of a short step are slow), and no early stop before `min_runs` timed runs."""
    durations = [1.0, 0.5, 0.5] + [0.2] * 8  # three warm-ups reach 2.0 s >= 1.6 s
    times = measure_module._time(clocked_step(monkeypatch, durations), None, None, None, 0, 8,
                                 warmup_s=1.6, min_runs=5)
    assert times == pytest.approx([0.2] * 5)  # three agreed after 3, but 5 must run
    assert measure_module.PRECISE["min_runs"] > measure_module.STABLE_RUNS
    with pytest.raises(ValueError, match="warmup_s must be >= 0"):
        measure(CFG, (2, 2, 2), ti.Layout("ws2d", "heads"), phase="decode", batch=8,
                context=CACHE_LEN, warmup_s=-1)


def test_the_host_error_is_relative_to_the_measurement():
    assert measure_module.relative_error(1.2, 1.0) == pytest.approx(0.2)
    assert measure_module.relative_error(0.5, 1.0) == pytest.approx(0.5)
    assert measure_module.relative_error(None, 1.0) is None
    assert measure_module.relative_error(1.0, None) is None


def test_host_times_prints_each_steps_error_and_their_median():
    def step(predicted, measured):
        m = SimpleNamespace(predicted=SimpleNamespace(time_s=predicted),
                            measured=SimpleNamespace(time_s=measured), drift=None,
                            model_time_s=predicted)
        m.host_error = measure_module.relative_error(predicted, measured)
        return m
    steps = {"a": step(1.1, 1.0), "b": step(0.5, 1.0), "c": step(2.6, 2.0)}
    assert report.host_error_summary(steps) == pytest.approx((0.3, 0.5))
    text = report.host_times(steps)
    assert [line.split()[-1] for line in text.splitlines()[1:4]] == ["10%", "50%", "30%"]
    # no probe beside these steps (a profile from before it): said, not a factor of 1
    assert text.endswith("median error 30%, worst 50%, over 3 steps\ndrift: no drift probe (a "
                         "host profile calibrated before it existed)")
    uncalibrated = {"a": step(None, 1.0)}
    assert report.host_error_summary(uncalibrated) == (None, None)
    assert report.host_times(uncalibrated) == report.NO_HOST_PROFILE


def test_a_progress_callback_that_raises_stops_the_measurement():
    class Stop(Exception):
        pass

    def stop_at_second_run(done, total, what):
        if done == 2:
            raise Stop
    with pytest.raises(Stop):
        measure(CFG, (2, 2, 2), ti.Layout("ws2d", "heads"), phase="decode", batch=8,
                context=CACHE_LEN, repeats=5, progress=stop_at_second_run)
    with pytest.raises(ValueError, match="budget_s must be a positive number"):
        measure(CFG, (2, 2, 2), ti.Layout("ws2d", "heads"), phase="decode", batch=8,
                context=CACHE_LEN, budget_s=0)


def test_bad_input_gets_the_engines_errors():
    mesh = ti.make_mesh((2, 2, 2))
    with pytest.raises(ValueError, match=r"batch B=3 cannot be split over x=2 chips"):
        measure(CFG, mesh, ti.Layout("ws2d", "batch"), phase="decode", batch=3)
    with pytest.raises(ValueError, match=r"E=256 does not divide by X·Y·Z=3"):
        measure(CFG, (3, 1, 1), ti.Layout("ws1d", "heads"), batch=3)
    with pytest.raises(ValueError, match="unknown phase 'generate'"):
        measure(CFG, mesh, ti.Layout(), phase="generate", batch=8)
    with pytest.raises(ValueError, match="a decode step processes 1 token"):
        measure(CFG, mesh, ti.Layout(), phase="decode", batch=8, tokens=4)
    with pytest.raises(ValueError, match="unknown weight format 'fp4'"):
        measure(CFG, mesh, ti.Layout(), batch=8, weights="fp4")
    with pytest.raises(ValueError, match="unknown KV-cache format 'int4'.*bf16, int8, fp8"):
        measure(CFG, mesh, ti.Layout(), batch=8, kv="int4")


def test_command_line_json_and_table(capsys):
    args = ["measure", "--mesh", "2x2x2", "--ffn", "ws2d", "--attention", "heads",
            "--phase", "decode", "--batch", "8", "--context", str(CACHE_LEN), "--repeats", "1"]
    assert main(args + ["--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["mesh"], out["ffn"], out["phase"], out["batch"]) == ("2x2x2", "ws2d", "decode", 8)
    for side in ("predicted", "measured"):
        assert {"collectives", "comm_bytes", "flops", "memory_bytes",
                "weight_bytes_per_device", "time_s"} <= out[side].keys()
        assert {"kind", "axes", "bytes", "count"} <= out[side]["collectives"][0].keys()
    assert out["measured"]["collectives"] == out["predicted"]["collectives"]
    assert out["measured"]["comm_bytes"] == out["predicted"]["comm_bytes"]
    assert out["measured"]["time_s"] > 0
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "reduce-scatter(yz)" in text and "time (TPU v4, predicted)" in text
    assert main(["measure", "--mesh", "2x2x2", "--ffn", "ws2d", "--attention", "batch",
                 "--batch", "3", "--json"]) == 2
    assert "batch B=3 cannot be split" in json.loads(capsys.readouterr().out)["error"]


def test_command_line_looped_bidirectional(capsys):
    args = ["measure", "--mesh", "2x2x2", "--ffn", "ws2d", "--attention", "heads",
            "--phase", "decode", "--batch", "8", "--context", str(CACHE_LEN), "--repeats", "0",
            "--looped", "--bidirectional", "--json"]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["looped"], out["bidirectional"]) == (True, True)
    kinds = {c["kind"] for c in out["measured"]["collectives"]}
    assert "collective-permute" in kinds  # steps 1 and 7 round the ring of y·z
    assert out["measured"]["collectives"] == out["predicted"]["collectives"]


# ---- reading HLO text -----------------------------------------------------------------------
def _every_kind(x, w_EF):
    """One collective of each kind, a weight matmul (through a cast, as int8/bf16 weights are
    read) and a matmul of two computed tensors, on a 2x2x2 mesh."""
    gathered = jax.lax.all_gather(x, ("y", "z"), tiled=True)
    summed = jax.lax.psum(x, "x")
    scattered = jax.lax.psum_scatter(gathered, ("y", "z"), tiled=True)
    swapped = jax.lax.all_to_all(x, "z", 0, 0, tiled=True)
    shifted = jax.lax.ppermute(x, ("y", "z"), [(i, (i + 1) % 4) for i in range(4)])
    h_BF = jnp.einsum("BE,EF->BF", summed, w_EF.astype(jnp.float32))
    s_BC = jnp.einsum("BE,CE->BC", scattered + swapped + shifted, h_BF)
    return gathered.sum() + s_BC.sum() * jnp.ones_like(x)


@pytest.fixture(scope="module")
def compiled_hlo():
    """What XLA prints for a compiled program (`compiled.as_text()`), not text written by hand."""
    mesh = ti.make_mesh((2, 2, 2))
    step = jax.jit(jax.shard_map(_every_kind, mesh=mesh, in_specs=(P(), P()), out_specs=P(),
                                 check_vma=False))
    x, w = jnp.ones((4, 8), jnp.float32), jnp.ones((8, 8), jnp.bfloat16)
    return hlo.parse(step.lower(x, w).compile().as_text())


def test_hlo_collectives_every_kind(compiled_hlo):
    """Each kind once, with its groups (device id = 4x + 2y + z) and bytes per device under
    the terms.py convention; a combined all-to-all's operands summed."""
    got = {c.kind: (c.groups, c.bytes, c.dtype) for c in hlo.collectives(compiled_hlo, 8)}
    yz, f32 = ((0, 1, 2, 3), (4, 5, 6, 7)), 4
    assert got == {
        "all-gather": (yz, 16 * 8 * f32, "f32"),  # its output: 4 members' [4, 8]
        "all-reduce": (((0, 4), (1, 5), (2, 6), (3, 7)), 4 * 8 * f32, "f32"),
        "reduce-scatter": (yz, 16 * 8 * f32, "f32"),  # its input
        "all-to-all": (((0, 1), (2, 3), (4, 5), (6, 7)), 4 * 8 * f32, "f32"),
        "collective-permute": (yz, 4 * 8 * f32, "f32"),  # the ring's devices
    }


def test_hlo_matmuls_tell_weights_from_attention(compiled_hlo):
    """A dot reading a step argument through a cast is a weight matmul; a dot of two computed
    tensors (like attention's scores) is not."""
    got = {m.einsum: (m.flops, m.reads_argument) for m in hlo.matmuls(compiled_hlo)}
    assert got == {"BE,EF->BF": (2 * 4 * 8 * 8, True), "BE,CE->BC": (2 * 4 * 4 * 8, False)}


def test_hlo_iota_replica_groups():
    """The iota form XLA prints for regular groups (GPU and TPU programs use it; XLA:CPU
    prints lists): `[G,K]<=[dims]T(perm)`."""
    assert hlo.replica_groups("replica_groups=[2,4]<=[8], dimensions={0}", 8) == (
        (0, 1, 2, 3), (4, 5, 6, 7))
    assert hlo.replica_groups("replica_groups=[4,2]<=[2,4]T(1,0)", 8) == (
        (0, 4), (1, 5), (2, 6), (3, 7))
    assert hlo.replica_groups("replica_groups={}", 4) == ((0, 1, 2, 3),)


def test_groups_map_to_mesh_axes():
    shape = (2, 2, 2)  # device id = 4x + 2y + z
    assert group_axes(((0, 4), (1, 5), (2, 6), (3, 7)), shape) == ("x",)
    assert group_axes(((0, 1, 2, 3), (4, 5, 6, 7)), shape) == ("y", "z")
    assert group_axes((tuple(range(8)),), shape) == ("x", "y", "z")
