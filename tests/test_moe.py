"""A mixture of experts: its counts against hand-checked and published numbers, its dropped routes
by hand, every expert-parallel layout with both attention layouts against the unsharded
reference on 2x2x2, 1x4x2 and 4x8x8 (one generation each: prefill, then decode), each step's
compiled collectives against the prediction byte for byte, and the planner's choice of an
expert-parallel degree."""
import functools
import itertools
import json

import jax.numpy as jnp
import numpy as np
import pytest

import tpuinfer as ti
from tpuinfer import experts, model, moe, planner
from tpuinfer.cli import main
from tpuinfer.errors import LayoutError
from tpuinfer.layouts import registry
from tpuinfer.measure import Flag, measure

CFG = ti.MODELS["tiny-moe"]
FULL = (4, 8, 8)
PROMPT_LEN, STEPS = 4, 2  # prefill 4 tokens, then one decode step through the cache


def model_on(shape):
    """tiny-moe, with one layer on the full mesh (every layer is the same program)."""
    return CFG.replace(name="tiny-moe-1-layer", n_layers=1) if tuple(shape) == FULL else CFG


# ---- counts ---------------------------------------------------------------------------------
# (model, total, active, source): the model cards' figures (tpuinfer/config.py cites each)
PUBLISHED = [("mixtral-8x7b", 46.7e9, 12.9e9), ("qwen3-30b-a3b", 30.5e9, 3.3e9),
             ("qwen3-235b-a22b", 235e9, 22e9)]


@pytest.mark.parametrize("name, total, active", PUBLISHED, ids=[p[0] for p in PUBLISHED])
def test_parameter_counts_match_the_published_ones(name, total, active):
    cfg = ti.MODELS[name]
    assert cfg.n_params() == pytest.approx(total, rel=0.01)
    # Qwen3-30B-A3B: 3.353B counted, the card's "3.3B" (1.6% under: it rounds 3.35 down),
    # so within the card's own rounding of 0.1B there; the others within 1%
    tolerance = 0.06e9 if name == "qwen3-30b-a3b" else 0.01 * active
    assert abs(cfg.n_active_params() - active) <= tolerance


def test_parameter_counts_without_embeddings_match_the_qwen3_cards():
    """The cards also give the non-embedding totals: 29.9B and 234B."""
    for name, want in (("qwen3-30b-a3b", 29.9e9), ("qwen3-235b-a22b", 234e9)):
        cfg = ti.MODELS[name]
        assert cfg.n_params() - 2 * cfg.V * cfg.E == pytest.approx(want, rel=0.005)


def test_counts_of_tiny_moe_are_its_parameters_and_a_dense_model_is_all_active():
    assert sum(int(np.prod(x.shape)) for x in _leaves(params_of(CFG))) == CFG.n_params()
    # one expert: gate, up, down of E·F each (64·128); a token uses 2 of the 256 in each of
    # 2 layers
    assert CFG.expert_params() == 3 * 64 * 128
    assert CFG.n_params() - CFG.n_active_params() == 2 * 254 * 3 * 64 * 128
    for name in ("tiny", "llama-3-70b", "palm-540b"):
        assert ti.MODELS[name].n_active_params() == ti.MODELS[name].n_params()


def _leaves(tree):
    import jax
    return jax.tree.leaves(tree)


def test_capacity_rule():
    """C = min(L, max(1, ceil(1.25·L·k/M))), per expert per sequence."""
    mixtral, tiny = ti.MODELS["mixtral-8x7b"], CFG
    assert [mixtral.capacity(L) for L in (1, 4, 2048)] == [1, 2, 640]
    assert [tiny.capacity(L) for L in (1, 4, 512)] == [1, 1, 5]
    assert ti.MODELS["qwen3-235b-a22b"].capacity(2048) == 160


def test_experts_touched_by_enumeration():
    """M·(1 − (1 − k/M)^T) against every way T tokens can choose k of M (uniformly)."""
    for M, k, T in [(4, 2, 1), (4, 2, 2), (6, 2, 3), (5, 3, 2)]:
        pairs = list(itertools.combinations(range(M), k))
        choices = list(itertools.product(pairs, repeat=T))
        exact = sum(len(set().union(*c)) for c in choices) / len(choices)
        assert experts.experts_touched(M, k, T) == pytest.approx(exact)
    assert experts.experts_touched(4, 2, 2) == 3.0  # by hand: 2, 3 or 4 with odds 1, 4, 1
    # Qwen3's 8 of 128: a batch of 64 decode tokens touches 126 of them on average
    assert experts.experts_touched(128, 8, 64) == pytest.approx(125.94, abs=0.01)


# ---- dropped routes, by hand ----------------------------------------------------------------
def test_dropped_routes_by_hand():
    """A router of zeros gives every expert the same logit: top-k takes experts 0 and 1 for
    every token, each at weight 1/2. A sequence of L = 4 tokens sends 4 routes to each; with
    C = 1 each keeps 1 and drops 3: 6 a sequence a layer, 12 over tiny-moe's 2 layers (the
    prefill `generate` runs; steps=1 runs no decode step). In decode (L = 1, C = 1) a token's
    two routes both fit."""
    params = params_of(CFG)
    zeros = [layer | {"w_router": jnp.zeros_like(layer["w_router"])}
             for layer in params["layers"]]
    out = ti.generate(params | {"layers": zeros}, CFG,
                      np.arange(2 * PROMPT_LEN).reshape(2, PROMPT_LEN) + 7, 1)
    assert out.dropped["prefill"].tolist() == [12, 12]
    r = moe.route(CFG, zeros[0]["w_router"], jnp.ones((1, PROMPT_LEN, CFG.E)))
    assert r.expert_BLR[0].tolist() == [[0, 1]] * 4
    assert r.slot_BLR[0].tolist() == [[0, 0], [1, 1], [2, 2], [3, 3]]
    assert r.kept_BLR[0].tolist() == [[True, True]] + [[False, False]] * 3
    assert r.gate_BLR[0].tolist() == [[0.5, 0.5]] + [[0.0, 0.0]] * 3
    one = moe.route(CFG, zeros[0]["w_router"], jnp.ones((3, 1, CFG.E)))
    assert one.capacity == 1 and bool(one.kept_BLR.all()) and moe.dropped(one).tolist() == [0] * 3


def test_forward_runs_an_moe_model_and_counts_drops_only_when_asked():
    """`model.forward` as `quality` and the tests call it (nothing counts), and inside
    `counting_drops` (as a step runs it): one [B] count per layer."""
    params = params_of(CFG)
    cache = model.init_cache(CFG, 2, PROMPT_LEN)
    tokens_BL = jnp.zeros((2, PROMPT_LEN), jnp.int32)
    with moe.counting_drops() as drops:
        logits, _ = model.forward(params, CFG, tokens_BL, cache, 0)
    assert logits.shape == (2, PROMPT_LEN, CFG.V) and bool(jnp.isfinite(logits).all())
    assert [d.shape for d in drops] == [(2,)] * CFG.n_layers
    moe.record_drops(moe.route(CFG, params["layers"][0]["w_router"], logits[..., :CFG.E]))
    assert len(drops) == CFG.n_layers  # recorded after the context closed: kept nowhere


# ---- every expert-parallel layout against the reference ---------------------------------------
def batch_on(shape, ffn) -> int:
    """The batch a run uses: every chip's (attention by batch splits B/|e| over the tensor axes'
    minor end), but 32 for ep-x on 4x8x8, whose 4 groups of experts then hold 8 sequences
    each, as attention by batch over z needs (a batch of 256 there spends most of the test's
    time in capacity buffers of 64 sequences' slots at every expert)."""
    return 32 if (tuple(shape), ffn) == (FULL, "ep-x") else int(np.prod(shape))


@functools.lru_cache(maxsize=None)
def params_of(cfg):
    return ti.init_params(cfg, seed=0)


@functools.lru_cache(maxsize=None)
def prompt(batch):
    return np.random.default_rng(batch).integers(0, CFG.V, (batch, PROMPT_LEN))


@functools.lru_cache(maxsize=None)
def reference(cfg, batch):
    return ti.generate(params_of(cfg), cfg, prompt(batch), STEPS)


RUNS = [(shape, ti.Layout(f, a)) for shape in [(2, 2, 2), (1, 4, 2), FULL]
        for f in ti.EXPERT_LAYOUTS for a in ti.ATTENTION_LAYOUTS]


@pytest.mark.slow
@pytest.mark.parametrize("shape, layout", RUNS,
                         ids=[f"{'x'.join(map(str, s))}-{lay}" for s, lay in RUNS])
def test_expert_layout_matches_reference(shape, layout):
    """Tokens and dropped routes identical, logits within 1e-4 relative (f32: the layouts
    only reorder sums), the cache to f32 rounding; then each phase's compiled step (the same
    program, from the engine's cache) against its prediction, collective by collective."""
    cfg, batch = model_on(shape), batch_on(shape, layout.ffn)
    out = ti.generate(params_of(cfg), cfg, prompt(batch), STEPS, mesh=ti.make_mesh(shape),
                      prefill=layout, decode=layout)
    ref = reference(cfg, batch)
    np.testing.assert_array_equal(out.tokens, ref.tokens)
    for phase in ("prefill", "decode"):
        np.testing.assert_array_equal(out.dropped[phase], ref.dropped[phase])
    for got, want in [(out.prefill_logits, ref.prefill_logits),
                      (out.step_logits, ref.step_logits)]:
        assert np.linalg.norm(got - want) / np.linalg.norm(want) < 1e-4
    for layer_out, layer_ref in zip(out.cache, ref.cache):
        for t in "kv":
            np.testing.assert_allclose(np.asarray(layer_out[t]), np.asarray(layer_ref[t]),
                                       rtol=1e-5, atol=1e-5)
    for phase in ("prefill", "decode"):
        m = measure(cfg, ti.make_mesh(shape), layout, phase=phase, batch=batch,
                    tokens=PROMPT_LEN if phase == "prefill" else None,
                    context=PROMPT_LEN + STEPS, repeats=0)
        exact = lambda side: sorted((x.kind, x.axes, x.group, x.count, x.bytes)
                                    for x in side.collectives)
        assert exact(m.measured) == exact(m.predicted), phase
        # the experts' all-to-alls, over the expert axes (none where x = 1 holds them all)
        e = tuple(a for a in registry.FFN[layout.ffn].AXES.batch if dict(zip("xyz", shape))[a] > 1)
        assert bool([x for x in m.measured.collectives
                     if x.kind == "all-to-all" and x.axes == e]) == bool(e)
        assert m.measured.flops == pytest.approx(m.predicted.flops, rel=0.01)
        assert m.measured.attention_flops == pytest.approx(m.predicted.attention_flops,
                                                           rel=0.01)
        assert m.measured.weight_bytes_per_device == m.predicted.weight_bytes_per_device
        # held: besides the weights and cache, the step's tokens, logits and drops
        assert m.measured.memory_bytes == pytest.approx(m.predicted.memory_bytes, rel=0.10,
                                                        abs=8192)
        assert m.compiler_flops and Flag.FLOPS_MISREAD not in m.flags


@pytest.mark.slow
def test_full_mesh_ep_xyz_prefill_in_numbers():
    """ep-xyz prefill on 4x8x8, per device (f32), from _experts.py's formulas: B = 256 (one
    sequence a chip), L = 4, C = 1, M = 256 experts (one a chip), E = 64, one layer. Each chip
    sends its sequence's M·C slots of E, and receives one slot from every sequence for its
    expert; nothing else moves (attention on the chip's own sequence, every head). A prompt
    of zeros routes a sequence's 4 tokens alike in the first layer: each of its 2 experts
    keeps 1 of them, 2 · 3 routes dropped a sequence, 1,536 in all."""
    m = measure(model_on(FULL), ti.make_mesh(FULL), ti.Layout("ep-xyz", "heads"),
                phase="prefill", batch=256, tokens=PROMPT_LEN, context=PROMPT_LEN + STEPS,
                repeats=1)
    got = {(x.kind, "".join(x.axes), x.bytes): x.count for x in m.measured.collectives}
    assert got == {("all-to-all", "xyz", 1 * 256 * 1 * 64 * 4): 2}  # dispatch, combine
    assert m.dropped == 256 * 2 * 3


# ---- layouts and models that do not go together -----------------------------------------------
def test_a_dense_model_on_an_expert_layout_and_the_reverse_say_what_works():
    with pytest.raises(LayoutError, match=r"ep-x splits experts over x, and tiny is a dense "
                                          r"model.*choose ws1d, ws2d"):
        ti.generate(ti.init_params(ti.MODELS["tiny"]), ti.MODELS["tiny"], prompt(8), 1,
                    mesh=ti.make_mesh((2, 2, 2)), prefill=ti.Layout("ep-x"),
                    decode=ti.Layout("ep-x"))
    with pytest.raises(LayoutError, match=r"tiny-moe is a mixture of experts, and ws2d "
                                          r"partitions a dense.*ep-x, ep-xy, ep-xyz"):
        ti.generate(params_of(CFG), CFG, prompt(8), 1, mesh=ti.make_mesh((2, 2, 2)))
    with pytest.raises(LayoutError, match=r"M=256 does not divide by X·Y·Z=3"):
        ti.generate(params_of(CFG), CFG, prompt(3), 1, mesh=ti.make_mesh((3, 1, 1)),
                    prefill=ti.Layout("ep-xyz"), decode=ti.Layout("ep-xyz"))
    with pytest.raises(LayoutError, match="no looped schedule"):
        planner.phase_estimate(CFG, ti.Layout("ep-x", looped=True), (2, 2, 2), "decode",
                               batch=8, input_len=4, gen_len=1)
    with pytest.raises(ValueError, match="serial block"):
        ti.MODELS["tiny"].replace(n_experts=8, top_k=2)


# ---- the planner ------------------------------------------------------------------------------
def test_planner_weighs_expert_parallelism_per_phase():
    """Mixtral 8x7B on 16 TPU v5e chips, batch 32, 2,048 prompt tokens, 128 generated (bf16):
    prefill splits the 8 experts one to a group of 2 chips (8 x 2: the all-to-alls of its
    640-slot buffers shrink with every doubling of the degree), decode 2 a group of 4 (4 x 4:
    beyond 4, attention, held whole by every group of experts and split over fewer tensor
    chips, costs more reads than the all-to-alls save)."""
    p = planner.plan("mixtral-8x7b", "tpu-v5e", 16, 32, input_len=2048, gen_len=128)
    chosen = {ph.best.phase: (ph.experts["expert_parallel"], ph.experts["tensor_parallel"])
              for ph in p.phases}
    assert chosen == {"prefill": (8, 2), "decode": (4, 4)}
    for ph in p.phases:  # the best of each degree beside it, the chosen one the fastest
        per = {e["expert_parallel"]: e["latency_s"] for e in ph.to_json()["experts"]
               ["per_degree"]}
        assert sorted(per) == [1, 2, 4, 8]
        assert min(per, key=per.get) == ph.experts["expert_parallel"]
        assert ph.experts["why"].startswith(f"expert-parallel {ph.experts['expert_parallel']}")
    assert p.decode.experts["capacity"] == 1 and p.prefill.experts["capacity"] == 640


def test_plan_command_prints_the_expert_parallel_choice(capsys):
    assert main(["plan", "--model", "mixtral-8x7b", "--hardware", "tpu-v5e", "--chips", "16",
                 "--batch", "32", "--gen-len", "128"]) == 0
    text = capsys.readouterr().out
    assert "decode experts: expert-parallel 4 x tensor-parallel 4" in text
    assert "prefill why: expert-parallel 8 x tensor-parallel 2 (ep-" in text
    assert main(["plan", "--model", "qwen3-30b-a3b", "--hardware", "h100-sxm", "--chips", "2",
                 "--batch", "8", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {"expert_parallel", "tensor_parallel", "all_to_all_bytes_per_chip", "why",
            "per_degree"} <= set(out["decode"]["experts"])


def test_measure_command_on_tiny_moe(capsys):
    """A prompt of zeros: in the first layer every token of a sequence routes alike, so each
    of its 2 experts keeps 1 of 4 tokens: 6 routes dropped a sequence, 48 in all. The second
    layer's tokens differ (the first kept its routes, the others lost theirs): at most as
    many again."""
    assert main(["measure", "--model", "tiny-moe", "--mesh", "2x2x2", "--batch", "8",
                 "--tokens", "4", "--context", "7", "--repeats", "1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ffn"] == "ep-x" and 48 <= out["dropped_routes"] <= 96
    kinds = lambda side: sorted((x["kind"], x["axes"], x["bytes"], x["count"])
                                for x in out[side]["collectives"])
    assert kinds("measured") == kinds("predicted")
    assert ("all-to-all", "x", 4 * 256 * 1 * 64 * 4, 2) in kinds("measured")  # dispatch
