"""The cost model's hardware side: profiles, meshes, links, collective times, step rules.

Collective times are checked against hand-worked examples written out here (TPU v4: 45 GB/s
per link per direction, 1 µs per hop; Pope et al. 2022, arXiv 2211.05102, Section 4). A group
over several axes runs axis by axis: on the 4x4x4 cube every axis is a ring of 4 with 90 GB/s
(both directions of both links), and an all-gather over y then z moves V/4·3/4 then V·3/4 at
90 GB/s: V·15/16 at 90 GB/s in all. The slices themselves are tests/test_slices.py's.
"""
import math

import pytest

from tpuinfer import hardware as hwm
from tpuinfer.config import MODELS
from tpuinfer.cost import collective_time, combine, cost_per_token, estimate, mfu
from tpuinfer.hardware import get_hardware, group_links, mesh_shapes, wraps
from tpuinfer.layouts import Layout
from tpuinfer.terms import Collective, StepTerms

V4 = get_hardware("tpu-v4")


# ---- profiles -------------------------------------------------------------------------------
def test_every_profile_has_the_datasheet_figures():
    for name in ("tpu-v4", "tpu-v4-calibrated", "tpu-v5e", "tpu-v5p", "a100-80g", "h100-sxm"):
        hw = get_hardware(name)
        assert hw.peak_flops > 1e14 and hw.hbm_bytes > 1e10 and hw.hbm_bandwidth > 5e11
    assert (V4.peak_flops, V4.hbm_bandwidth, V4.link_bandwidth) == (275e12, 1.2e12, 4.5e10)
    assert V4.hbm_bytes == 32 * 2**30
    # 6 links of 45 GB/s each way: 270 GB/s out of each chip in all (the paper's Section 4),
    # 90 GB/s on each axis of the cube
    assert sum(group_links(V4, (4, 4, 4), a).bandwidth for a in "xyz") == 270e9


@pytest.mark.parametrize("calibrated,datasheet", [
    ("tpu-v4-calibrated", "tpu-v4"), ("tpu-v5e-calibrated", "tpu-v5e"),
    ("h100-calibrated", "h100-sxm")])
def test_calibrated_profile_is_the_same_chip_with_at_most_three_fitted_constants(calibrated,
                                                                                  datasheet):
    cal, chip = get_hardware(calibrated), get_hardware(datasheet)
    fittable = ("flops_efficiency", "hbm_efficiency", "link_efficiency", "hop_latency_s",
                "collective_overhead_s")
    for f in vars(chip):
        if f not in fittable + ("name", "description"):
            assert getattr(cal, f) == getattr(chip, f), f
    changed = [f for f in fittable if getattr(cal, f) != getattr(chip, f)]
    assert 1 <= len(changed) <= 3
    assert cal.layer_overhead_s == 0 and cal.rule == "overlap"  # no fixed cost per layer
    assert all(0 < getattr(cal, f) <= 1 for f in fittable[:3])


def test_unknown_hardware_names_the_choices():
    with pytest.raises(ValueError, match="unknown hardware 'tpu-v9'.*tpu-v4.*h100-sxm"):
        get_hardware("tpu-v9")


def test_host_profile_missing_says_run_calibrate(tmp_path, monkeypatch):
    monkeypatch.setenv("TPUINFER_CACHE", str(tmp_path))
    with pytest.raises(ValueError, match="run `tpuinfer calibrate`"):
        get_hardware("host")


def test_host_profile_round_trips_through_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TPUINFER_CACHE", str(tmp_path))
    measured = V4.replace(name="whatever", interconnect="switch", node_size=256,
                          link_bandwidth=3e9, peak_flops=1e11)
    path = hwm.save_host_profile(measured)
    assert path == tmp_path / "host.json"
    host = get_hardware("host")
    assert host.name == "host" and host.peak_flops == 1e11 and host.node_size == 256
    path.write_text("{not json")
    with pytest.raises(ValueError, match="calibrate"):
        get_hardware("host")


# ---- meshes ---------------------------------------------------------------------------------
def test_tpu_v4_meshes_are_every_placement_on_the_cube():
    """64 chips of TPU v4 are the 4x4x4 cube: a logical mesh gives each logical axis whole
    physical axes of 4, or splits one into 2 x 2, so every (2^a, 2^b, 2^c) with a+b+c = 6."""
    shapes = mesh_shapes(V4, 64)
    assert len(shapes) == 28
    for n, m in hwm.PAPER_MESHES.items():
        assert m in mesh_shapes(V4, n)
    assert all(math.prod(s) == 64 for s in shapes)


@pytest.mark.parametrize("hw,chips,match", [
    ("tpu-v4", 12, "tpu-v4 has no mesh of 12 chips.*power-of-two.*try 8 or 16"),
    ("tpu-v4", 2, "tpu-v4 has no mesh of 2 chips.*try 4 chips"),
    ("tpu-v4", 8192, "4096 chips at most; try 4096 chips"),
    ("tpu-v5e", 512, "2D slices of 1x1, 2x2, 2x4.*16x16"),
    ("tpu-v5e", 2, "no mesh of 2 chips.*try 1 or 4"),
    ("h100-sxm", 12, "whole nodes.*try 8 or 16"),
])
def test_chip_counts_no_mesh_allows_are_refused(hw, chips, match):
    with pytest.raises(ValueError, match=match):
        mesh_shapes(hw, chips)


def test_gpus_take_any_count_within_a_node_and_whole_nodes_beyond():
    assert (3, 2, 1) in mesh_shapes("a100-80g", 6)
    assert len(mesh_shapes("h100-sxm", 16)) == 15  # every ordered factorisation of 16


# ---- links and collective times: hand-worked ------------------------------------------------
def test_links_of_a_torus_axis_a_line_and_a_gpu_node():
    ring = group_links(V4, (4, 4, 4), ("x",))  # 4 chips with wraparound: both directions
    assert (ring.bandwidth, ring.steps, ring.a2a_distance) == (90e9, 2, 1.0)
    line = group_links(V4, (2, 2, 2), ("x",))  # 2 chips, no wraparound: one link
    assert (line.bandwidth, line.steps, line.a2a_distance) == (45e9, 1, 0.5)
    # the same 4 chips on a 2x4x4 slice (no whole cube): a line, its middle link the bottleneck
    open_ = group_links(V4, (2, 4, 4), ("y",))
    assert (open_.bandwidth, open_.steps) == (2 * 45e9 * 3 / 4, 3)
    yz = group_links(V4, (4, 4, 4), ("y", "z"))  # axis by axis: see the module docstring
    assert (yz.bandwidth, yz.steps) == (pytest.approx(90e9), 4)
    h100 = get_hardware("h100-sxm")
    inside = group_links(h100, (1, 2, 8), ("z",))  # GPUs 0-7: one NVLink node
    across = group_links(h100, (1, 2, 8), ("y",))  # GPUs 0 and 8: two nodes
    assert (inside.bandwidth, inside.steps) == (450e9, 7)
    assert (across.bandwidth, across.step_latency_s) == (50e9, 5e-6)


@pytest.mark.parametrize("shape,ring", [
    ((2, 2, 4), False), ((2, 4, 4), False), ((4, 4, 2), False), ((4, 4, 4), True),
    ((4, 4, 8), True), ((8, 8, 8), True), ((4, 8, 8), True), ((2, 2, 1), False)])
def test_tpu_v4_wraps_only_slices_made_of_whole_4x4x4_cubes(shape, ring):
    """TPU v4's optical switches close the axes of a slice built of 4x4x4 cubes into rings;
    any smaller slice is a mesh of lines (Jouppi et al., ISCA 2023, Section 2)."""
    assert wraps(V4, shape) is ring
    sides = [s for s in shape if s > 1]
    link = group_links(V4, shape, "xyz")
    expected_steps = sum(s // 2 if ring else s - 1 for s in sides)
    assert link.steps == expected_steps


@pytest.mark.parametrize("coll,expected_bw,expected_lat", [
    # all-gather BLE_xyz -> BLE_x over yz (K=16): 1.6 MB·15/16 / 90 GB/s; 2+2 ring steps
    (Collective("all-gather", ("y", "z"), 16, 1.6e6), 1.6e6 * 15 / 16 / 90e9, 4e-6),
    # reduce-scatter over x (ring of 4): 1.2 MB·3/4 / 90 GB/s = 10 µs; 2 steps
    (Collective("reduce-scatter", ("x",), 4, 1.2e6), 10e-6, 2e-6),
    # all-reduce = reduce-scatter + all-gather: twice both
    (Collective("all-reduce", ("x",), 4, 1.2e6), 20e-6, 4e-6),
    # all-to-all over xyz, axis by axis: mean distance 1 hop on each ring at 90 GB/s:
    # 2.7e5·(1+1+1)/90e9; 6 steps
    (Collective("all-to-all", ("x", "y", "z"), 64, 2.7e5), 9e-6, 6e-6),
    # collective-permute: V over one link one way (45 GB/s), one hop
    (Collective("collective-permute", ("x",), 4, 9e5), 20e-6, 1e-6),
])
def test_collective_time_matches_hand_worked(coll, expected_bw, expected_lat):
    t = collective_time(coll, V4, (4, 4, 4))
    assert t.bandwidth_s == pytest.approx(expected_bw)
    assert t.latency_s == pytest.approx(expected_lat)
    assert t.total_s == pytest.approx(expected_bw + expected_lat)


def test_bidirectional_ring_halves_the_transfer_and_keeps_the_hops():
    """Looped CollectiveEinsum round a ring of 4: 3 permutes of V one way, against 6 of V/2,
    two at a time on the two directions of the links (the paper's Section 3.5)."""
    v = 9e5
    one_way = collective_time(Collective("collective-permute", ("x",), 4, v, 3), V4, (4, 4, 4))
    both = collective_time(Collective("collective-permute", ("x",), 4, v / 2, 6, concurrent=2),
                           V4, (4, 4, 4))
    assert one_way.total_s == pytest.approx(3 * (v / 45e9 + 1e-6))
    assert both.total_s == pytest.approx(3 * (v / 2 / 45e9 + 1e-6))


def test_all_to_all_on_a_ring_is_about_a_quarter_of_an_all_gather():
    # Section 3.1: all-to-all on a bidirectional ring ≈ ¼ of an all-gather of the same tensor
    # (all K shards, K·V bytes); exactly V·K/4/W here, against ¼·K·V·(K−1)/K / W.
    v, k = 1e6, 8
    a2a = collective_time(Collective("all-to-all", ("z",), k, v), V4, (4, 4, k))  # a ring
    ag = collective_time(Collective("all-gather", ("z",), k, k * v), V4, (4, 4, k))
    assert a2a.bandwidth_s == pytest.approx(ag.bandwidth_s / 4 * k / (k - 1))


def test_collective_group_must_match_the_mesh():
    with pytest.raises(ValueError, match="says 8 chips"):
        collective_time(Collective("all-gather", ("x",), 8, 1e6), V4, (4, 4, 4))


# ---- step rules, MFU, memory --------------------------------------------------------------
def _terms(**kw):
    base = dict(flops=2.75e12, attention_flops=0.0, weight_bytes=6e9, kv_bytes=6e9,
                stored_weight_bytes=10e9, stored_kv_bytes=6e9, activation_bytes=1e9,
                collectives=(Collective("all-gather", ("y", "z"), 16, 1.6e6, count=100),
                             Collective("all-reduce", ("x",), 4, 1.2e6, count=10)))
    base.update(kw)
    return StepTerms(**base)


def test_step_time_under_each_rule_hand_worked():
    kw = dict(batch=8, tokens=1, context=128, hardware=V4, terms=_terms())
    s = estimate(MODELS["tiny"], Layout(), (4, 4, 4), rule="sum", **kw)
    # compute 2.75e12 / 275e12 = 10 ms; weights and KV 6e9 / 1.2e12 = 5 ms each
    assert (s.compute_s, s.weights_s, s.kv_s) == pytest.approx((10e-3, 5e-3, 5e-3))
    ag = 100 * (1.6e6 * 15 / 16 / 90e9 + 4e-6)  # 2.0667 ms
    ar = 10 * (20e-6 + 4e-6)  # 0.24 ms
    assert s.comm_s == pytest.approx(ag + ar)
    assert s.step_s == pytest.approx(20e-3 + ag + ar)
    o = estimate(MODELS["tiny"], Layout(), (4, 4, 4), rule="overlap", **kw)
    # HBM streams beside the matrix units: max(10, 10) ms; plain collectives are all exposed
    assert o.hidden_s == 0
    assert o.step_s == pytest.approx(10e-3 + ag + ar)
    assert combine("overlap", 1.0, 2.0, 3.0, 0.5) == 4.5
    with pytest.raises(ValueError, match="unknown rule"):
        combine("max", 1, 1, 1, 1)


def test_a_looped_ring_hides_each_round_up_to_its_partial_matmul():
    """Two rings of 15 rounds round yz (16 chips), 90 kB a round: 2 µs transfer + 1 µs hop in
    flight. Beside the first, partial matmuls of 2.75e9 FLOPs (10 µs): each round hides
    whole. Beside the second, partial matmuls reading 1.2 MB of weights (1 µs): 2 µs of each
    round stays exposed. A fixed launch overhead never hides."""
    def ring(flops, nbytes):
        return Collective("collective-permute", ("y", "z"), 16, 9e4, 15, beside_flops=flops,
                          beside_bytes=nbytes)
    terms = _terms(collectives=(ring(2.75e9, 0), ring(0, 1.2e6)))
    kw = dict(batch=8, tokens=1, context=128, terms=terms, rule="overlap")
    e = estimate(MODELS["tiny"], Layout(), (4, 4, 4), hardware=V4, **kw)
    assert e.comm_s == pytest.approx(2 * 15 * 3e-6)
    assert e.hidden_s == pytest.approx(15 * 3e-6 + 15 * 1e-6)
    assert e.step_s == pytest.approx(10e-3 + 15 * 2e-6)
    launch = estimate(MODELS["tiny"], Layout(), (4, 4, 4),
                      hardware=V4.replace(collective_overhead_s=5e-6), **kw)
    assert launch.hidden_s == pytest.approx(e.hidden_s)
    assert launch.step_s == pytest.approx(e.step_s + 30 * 5e-6)
    nothing = estimate(MODELS["tiny"], Layout(), (4, 4, 4), hardware=V4, **kw | {"rule": "sum"})
    assert nothing.step_s == pytest.approx(20e-3 + e.comm_s)


@pytest.mark.parametrize("phase,batch,weights,speedup", [
    ("decode", 64, "int8", 0.149),  # 15.3 -> 13.1 ms a step, both on 4x1x16
    ("prefill", 1, "int8", 0.236),  # 255 -> 195 ms (plain on 4x1x16, looped on 2x1x32)
])
def test_looped_2d_weight_stationary_beats_plain_on_tpu_v4(phase, batch, weights, speedup):
    """PaLM 540B on 64 TPU v4 chips (Table 2's low-latency columns): the looped schedule hides
    the all-gather and reduce-scatter round yz behind the matmuls; the plain one cannot."""
    from tpuinfer.planner import plan
    req = (dict(input_len=2048, history_len=0, gen_len=0) if phase == "prefill"
           else dict(input_len=0, history_len=2048, gen_len=64))

    def best(looped):
        p = plan("palm-540b", "tpu-v4", 64, batch, weights=weights, ffn="ws2d",
                 attention="heads" if phase == "prefill" else "batch", looped=looped, **req)
        return (p.prefill or p.decode).best
    plain, looped = best("no"), best("yes")
    assert looped.layout.looped and not plain.layout.looped
    assert 1 - looped.latency_s / plain.latency_s == pytest.approx(speedup, abs=0.01)


def test_padded_heads_are_priced_and_mfu_counts_the_models_own():
    """PaLM 540B's 48 heads padded to 64 for 2D weight-stationary on 64 chips (Section 4.4):
    16 more heads of W_q and W_o per layer, 2·16·256·18432 parameters, about 18B in all."""
    from tpuinfer.layouts.registry import pad_heads
    from tpuinfer.planner import phase_estimate
    cfg = MODELS["palm-540b"]
    padded = pad_heads(cfg, Layout("ws2d", "batch"), (4, 4, 4))
    assert (padded.H, padded.K) == (64, 1)
    assert padded.matmul_params() - cfg.matmul_params() == 118 * 2 * 16 * 256 * 18432
    assert pad_heads(cfg, Layout("wg-x", "batch"), (4, 4, 4)) is cfg  # 48 divides by y·z
    kw = dict(batch=64, input_len=0, history_len=2048, gen_len=4, weights="int8")
    p = phase_estimate(cfg, Layout("ws2d", "batch"), (4, 4, 4), "decode", pad=True, **kw)
    same = phase_estimate(MODELS["palm-540b-64heads"], Layout("ws2d", "batch"), (4, 4, 4),
                          "decode", **kw)
    assert p.padded_heads == 64 and same.padded_heads is None
    assert p.latency_s == same.latency_s and p.memory_per_chip_bytes == same.memory_per_chip_bytes
    assert p.mfu == same.mfu  # both count the paper's N = 540e9
    with pytest.raises(ValueError, match="H=48 does not divide by X·Y·Z=64"):
        phase_estimate(cfg, Layout("ws2d", "batch"), (4, 4, 4), "decode", **kw)


def test_efficiencies_and_collective_overhead_apply():
    slow = V4.replace(flops_efficiency=0.5, hbm_efficiency=0.25, collective_overhead_s=1e-5,
                      link_efficiency=0.5, hop_latency_s=2e-6)
    e = estimate(MODELS["tiny"], Layout(), (4, 4, 4), batch=8, tokens=1, context=128,
                 hardware=slow, rule="sum", terms=_terms())
    assert (e.compute_s, e.weights_s) == pytest.approx((20e-3, 20e-3))
    # the links at half their rate, 2 µs a hop: the bytes' time doubles, the hops' too
    assert e.comm_s == pytest.approx(100 * (2 * 1.6e6 * 15 / 16 / 90e9 + 8e-6 + 1e-5)
                                     + 10 * (40e-6 + 8e-6 + 1e-5))


def test_memory_per_chip_and_fits():
    e = estimate(MODELS["tiny"], Layout(), (4, 4, 4), batch=8, tokens=1, context=128,
                 hardware=V4, terms=_terms())
    assert e.memory_per_chip_bytes == 17e9 and e.fits
    big = estimate(MODELS["tiny"], Layout(), (4, 4, 4), batch=8, tokens=1, context=128,
                   hardware=V4, terms=_terms(stored_kv_bytes=30e9))
    assert not big.fits


def test_mfu_and_cost_follow_papers_definitions():
    cfg = MODELS["palm-540b"]  # MFU uses the paper's N = 540e9
    # Table 2 high-throughput prefill: 512·2048 tokens, 64 chips, 85.2 s -> 76%
    assert mfu(cfg, 512 * 2048, 64, V4, 85.2) == pytest.approx(0.755, abs=1e-3)
    assert cost_per_token(64, 1.82, 64 * 64) == pytest.approx(64 * 1.82 / 4096)


def test_matmul_shape_terms_follow_the_partition_specs_hand_worked():
    """`activation_traffic_bytes`: what each weight matmul reads and writes per row (a local
    [k, n] weight: k in, n out), over the chip's rows. tiny (E 256, F 1024, H 256, D 8, K 1,
    V 512) as ws1d on 4x8x8, batch 256 x 8 tokens in f32: 2048 rows through W_q, W_k, W_v
    ([256, 8] local each: 264), W_o ([8, 256]: 264), W_gate and W_up ([256, 4]: 260) and W_down
    ([4, 256]: 260), two layers; the output projection's [512, 1] slice of the table for the
    256 last positions (513). `multirow_weight_bytes`: the weights read by matmuls of more
    than one row."""
    from tpuinfer.layouts import step_terms
    cfg = MODELS["tiny"]
    t = step_terms(cfg, Layout("ws1d", "heads"), (4, 8, 8), batch=256, tokens=8, context=8,
                   weights="f32", act_bytes=4)
    per_row = 2 * (4 * 264 + 3 * 260)
    assert t.activation_traffic_bytes == (2048 * per_row + 256 * 513) * 4
    assert t.multirow_weight_bytes == t.weight_bytes  # every matmul has 2048 or 256 rows
    # wg-xyz splits the batch over all 8 chips of 2x2x2: a decode step at batch 8 gives each
    # one sequence, one row: every weight is read by a matrix-vector product
    one_row = step_terms(cfg, Layout("wg-xyz", "batch"), (2, 2, 2), batch=8, tokens=1,
                         context=16, weights="f32", act_bytes=4)
    assert one_row.multirow_weight_bytes == 0.0 < one_row.weight_bytes
    # gathered weights are copied into place unless only their first dimension was split:
    # wg-xyz on 2x2x2 copies W_q, W_o ([256, 2048], [2048, 256]) and the three FFN matrices
    # (256 x 1024 each), not the one-head W_k and W_v; wg-x copies only those it splits over
    # x on the second dimension (W_o, W_down: [512, 256] and [256, 256] once gathered)
    assert one_row.relayout_bytes == 2 * (2 * 256 * 2048 + 3 * 256 * 1024) * 4
    wg_x = step_terms(cfg, Layout("wg-x", "batch"), (2, 2, 2), batch=8, tokens=1,
                      context=16, weights="f32", act_bytes=4)
    assert wg_x.relayout_bytes == 2 * (512 * 256 + 256 * 256) * 4
    looped = step_terms(cfg, Layout("wg-xyz", "batch", looped=True), (2, 2, 2), batch=8,
                        tokens=1, context=16, weights="f32", act_bytes=4)
    assert t.relayout_bytes == looped.relayout_bytes == 0.0  # nothing gathered in place
    # the chip profiles leave both out, as the paper's model does
    e = estimate(cfg, Layout("ws1d", "heads"), (4, 8, 8), batch=256, tokens=8, context=8,
                 hardware=V4, terms=t)
    assert e.activations_s == 0.0 and e.weights_s == pytest.approx(t.weight_bytes / 1.2e12)


@pytest.mark.parametrize("layout, mesh", [(Layout("ws2d", "heads"), (2, 2, 2)),
                                          (Layout("wg-xy", "batch"), (1, 4, 2)),
                                          (Layout("ws1d", "batch"), (4, 8, 8))])
def test_attention_scores_are_one_f32_per_query_head_and_cached_position(layout, mesh):
    """`score_bytes`: each chip's f32 scores for the (sequences, heads) its attention holds,
    every layer, whatever the layout: over the mesh, 4·layers·B·H·tokens·context. tiny's
    prefill of 64 x 32 tokens against 32 positions: 2·64·256·32·32 scores, 128 MiB. Each chip's
    scores are its attention FLOPs over 4·D (QK^T and PV, 2 FLOPs each per score and
    dimension). Only a profile with `score_bandwidth` prices them, as activations."""
    from tpuinfer.layouts import step_terms
    cfg, chips = MODELS["tiny"], math.prod(mesh)
    t = step_terms(cfg, layout, mesh, batch=64, tokens=32, context=32, weights="f32",
                   act_bytes=4)
    assert t.score_bytes * chips == 4 * 2 * 64 * 256 * 32 * 32 == 128 * 2**20
    assert t.score_bytes == t.attention_flops / cfg.D
    assert estimate(cfg, layout, mesh, batch=64, tokens=32, context=32, hardware=V4,
                    terms=t).activations_s == 0.0
