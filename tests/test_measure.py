"""Measurement against prediction: what the compiler emits for every layout, phase and mesh
equals what the layout files predict (collectives per kind in count and bytes, FLOPs, the
weights each device holds, memory held), and the machinery reading it.

The steps have test_layouts.py's and test_looped.py's shapes (batch = devices, a 4-token
prompt, a 7-position cache), so in one session the compiled steps are shared through the
engine's cache. Memory during the step (the compiler's temporaries) is reported, not compared:
tpuinfer/measure.py says why.
"""
import json
import statistics

import pytest

import tpuinfer as ti
from tpuinfer import engine, hlo
from tpuinfer.cli import main
from tpuinfer.measure import group_axes, measure

CFG = ti.MODELS["tiny"]
MESHES = [(2, 2, 2), (1, 4, 2), (4, 8, 8)]  # cubic, a size-1 axis, the full mesh
PROMPT_LEN, CACHE_LEN = 4, 7
PHASES = ("prefill", "decode")
CONFIGS = [(shape, ti.Layout(f, a), phase) for shape in MESHES for f in ti.FFN_LAYOUTS
           for a in ti.ATTENTION_LAYOUTS for phase in PHASES]
# Looped CollectiveEinsum: test_looped.py's cases (the same compiled steps), both phases
LOOPED = [(s, ti.Layout(f, a, looped=True, bidirectional=b), phase) for f, a, b, s in
          [(f, "heads", False, s) for f in ti.FFN_LAYOUTS for s in [(2, 2, 2), (1, 4, 2)]]
          + [("ws2d", "batch", False, (2, 2, 2)), ("wg-xy", "batch", False, (2, 2, 2)),
             ("ws1d", "heads", True, (2, 2, 2)), ("ws2d", "batch", True, (2, 2, 2)),
             ("ws2d", "heads", True, (1, 4, 2)), ("ws2d", "heads", False, (4, 8, 8))]
          for phase in PHASES]


@pytest.fixture(scope="session")
def measured():
    """measure(...) of one configuration, each read once per session (not run: repeats=0)."""
    seen = {}

    def get(shape, layout, phase, weights="f32"):
        key = (shape, layout, phase, weights)
        if key not in seen:
            seen[key] = measure(CFG, ti.make_mesh(shape), layout, phase=phase,
                                batch=shape[0] * shape[1] * shape[2],
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
    assert q.memory_bytes == pytest.approx(p.memory_bytes, rel=0.10)


@pytest.mark.slow
@pytest.mark.parametrize("shape, layout, phase", CONFIGS + LOOPED,
                         ids=[f"{'x'.join(map(str, s))}-{l}-{ph}" for s, l, ph in CONFIGS + LOOPED])
def test_measured_step_matches_prediction(measured, shape, layout, phase):
    assert_matches_prediction(measured(shape, layout, phase))


@pytest.mark.parametrize("weights, layout", [
    ("bf16", ti.Layout("ws2d", "batch")),  # bf16 activations: XLA:CPU moves them as f32
    ("int8", ti.Layout("wg-x", "heads")),  # int8 matrices gathered as s8, their bf16 scales too
], ids=str)
def test_weight_formats_match_prediction(measured, weights, layout):
    m = measured((2, 2, 2), layout, "decode", weights)
    assert_matches_prediction(m)
    assert "runs bf16 collectives in f32" in " ".join(m.notes)
    if weights == "int8":  # the weights themselves cross the wire in int8
        assert any(x.kind == "all-gather" and x.dtype == "s8" for x in m.measured.collectives)
    assert m.terms.stored_weight_bytes == m.measured.weight_bytes_per_device


@pytest.mark.slow
def test_full_mesh_decode_in_numbers(measured):
    """2D weight-stationary decode, attention by batch, on 4x8x8 (per device, f32): written
    out from ws2d.py's formulas with B=256, L=1, E=256, F=1024, H=256, D=8, two layers."""
    m = measured((4, 8, 8), ti.Layout("ws2d", "batch"), "decode")
    got = {(x.kind, "".join(x.axes), x.bytes): x.count for x in m.measured.collectives}
    assert got == {
        ("all-gather", "yz", 256 * 64 * 4): 2,  # 1. BLE_xyz -> BLE_x
        # 3. gate, up and q, with X=4 copies of the norm's sum of squares and K, V
        ("reduce-scatter", "x", 256 * ((2 * 1024 + 2048) // 64 + 4 * (1 + 2 * 8)) * 4): 2,
        ("all-to-all", "xyz", 256 * 256 * 8 // 256 * 4): 4,  # Q to batch, O back, per layer
        ("all-gather", "x", 256 * (1024 + 2048) // 64 * 4): 2,  # 5. act and o
        ("reduce-scatter", "yz", 256 * 64 * 4): 2,  # 7. BLE_x -> BLE_xyz
        ("all-reduce", "xyz", 256 * 4): 1,  # final norm's sum of squares
        ("reduce-scatter", "xyz", 256 * 512 * 4): 1,  # output projection, last position
    }


def test_second_measure_reuses_the_compiled_step(measured):
    shape, layout = (2, 2, 2), ti.Layout("ws2d", "heads")
    measured(shape, layout, "decode")  # compiled (or already compiled) here
    compiled = len(engine._COMPILED)
    again = measure(CFG, ti.make_mesh(shape), layout, phase="decode", batch=8,
                    context=CACHE_LEN, repeats=2)
    assert again.compile_s == 0.0 and len(engine._COMPILED) == compiled
    # and it was timed: one warm-up, then the median of the runs, each blocking
    assert len(again.step_times_s) == 2 and all(t > 0 for t in again.step_times_s)
    assert again.measured.time_s == statistics.median(again.step_times_s)


def test_bad_input_gets_the_engines_errors():
    mesh = ti.make_mesh((2, 2, 2))
    with pytest.raises(ValueError, match=r"batch B=4 cannot be split over .*=8 chips"):
        measure(CFG, mesh, ti.Layout("ws2d", "batch"), phase="decode", batch=4)
    with pytest.raises(ValueError, match=r"E=256 does not divide by X·Y·Z=3"):
        measure(CFG, (3, 1, 1), ti.Layout("ws1d", "heads"), batch=3)
    with pytest.raises(ValueError, match="unknown phase 'generate'"):
        measure(CFG, mesh, ti.Layout(), phase="generate", batch=8)
    with pytest.raises(ValueError, match="a decode step processes 1 token"):
        measure(CFG, mesh, ti.Layout(), phase="decode", batch=8, tokens=4)
    with pytest.raises(ValueError, match="unknown weight format 'fp8'"):
        measure(CFG, mesh, ti.Layout(), batch=8, weights="fp8")


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
                 "--batch", "4", "--json"]) == 2
    assert "batch B=4 cannot be split" in json.loads(capsys.readouterr().out)["error"]


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
HLO = """HloModule jit_step, entry_computation_layout={(f32[4,8]{1,0})->f32[16,8]{1,0}}

%add (a: f32[], b: f32[]) -> f32[] {
  %a = f32[] parameter(0)
  %b = f32[] parameter(1)
  ROOT %sum = f32[] add(%a, %b)
}

%wrapped_reduce_scatter (param.0: f32[8,8]) -> f32[2,8] {
  %param.0 = f32[8,8]{1,0} parameter(0)
  ROOT %rs = f32[2,8]{1,0} reduce-scatter(%param.0), channel_id=3, replica_groups=[2,4]<=[8], use_global_device_ids=true, dimensions={0}, to_apply=%add
}

%fused_dot (p0: f32[4,8], p1: f32[8,8]) -> f32[4,8] {
  %p0 = f32[4,8]{1,0} parameter(0)
  %p1 = f32[8,8]{1,0} parameter(1)
  ROOT %dot.1 = f32[4,8]{1,0} dot(%p0, %p1), lhs_contracting_dims={1}, rhs_contracting_dims={0}, metadata={op_name="jit(step)/BLE,EF->BLF/dot_general"}
}

%fused_scores (q0: f32[4,8], q1: f32[4,8]) -> f32[4,1,1] {
  %q0 = f32[4,8]{1,0} parameter(0)
  %q1 = f32[4,8]{1,0} parameter(1)
  %b0 = f32[4,1,8]{2,1,0} bitcast(%q0)
  %b1 = f32[4,1,8]{2,1,0} bitcast(%q1)
  ROOT %dot.2 = f32[4,1,1]{2,1,0} dot(%b0, %b1), lhs_batch_dims={0}, lhs_contracting_dims={2}, rhs_batch_dims={0}, rhs_contracting_dims={2}
}

ENTRY %main (x: f32[4,8], w: bf16[8,8]) -> f32[16,8] {
  %x = f32[4,8]{1,0} parameter(0)
  %w = bf16[8,8]{1,0} parameter(1)
  %ag-start = (f32[4,8]{1,0}, f32[16,8]{1,0}) all-gather-start(%x), channel_id=1, replica_groups=[2,4]<=[8], dimensions={0}, use_global_device_ids=true
  %ag-done = f32[16,8]{1,0} all-gather-done(%ag-start)
  %ar-start = f32[4,8]{1,0} all-reduce-start(%x), channel_id=2, replica_groups=[4,2]<=[2,4]T(1,0), use_global_device_ids=true, to_apply=%add
  %ar-done = f32[4,8]{1,0} all-reduce-done(%ar-start)
  %a2a = (f32[2,8]{1,0}, f32[2,8]{1,0}) all-to-all(%x, %ar-done), channel_id=4, replica_groups={{0,1},{2,3},{4,5},{6,7}}
  %cp = f32[4,8]{1,0} collective-permute(%x), channel_id=5, source_target_pairs={{0,1},{1,2},{2,3},{3,0},{4,5},{5,6},{6,7},{7,4}}
  %w32 = f32[8,8]{1,0} convert(%w)
  %wt = f32[8,8]{0,1} transpose(%w32), dimensions={1,0}
  %rs-start = ((f32[8,8]{1,0}), f32[2,8]{1,0}) async-start(%wt), calls=%wrapped_reduce_scatter
  %rs-done = f32[2,8]{1,0} async-done(%rs-start)
  %f = f32[4,8]{1,0} fusion(%ar-done, %wt), kind=kOutput, calls=%fused_dot
  %g = f32[4,1,1]{2,1,0} fusion(%f, %ar-done), kind=kOutput, calls=%fused_scores
  ROOT %out = f32[16,8]{1,0} copy(%ag-done)
}
"""


def test_hlo_collectives_every_form():
    """Async pairs once, an async-wrapped collective, a combined all-to-all, iota groups
    (transposed too) and permute pairs; bytes under the terms.py convention."""
    got = {c.name: (c.kind, c.groups, c.bytes) for c in hlo.collectives(hlo.parse(HLO), 8)}
    assert got == {
        "ag-start": ("all-gather", ((0, 1, 2, 3), (4, 5, 6, 7)), 4 * 8 * 4 * 4),  # its output
        "ar-start": ("all-reduce", ((0, 4), (1, 5), (2, 6), (3, 7)), 4 * 8 * 4),
        "a2a": ("all-to-all", ((0, 1), (2, 3), (4, 5), (6, 7)), 2 * 4 * 8 * 4),  # both operands
        "cp": ("collective-permute", ((0, 1, 2, 3), (4, 5, 6, 7)), 4 * 8 * 4),
        "rs": ("reduce-scatter", ((0, 1, 2, 3), (4, 5, 6, 7)), 8 * 8 * 4),  # its input
    }


def test_hlo_matmuls_tell_weights_from_attention():
    """A dot reading a step argument through casts and transposes is a weight matmul; a dot
    of two computed tensors (attention's scores) is not."""
    got = {m.name: (m.flops, m.reads_argument, m.einsum) for m in hlo.matmuls(hlo.parse(HLO))}
    assert got == {"dot.1": (2 * 4 * 8 * 8, True, "BLE,EF->BLF"), "dot.2": (2 * 4 * 8, False, "")}


def test_groups_map_to_mesh_axes():
    shape = (2, 2, 2)  # device id = 4x + 2y + z
    assert group_axes(((0, 4), (1, 5), (2, 6), (3, 7)), shape) == ("x",)
    assert group_axes(((0, 1, 2, 3), (4, 5, 6, 7)), shape) == ("y", "z")
    assert group_axes((tuple(range(8)),), shape) == ("x", "y", "z")
