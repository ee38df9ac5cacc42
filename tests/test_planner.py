"""The planner against the paper (Pope et al. 2022, arXiv 2211.05102): Table 2's choices and
latencies, the derived facts of Sections 3.2-3.3 computed from the layouts' own terms, memory,
phases, the Pareto frontier, maximum context.
"""
import math

import pytest

from tpuinfer.config import MODELS, ModelConfig
from tpuinfer.cost import estimate
from tpuinfer.hardware import get_hardware, mesh_shapes
from tpuinfer.layouts import Layout, step_terms
from tpuinfer.paper import SCENARIOS, TABLE1, TABLE2, as_run, paper, serial_slowdown, table2
from tpuinfer.planner import (kv_bytes_per_chip, max_context, pareto,
                               phase_estimate, plan)

PALM = "palm-540b-64heads"  # 64 heads: attention by heads splits over 64 chips (Section 4.4)

# Table 2 (PaLM 540B, 64 TPU v4 chips): batch, weights, layouts, measured latency.
COLUMNS = {
    "low-latency prefill": (1, "int8", "ws2d/heads", 0.29),
    "low-latency decode": (64, "int8", "ws2d/batch", 1.82),
    "high-throughput prefill": (512, "bf16", "wg-xyz/batch", 85.2),
    "high-throughput decode": (512, "bf16", "ws2d/batch", 6.0),
}
PROFILES = ("tpu-v4", "tpu-v4-calibrated")


def _col(name):
    return next(c for c in TABLE2 if c.name == name)


def _chosen(name, hw):
    """The planner's choice for a Table 2 column (`palm-540b`, auto layouts)."""
    p = _col(name).plan(hw)
    return (p.prefill or p.decode).best


# ---- Table 2 --------------------------------------------------------------------------------
def test_table2_is_written_once_and_matches_the_paper():
    assert {c.name: (c.batch, c.weights, f"{c.ffn}/{c.attention}", c.latency_s)
            for c in TABLE2} == COLUMNS


@pytest.mark.parametrize("hw", PROFILES)
@pytest.mark.parametrize("name", list(COLUMNS))
def test_planner_chooses_the_papers_layouts_for_palm_540b_as_typed(name, hw):
    # `palm-540b` has 48 heads: the planner pads them to 64 where a layout needs it
    p = plan("palm-540b", hw, 64, COLUMNS[name][0], weights=COLUMNS[name][1],
             **_col(name).request())
    chosen = (p.prefill or p.decode).best
    assert f"{chosen.layout.ffn}/{chosen.layout.attention}" == COLUMNS[name][2]
    assert chosen.fits


@pytest.mark.parametrize("name", list(COLUMNS))
def test_calibrated_profile_within_15_percent_of_each_column(name):
    assert abs(_chosen(name, "tpu-v4-calibrated").latency_s / COLUMNS[name][3] - 1) < 0.15
    assert abs(as_run(_col(name), "tpu-v4-calibrated").latency_s / COLUMNS[name][3] - 1) < 0.15


@pytest.mark.parametrize("name", list(COLUMNS))
def test_datasheet_profile_predicts_below_the_paper(name):
    # a model that beats the measurement on the datasheet chip is fine (a bound); one that is
    # slower than the hardware measured is wrong
    assert _chosen(name, "tpu-v4").latency_s < COLUMNS[name][3]
    assert as_run(_col(name), "tpu-v4").latency_s < COLUMNS[name][3]


# Checks the fit never saw (Section 4.4, Section 4.3, Figure 6's 1D/2D comparison)
def test_bf16_decode_per_token_at_batch_64_within_10_percent():
    per_token = as_run(_col("low-latency decode"), "tpu-v4-calibrated", "bf16").per_token_s
    assert per_token == pytest.approx(36.9e-3, rel=0.10)


@pytest.mark.parametrize("hw", PROFILES)
def test_serial_block_is_slower_than_the_parallel_one(hw):
    """The paper measured 14% (Section 4.3): a held-out row of the accuracy board, which
    prints the model's number beside it; here only the direction."""
    assert serial_slowdown(hw) > 1


@pytest.mark.parametrize("hw", PROFILES)
def test_2d_faster_than_1d_for_palm_540b_decode_on_64_chips(hw):
    """PaLM 540B int8 decode at batch 64 (Table 2's low-latency decode, arXiv 2211.05102):
    each FFN layout on its best mesh and schedule. On 64 chips 2D moves fewer bytes than 1D
    (the paper's argument: n > 4F/E) and is faster, as the paper chose."""
    def best(ffn):
        return plan("palm-540b", hw, 64, 64, input_len=0, history_len=2048, gen_len=64,
                    weights="int8", ffn=ffn, attention="batch").decode.best
    one, two = best("ws1d"), best("ws2d")
    assert two.latency_s < one.latency_s
    assert two.first.terms.comm_bytes < one.first.terms.comm_bytes


def test_table2_rows_are_per_phase_with_the_error():
    rows = table2()
    assert [r["column"] for r in rows] == list(COLUMNS)
    for r in rows:
        for hw in PROFILES:
            m = r[hw]
            assert m["layout"] == r["paper_layout"]
            assert m["error"] == pytest.approx(m["latency_s"] / r["paper_latency_s"] - 1)
        assert r["tpu-v4"]["latency_s"] < r["paper_latency_s"]


def test_max_context_is_the_papers_table1():
    """Table 1 prints each length rounded to two or three figures."""
    for (variant, batch), printed in TABLE1.items():
        assert max_context("palm-540b", 64, batch, variant) == pytest.approx(printed, rel=0.01)


def test_paper_rows_cover_the_headlines():
    rows = {r["result"]: r for r in paper()}
    assert rows["headline: context, optimized multiquery / multihead, batch 128"][
        "tpu-v4"] == pytest.approx(32, rel=0.01)
    assert rows["decode per token, batch 64, bf16 (2D WS, by batch)"]["paper"] == 36.9e-3
    assert rows["headline: low-batch int8 decode per token"]["tpu-v4_ratio"] < 1


def test_the_papers_whole_requests_are_priced_beside_its_numbers():
    """Section 1's chatbot turn and offline job: the row is the planner's plan of the whole
    request; the datasheet is a bound (faster, higher MFU) on both of the paper's numbers."""
    rows = {r["result"].split(" (")[0]: r for r in paper()
            if r["result"].startswith(tuple(sc.name + " (" for sc in SCENARIOS))}
    assert (rows["chatbot"]["paper"], rows["offline"]["paper"]) == (1.9, 0.73)
    chat = SCENARIOS[0].plan("tpu-v4")
    assert rows["chatbot"]["tpu-v4"] == chat.total_latency_s == pytest.approx(
        chat.prefill.best.latency_s + chat.decode.best.latency_s)
    assert (chat.prefill.best.tokens, chat.decode.best.tokens, chat.decode.best.steps) == (
        64, 64, 64)
    assert chat.history_len == 1920 and chat.weights == "int8"
    assert rows["chatbot"]["tpu-v4"] < 1.9
    offline = SCENARIOS[1].plan("tpu-v4")
    assert rows["offline"]["tpu-v4"] == offline.mfu > 0.73
    assert rows["offline"]["tpu-v4-calibrated_ratio"] == pytest.approx(
        rows["offline"]["tpu-v4-calibrated"] / 0.73)


def test_table2_columns_sit_in_figure_1s_coordinates():
    """A column's point is placed as the planner places its own: latency per generated token
    in decode, the whole phase in prefill, cost over the tokens the planner counts."""
    low_decode = TABLE2[1]
    assert low_decode.frontier_point == pytest.approx((1.82 / 64, 64 * 1.82 / (64 * 64)))
    assert TABLE2[2].frontier_point == pytest.approx((85.2, 64 * 85.2 / (512 * 2048)))
    for col in TABLE2:
        ran = as_run(col, "tpu-v4")
        assert ran.tokens == col.tokens
        measured_cost = col.frontier_point[1]
        assert ran.cost == pytest.approx(measured_cost * ran.latency_s / col.latency_s)


def test_prefill_mfu_is_the_planners_per_layout_and_none_where_it_cannot_run():
    from tpuinfer.sweeps import prefill_mfu
    curves = prefill_mfu("palm-540b", (4, 4, 4), [1, 64, 512], weights="bf16")
    assert curves["tokens"] == [2048, 64 * 2048, 512 * 2048]
    assert curves["mfu"]["wg-xyz"][0] is None  # one sequence cannot split over 64 chips
    best = plan("palm-540b", "tpu-v4", 64, 512, input_len=2048, gen_len=0, ffn="wg-xyz",
                mesh=(4, 4, 4)).prefill.best
    assert curves["mfu"]["wg-xyz"][2] == best.mfu
    assert curves["layouts"]["wg-xyz"][2] == str(best.layout)
    # the paper's Table 2 ordering: XYZ-gathered at 512 sequences beats 2D stationary at one
    assert curves["mfu"]["wg-xyz"][2] > curves["mfu"]["ws2d"][0]


# ---- derived facts, from the layouts' terms -------------------------------------------------
# A plain (non-gated) feed-forward that dominates attention, as Section 3.2's formulas assume:
# F = 4E, 256 heads of width 2 so that every layout splits them over up to 256 chips.
STUDY = ModelConfig("ffn-study", 2, 4096, 16384, 256, 2, 1, 4096, gated_ffn=False)


def per_layer_comm(cfg, layout, mesh, batch, tokens):
    """Bytes per chip one layer communicates: two layers' terms less one layer's."""
    def total(n_layers):
        return step_terms(cfg.replace(n_layers=n_layers), layout, mesh, batch=batch,
                          tokens=tokens, context=tokens).comm_bytes
    return total(2) - total(1)


def test_2d_beats_1d_in_communication_only_past_4F_over_E_chips():
    wins = []
    for n in [2**k for k in range(2, 9)]:  # TPU v4 slices: 4 chips and up
        one_d = per_layer_comm(STUDY, Layout("ws1d"), (n, 1, 1), 1, 8)
        two_d = min(per_layer_comm(STUDY, Layout("ws2d"), m, 1, 8)
                    for m in mesh_shapes("tpu-v4", n))
        if two_d < one_d:
            wins.append(n)
    assert 4 * STUDY.F / STUDY.E == 16
    assert wins == [32, 64, 128, 256]  # every power of two past 16, none up to it


@pytest.mark.parametrize("n,best_x", [(64, 4), (256, 8)])
def test_optimal_x_for_2d_is_sqrt_nE_over_F(n, best_x):
    assert math.sqrt(n * STUDY.E / STUDY.F) == best_x
    comm = {m: per_layer_comm(STUDY, Layout("ws2d"), m, 1, 8) for m in mesh_shapes("tpu-v4", n)}
    least = min(comm.values())
    assert {m[0] for m, v in comm.items() if v == least} == {best_x}


@pytest.mark.parametrize("tokens,best_n", [(64, 4), (1024, 16), (16384, 64)])
def test_optimal_weight_gather_is_sqrt_BLn_over_F(tokens, best_n):
    batch, n = 64, 64
    assert math.sqrt(batch * tokens * n / STUDY.F) == best_n
    gathered_over = {"wg-x": lambda m: m[0], "wg-xy": lambda m: m[0] * m[1],
                     "wg-xyz": lambda m: n}
    comm = {}
    for ffn, chips_gathered in gathered_over.items():
        for m in mesh_shapes("tpu-v4", n):
            comm[(ffn, m)] = (per_layer_comm(STUDY, Layout(ffn), m, batch, tokens),
                              chips_gathered(m))
    least = min(v for v, _ in comm.values())
    assert {g for v, g in comm.values() if v == least} == {best_n}


def test_kv_bytes_per_chip_for_each_attention_layout():
    # PaLM 62B on 16 chips (2x4x2), batch 32, context 1024, bf16 cache (b = 2):
    # multiquery by heads 2·64·256·2·32·1024 = 2 GiB (replicated); by batch 1/16 of it;
    # multihead (32 heads of 128) by heads ⌈32/16⌉ = 2 heads: 2·64·2·128·2·32·1024 = 2 GiB.
    cfg, mesh = MODELS["palm-62b"], (2, 4, 2)
    expected = {"multiquery-heads": 2 * 2**30, "multiquery-batch": 2 * 2**30 // 16,
                "multihead": 2 * 2**30}
    for variant, nbytes in expected.items():
        assert kv_bytes_per_chip(cfg, variant, 16, 32, 1024) == nbytes
    for attention, variant in (("heads", "multiquery-heads"), ("batch", "multiquery-batch")):
        terms = step_terms(cfg, Layout("ws2d", attention), mesh, batch=32, tokens=1,
                           context=1024)
        assert terms.stored_kv_bytes == expected[variant]
    mh = cfg.replace(n_kv_heads=32, d_head=128)
    assert step_terms(mh, Layout("ws2d", "heads"), mesh, batch=32, tokens=1,
                      context=1024).stored_kv_bytes == expected["multihead"]


def test_max_context_per_attention_variant():
    # 30% of 32 GiB = 10307921510 bytes over (per position, per chip):
    # multihead 2·118·⌈48/64⌉·128·2·B, multiquery by heads 2·118·256·2·B, by batch that / 64.
    expected = {("multihead", 128): 1332, ("multihead", 512): 333,
                ("multiquery-heads", 128): 666, ("multiquery-heads", 512): 166,
                ("multiquery-batch", 128): 42653, ("multiquery-batch", 512): 10663}
    for (variant, batch), n in expected.items():
        assert max_context("palm-540b", 64, batch, variant, 0.3) == n
    assert 42653 / 1332 == pytest.approx(32, rel=0.01)  # the paper's "up to 32x longer"
    with pytest.raises(ValueError, match="batch 100 must be a multiple of 64"):
        max_context("palm-540b", 64, 100, "multiquery-batch")
    with pytest.raises(ValueError, match="unknown attention variant"):
        max_context("palm-540b", 64, 128, "grouped")


# ---- phases, memory, errors -----------------------------------------------------------------
@pytest.mark.parametrize("ffn", ["ws1d", "ws2d", "wg-xy"])
@pytest.mark.parametrize("weights", ["bf16", "int8"])
def test_stored_weights_counted_once_per_layer_equal_every_array_held(ffn, weights):
    """step_terms counts one layer's weights n_layers times (every layer is the same); here
    every array `init_params` makes is held chip by chip, from the specs the engine uses."""
    from tpuinfer.layouts import _common as c
    from tpuinfer.layouts.registry import param_specs
    from tpuinfer.shapes import param_shapes
    from tpuinfer.quant import stored_arrays
    cfg, mesh = MODELS["mini"], (2, 2, 4)
    shapes, specs = param_shapes(cfg), param_specs(cfg, Layout(ffn), "bf16")
    pairs = [("embed", shapes["embed"], specs["embed"]),
             ("final_norm", shapes["final_norm"], specs["final_norm"])]
    for layer_shapes, layer_specs in zip(shapes["layers"], specs["layers"]):
        pairs += [(n, layer_shapes[n], layer_specs[n]) for n in layer_shapes]
    held = sum(math.prod(c.local_shape(shape, spec, mesh)) * nbytes
               for name, s, sp in pairs for _, shape, spec, nbytes
               in stored_arrays(name, s, sp, weights))
    terms = step_terms(cfg, Layout(ffn, "batch"), mesh, batch=16, tokens=1, context=8,
                       weights=weights)
    assert terms.stored_weight_bytes == held


@pytest.mark.parametrize("rule", ["sum", "overlap"])
def test_decode_sums_every_step_over_the_growing_context(rule):
    kw = dict(batch=64, weights="int8", hardware="tpu-v4", rule=rule)
    layout, mesh = Layout("ws2d", "heads"), (4, 4, 4)
    p = phase_estimate(PALM, layout, mesh, "decode", input_len=100, history_len=900,
                       gen_len=6, **kw)
    steps = [estimate(PALM, layout, mesh, tokens=1, context=1000 + i, **kw) for i in range(1, 7)]
    assert p.latency_s == pytest.approx(sum(e.step_s for e in steps), rel=1e-12)
    assert p.kv_s == pytest.approx(sum(e.kv_s for e in steps), rel=1e-12)
    assert p.per_token_s == pytest.approx(p.latency_s / 6)
    assert p.memory_per_chip_bytes == steps[-1].memory_per_chip_bytes


def test_decode_sums_every_step_where_compute_and_memory_cross():
    """Under `overlap` a step costs max(compute, memory): here the first steps are
    compute-bound and the later ones, their KV cache grown, memory-bound, and the phase's sum
    (taken in two pieces either side of the crossing) is still the step-by-step sum."""
    kw = dict(batch=512, weights="int8", hardware="tpu-v4", rule="overlap")
    layout, mesh = Layout("ws2d", "heads"), (4, 4, 4)
    p = phase_estimate(PALM, layout, mesh, "decode", input_len=10, history_len=490,
                       gen_len=12, **kw)
    steps = [estimate(PALM, layout, mesh, tokens=1, context=500 + i, **kw) for i in range(1, 13)]
    bound = [e.compute_s > e.weights_s + e.kv_s for e in steps]
    assert bound[0] and not bound[-1]
    assert p.latency_s == pytest.approx(sum(e.step_s for e in steps), rel=1e-12)


def test_auto_never_returns_a_layout_that_does_not_fit():
    p = plan(PALM, "tpu-v4", 64, 512, input_len=0, history_len=2048, gen_len=8)
    assert p.decode.best.fits and p.fits
    assert any("GiB per chip" in r for r in p.decode.rejected)  # by heads replicates the cache
    assert p.prefill is None and p.to_json()["prefill"] is None


def test_plan_explains_with_the_runner_up():
    p = plan(PALM, "tpu-v4", 64, 1, input_len=2048, gen_len=0, weights="int8")
    best, runner = p.prefill.best, p.prefill.runner_up
    assert (runner.layout.ffn, runner.layout.attention) != (best.layout.ffn,
                                                            best.layout.attention)
    assert runner.latency_s >= best.latency_s
    # 5 FFN x 2 attention layouts, plain and looped; the 2 weight-stationary ones also both ways
    assert p.prefill.considered == len(mesh_shapes("tpu-v4", 64)) * (10 * 2 + 2 * 2)
    assert p.mfu == pytest.approx(best.mfu)  # prefill only: the request's MFU is the phase's


@pytest.mark.parametrize("kwargs,match", [
    (dict(model="palm-540b-64heads", chips=8), "nothing fits in memory.*Use more chips"),
    (dict(model="palm-540b-64heads", chips=12), "no mesh of 12 chips"),
    (dict(model="palm-540b-64heads", attention="batch", input_len=0),
     "batch B=1 cannot be split"),
    (dict(model="palm-540b", chips=64, pad=False, ffn="ws2d"),
     "H=48 does not divide.*pad the heads"),
    (dict(model="palm-8b", looped="sometimes"), "looped 'sometimes'"),
    (dict(model="palm-540b-64heads", input_len=0, gen_len=0), "nothing to run"),
    (dict(model="gpt-5"), "unknown model 'gpt-5'"),
    (dict(model="palm-8b", ffn="ws3d"), "unknown ffn layout 'ws3d'"),
])
def test_bad_requests_say_what_is_wrong(kwargs, match):
    args = dict(hardware="tpu-v4", chips=64, batch=1, input_len=128, gen_len=4) | kwargs
    with pytest.raises(ValueError, match=match):
        plan(**args)


def test_pareto_frontier_is_monotone_and_fits(capsys):
    calls = []
    res = pareto("palm-8b", "tpu-v4", chips=[4, 8], batches=[1, 16, 256], input_len=128,
                 gen_len=8, progress=lambda done, total, what: calls.append((done, total)))
    # the library reports through the callback, once per layout on each mesh, and prints nothing
    assert calls == [(i + 1, res["considered"]) for i in range(res["considered"])]
    assert capsys.readouterr() == ("", "")
    for phase in ("prefill", "decode"):
        pts = res[phase]
        assert pts, phase
        lat = [p["latency_s"] for p in pts]
        cost = [p["cost_chip_s_per_token"] for p in pts]
        assert lat == sorted(lat) and cost == sorted(cost, reverse=True)
    # 3 batches x 24 layouts and schedules on every mesh of 4 and of 8 chips
    assert res["considered"] == sum(72 * len(mesh_shapes("tpu-v4", n)) for n in (4, 8))


def test_frontier_ties_do_not_turn_on_the_last_bit():
    """A looped schedule and its bidirectional twin price the same sum in another order
    (PaLM 540B bf16 decode on 2x4x8 at batch 16 differs in the 17th digit): equal points keep
    the first listed, whichever of the two rounds a hair lower."""
    from tpuinfer.planner import frontier
    t = 0.01756216244888889
    for nudge in (1 - 2e-16, 1 + 2e-16):
        pts = [(t, 0.07, "looped"), (t * nudge, 0.07 * nudge, "both ways"), (2 * t, 0.01, "big")]
        assert [p[2] for p in frontier(pts)] == ["looped", "big"]
    # a real improvement, however small in the ninth figure, still counts
    assert [p[2] for p in frontier([(t, 0.07, "a"), (t * 1.001, 0.0699, "b")])] == ["a", "b"]


def test_only_layout_errors_become_reasons(monkeypatch):
    """A layout that cannot split the model on a mesh is a reason the planner records; any
    other exception while pricing is a bug, and propagates."""
    from tpuinfer import phase  # where a phase is priced, step by step (`phase_estimate`)

    def broken(*args, **kwargs):
        raise ValueError("an internal consistency check failed")
    monkeypatch.setattr(phase, "estimate", broken)
    for run in (lambda: plan("palm-8b", "tpu-v4", 8, batch=1, input_len=16, gen_len=0),
                lambda: pareto("palm-8b", "tpu-v4", chips=[8], batches=[1], input_len=16,
                               gen_len=0)):
        with pytest.raises(ValueError) as raised:
            run()
        # the bug itself, not "no configuration runs ... because <the bug>"
        assert type(raised.value) is ValueError and "no configuration" not in str(raised.value)


# ---- what the book's figures and locks draw --------------------------------------------------
def test_theory_gives_the_weight_gathered_crossover_and_2ds_shrinking_communication():
    from tpuinfer import theory
    palm = MODELS["palm-540b"]
    assert theory.wg_crossover_tokens(64, palm.F, 16, 64) == 1_179_648  # 16F: XY against XYZ
    assert theory.wg_crossover_tokens(64, palm.F, 4, 16) == palm.F  # X against XY
    assert theory.ws2d_optimal_comm(64, palm.E, palm.F) / theory.ws2d_optimal_comm(
        256, palm.E, palm.F) == 2.0  # 1/√n: four times the chips, half the bytes
    # at the optimal X the paper's two terms are equal: 2·B·L·2·√(E·F/n)
    x = theory.ws2d_optimal_x(64, palm.E, palm.F)
    assert theory.ws2d_optimal_comm(64, palm.E, palm.F) == 2 * (palm.E / x + palm.F * x / 64)


def test_fastertransformers_table_gives_the_mfu_the_paper_quotes():
    from tpuinfer import paper
    points = paper.fastertransformer()
    assert len(points) == 27 * 3 - 3  # three OOM cells of TP16 left out
    assert "gpt_guide.md" in paper.FT_SOURCE and "Megatron-530B" in paper.FT_SOURCE
    best = {s: max((p for p in points if p.system == s), key=lambda p: p.mfu)
            for s in ("TP16", "TP32", "TP8-PP3")}
    assert round(best["TP16"].mfu, 2) == paper.QUOTED_MFU["FasterTransformer TP16"] == 0.46
    assert (best["TP16"].batch, best["TP16"].input_len, best["TP16"].latency_s) == (64, 128, 4.002)
    assert round(best["TP32"].mfu, 2) == paper.QUOTED_MFU["FasterTransformer TP32"] == 0.33
    assert (best["TP32"].batch, best["TP32"].latency_s) == (256, 11.232)
    assert {p.gpus for p in points} == {16, 24, 32}


def test_against_paper_sets_the_model_beside_the_papers_measurement():
    from tpuinfer import paper
    from tpuinfer.errors import UsageError
    r = paper.against_paper("serial-slowdown", "tpu-v4-calibrated")
    assert r["predicted"] == serial_slowdown("tpu-v4-calibrated") and r["measured"] == 1.14
    assert "tpu-v4-calibrated" in r["predicted_by"] and "overlap" in r["predicted_by"]
    assert "Section 4.3" in r["measured_by"]
    assert paper.against_paper("int8-speedup")["measured"] == pytest.approx(36.9 / 28.5)
    with pytest.raises(UsageError, match="bf16-decode"):
        paper.against_paper("nonsense")


def test_plan_quantity_and_replica_crossover_are_the_planners_own_numbers():
    """What a prediction lock reveals for a configuration nobody measured: the planner's
    number, with nothing measured beside it."""
    from tpuinfer import sweeps
    from tpuinfer.errors import UsageError
    request = dict(input_len=0, history_len=2048, gen_len=1, weights="int8", kv="int8")
    r = sweeps.plan_quantity("llama-3-70b", "tpu-v5e-calibrated", 16, 32, **request)
    best = plan("llama-3-70b", "tpu-v5e-calibrated", 16, 32, **request).decode.best
    assert r["predicted"] == best.per_token_s and r["measured"] is None
    assert "tpu-v5e-calibrated" in r["predicted_by"] and str(best.layout) in r["what"]
    with pytest.raises(UsageError, match="per_token_s"):
        sweeps.plan_quantity("llama-3-70b", "tpu-v5e", 16, 32, quantity="mfu", **request)
    # two replicas of 8 v5e chips against one group of 16: the planner switches between
    # batch 64 and 128, as the public jax-llm-examples steps do (tpuinfer/data/measurements.json)
    batches = [16, 64, 128]
    first = sweeps.replica_crossover("llama-3-70b", "tpu-v5e-calibrated", 16, batches, **request)
    assert first["predicted"] == 128 and first["unit"] == "sequences"
    assert [plan("llama-3-70b", "tpu-v5e-calibrated", 16, b, replicas="auto", **request)
            .decode.best.replicas for b in batches] == [1, 1, 2]
    assert sweeps.replica_crossover("llama-3-70b", "tpu-v5e-calibrated", 16, [16, 64],
                                    **request)["predicted"] is None


def test_ffn_scaling_and_context_latency_are_the_planners_decodes():
    from tpuinfer import kv, sweeps
    scaling = sweeps.ffn_scaling("palm-540b", [64, 128], batch=512)
    for ffn in ("ws1d", "ws2d"):
        for i, n in enumerate((64, 128)):
            best = plan("palm-540b", "tpu-v4", n, 512, input_len=0, history_len=2048,
                        gen_len=64, ffn=ffn).decode.best
            assert scaling["ffn"][ffn]["per_token_s"][i] == best.per_token_s
            assert scaling["ffn"][ffn]["fits"][i] == best.fits
    # 2D scales better: the larger slice helps it more
    s = scaling["ffn"]
    assert s["ws2d"]["per_token_s"][1] / s["ws2d"]["per_token_s"][0] < \
        s["ws1d"]["per_token_s"][1] / s["ws1d"]["per_token_s"][0]
    by_context = sweeps.context_latency("palm-540b", [512, 32768], batch=256, weights="int8",
                                        mesh=(4, 4, 4))
    mq = by_context["variants"]["multiquery-batch"]
    assert mq["fits"] == [True, True] and mq["layout"][0].startswith("ws2d/batch")
    heads = by_context["variants"]["multiquery-heads"]
    assert heads["fits"] == [True, False]  # replicated, its cache outgrows HBM
    assert heads["per_token_s"][1] > 10 * mq["per_token_s"][1]
    mh = plan(kv.variant_config("palm-540b", "multihead"), "tpu-v4", 64, 256, input_len=0,
              history_len=512, gen_len=1, weights="int8", ffn="ws2d", attention="heads",
              mesh=(4, 4, 4), allow_unfit=True).decode.best
    assert by_context["variants"]["multihead"]["per_token_s"][0] == mh.per_token_s
