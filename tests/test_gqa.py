"""Grouped-query attention (1 < K < H) and today's models: the K/V heads split over as many
chips as K allows and replicated over the rest, every layout against the reference on
tiny-llama (serial SwiGLU block, K = 4 of 256 heads, an untied output table), the compiled
collectives against the prediction, and the Llama 3 and Qwen2.5 presets against their
published sizes."""
import functools
import math

import numpy as np
import pytest

import tpuinfer as ti
from tpuinfer import theory
from tpuinfer.errors import LayoutError, UsageError
from tpuinfer.hardware import get_hardware, mesh_shapes, wrapped_axes, wraps
from tpuinfer.kv import ATTENTION_VARIANTS, GROUPED_VARIANTS, kv_bytes_per_chip
from tpuinfer.layouts import registry
from tpuinfer.layouts.registry import pad_heads
from tpuinfer.measure import measure
from tpuinfer.planner import plan

LLAMA = ti.MODELS["tiny-llama"]
L_ = ti.Layout
PROMPT_LEN, STEPS = 4, 3


# ---- presets against what their makers publish ----------------------------------------------
@pytest.mark.parametrize("name, published, rel", [
    ("llama-3-8b", 8.03e9, 0.001),  # huggingface.co/meta-llama/Meta-Llama-3-8B: 8.03B params
    ("llama-3-70b", 70.6e9, 0.001),  # huggingface.co/meta-llama/Meta-Llama-3-70B: 70.6B
    ("llama-3-405b", 405e9, 0.003),  # arXiv 2407.21783: "405B parameters"
    ("qwen2.5-7b", 7.61e9, 0.001),  # huggingface.co/Qwen/Qwen2.5-7B: 7.61B
    ("qwen2.5-72b", 72.7e9, 0.001),  # huggingface.co/Qwen/Qwen2.5-72B: 72.7B
])
def test_preset_parameter_count_matches_published(name, published, rel):
    assert ti.MODELS[name].n_params() == pytest.approx(published, rel=rel)


def test_llama_shapes_and_kv_cache_per_token():
    cfg = ti.MODELS["llama-3-70b"]
    assert (cfg.n_layers, cfg.E, cfg.F, cfg.H, cfg.K, cfg.D, cfg.V) == (
        80, 8192, 28672, 64, 8, 128, 128_256)
    assert cfg.attention_kind == "grouped" and not cfg.tied_embeddings
    # 2 (K and V) · 80 layers · 8 heads · 128 · 2 bytes: 320 KiB a token in bf16
    assert cfg.kv_bytes_per_token(2) == 327_680
    # the 8B's untied tables: 2 · 128256 · 4096 of its 8,030,261,248 parameters
    assert ti.MODELS["llama-3-8b"].n_params() == 8_030_261_248


def test_model_rejects_k_that_does_not_divide_h():
    with pytest.raises(UsageError, match=r"K=3 key/value heads for H=8 query heads"):
        LLAMA.replace(n_heads=8, n_kv_heads=3)


# ---- where the K/V heads live --------------------------------------------------------------
# (layout, shape, batch) -> the cache spec of [B, S, K, D]: K over the longest prefix of the
# query heads' axes whose chip count divides K = 4, replicated over the rest
CACHE = {
    (L_("ws1d", "heads"), (4, 8, 8), 256): (None, None, ("x",), None),  # x = 4 divides 4
    (L_("ws2d", "heads"), (4, 8, 8), 256): (None, None, None, None),  # z = 8 does not
    (L_("ws2d", "heads"), (2, 2, 2), 8): (None, None, ("z", "y"), None),  # ride in X copies
    (L_("ws1d", "heads"), (2, 2, 2), 8): (None, None, ("x", "y"), None),
    (L_("wg-xy", "heads"), (1, 4, 2), 8): (("x", "y"), None, ("z",), None),
    # by batch: the batch over g, K over the part of p outside g (here none: r is empty)
    (L_("ws1d", "batch"), (4, 8, 8), 256): (("x", "y", "z"), None, None, None),
    (L_("ws2d", "batch"), (2, 2, 2), 4): (("y", "x"), None, ("z",), None),  # r = z
}


@pytest.mark.parametrize("layout, shape, batch", list(CACHE), ids=str)
def test_kv_heads_split_as_far_as_k_allows(layout, shape, batch):
    assert registry.cache_spec(LLAMA, layout, shape, batch) == CACHE[layout, shape, batch]


def test_grouped_query_specs_need_the_mesh_and_whole_groups():
    with pytest.raises(UsageError, match="depends on the mesh: pass mesh_shape"):
        registry.param_specs(LLAMA, L_("ws2d"))
    assert registry.param_specs(LLAMA, L_("ws2d"), mesh_shape=(1, 4, 2))["layers"][0][
        "w_k"] == ("x", ("z",), None)
    # 6 K/V heads: each chip's query heads on 8 chips would straddle two groups
    cfg = LLAMA.replace(n_heads=24, n_kv_heads=6)
    with pytest.raises(LayoutError, match=r"K=6 key/value heads and x·y·z=8 chips"):
        ti.engine.check(cfg, L_("ws1d"), (2, 2, 2), 8)


def test_padding_heads_keeps_the_kv_heads():
    """Llama 3 70B's 64 heads on 128 chips (1D weight-stationary): padded to 128 query heads,
    still 8 K/V heads, each now read by 16."""
    padded = pad_heads(ti.MODELS["llama-3-70b"], L_("ws1d"), (4, 4, 8))
    assert (padded.H, padded.K) == (128, 8)


# ---- every layout against the reference ------------------------------------------------------
@functools.lru_cache(maxsize=None)
def params(cfg):
    return ti.init_params(cfg, seed=0)


# Prompts whose greedy choices are never near a tie in the reference: random weights can put
# two logits within f32 rounding (with seed 256, 2.6e-6 apart in one sequence of the
# one-layer model), and a layout's reordered sums may then pick the other token. Seed 3's
# closest top two are 6.8e-4 apart; the test checks the margin it relies on.
PROMPT_SEED = 3


@functools.lru_cache(maxsize=None)
def run(cfg, batch, shape=None, prefill=None, decode=None):
    prompt = np.random.default_rng(PROMPT_SEED).integers(0, cfg.V, (batch, PROMPT_LEN))
    return ti.generate(params(cfg), cfg, prompt, STEPS, prefill=prefill, decode=decode,
                       mesh=None if shape is None else ti.make_mesh(shape))


# Every feed-forward layout by heads and by batch, prefill and decode, on each of three
# meshes: on 2x2x2 each feed-forward layout by heads then by batch; on 1x4x2 and 4x8x8 five
# pairs that run each of the ten once (each compiles once per mesh), on 4x8x8 with one layer
# (every layer is the same program; two took twice the compile). Comments: p, the K/V heads'
# split.
ONE_LAYER = LLAMA.replace(name="tiny-llama-1-layer", n_layers=1)
RUNS = ([(LLAMA, (2, 2, 2), 8, L_(f, "heads"), L_(f, "batch")) for f in ti.FFN_LAYOUTS]
        + [(LLAMA, (1, 4, 2), 8, L_("ws2d", "heads"), L_("ws1d", "batch")),  # p = z; x·y
           (LLAMA, (1, 4, 2), 4, L_("wg-x", "heads"), L_("ws2d", "batch")),  # B below chips
           (LLAMA, (1, 4, 2), 8, L_("ws1d", "heads"), L_("wg-x", "batch")),
           (LLAMA, (1, 4, 2), 8, L_("wg-xy", "heads"), L_("wg-xy", "batch")),
           (LLAMA, (1, 4, 2), 8, L_("wg-xyz", "heads"), L_("wg-xyz", "batch"))]
        + [(ONE_LAYER, (4, 8, 8), 256, p, d) for p, d in [
            (L_("ws1d", "heads"), L_("ws2d", "batch")),  # p = x; none
            (L_("wg-xy", "heads"), L_("ws1d", "batch")),  # none; x, then g
            (L_("ws2d", "heads"), L_("wg-x", "batch")),
            (L_("wg-x", "heads"), L_("wg-xy", "batch")),
            (L_("wg-xyz", "heads"), L_("wg-xyz", "batch"))]])


@pytest.mark.slow
@pytest.mark.parametrize("cfg, shape, batch, prefill, decode", RUNS,
                         ids=[f"{'x'.join(map(str, s))}-B{b}-{p}-{d}" for _, s, b, p, d in RUNS])
def test_grouped_query_matches_reference(cfg, shape, batch, prefill, decode):
    out, ref = run(cfg, batch, shape, prefill, decode), run(cfg, batch)
    top2 = np.sort(ref.step_logits, axis=-1)[..., -2:]
    assert (top2[..., 1] - top2[..., 0]).min() > 1e-4  # no tie a reordered sum could flip
    for got, want in [(out.prefill_logits, ref.prefill_logits), (out.step_logits, ref.step_logits)]:
        assert np.linalg.norm(got - want) / np.linalg.norm(want) < 1e-4
    for layer_out, layer_ref in zip(out.cache, ref.cache):
        for t in "kv":
            np.testing.assert_allclose(np.asarray(layer_out[t]), np.asarray(layer_ref[t]),
                                       rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(out.tokens, ref.tokens)


# Compiled collectives against the prediction, byte for byte, where the K/V heads move
# differently: ride along whole in ws2d's reduce-scatter and are sliced by batch (2x2x2), and
# split over x then all-to-all'd over it by batch (ws1d on 4x8x8 above: measured by hand).
@pytest.mark.slow
@pytest.mark.parametrize("shape, layout, phase", [
    ((2, 2, 2), L_("ws2d", "batch"), "decode"), ((2, 2, 2), L_("ws1d", "heads"), "prefill"),
    ((1, 4, 2), L_("wg-xy", "batch"), "decode")], ids=str)
def test_grouped_query_collectives_match_prediction(shape, layout, phase):
    m = measure(LLAMA, ti.make_mesh(shape), layout, phase=phase, batch=8,
                tokens=PROMPT_LEN if phase == "prefill" else None, context=7, repeats=0)
    exact = lambda side: sorted((x.kind, x.axes, x.group, x.count, x.bytes)
                                for x in side.collectives)
    assert exact(m.measured) == exact(m.predicted)
    assert m.measured.weight_bytes_per_device == m.predicted.weight_bytes_per_device
    assert m.measured.flops == pytest.approx(m.predicted.flops, rel=0.05)


# ---- today's chips --------------------------------------------------------------------------
def test_2d_torus_wraps_each_full_axis_alone():
    """TPU v5e and v6e: a side of 16 chips is a ring, a shorter side a line; TPU v4 wraps
    only a slice made of whole 4x4x4 cubes. A logical axis over half of a physical ring (2x4x8
    on the 4x4x4 cube: x a run of 2 of one axis, z the other axis and that run's stride) is a
    line; the stride keeps the ring."""
    assert wrapped_axes("tpu-v5e", (8, 16, 1)) == (False, True, True)
    assert wrapped_axes("tpu-v6e", (16, 16, 1)) == (True, True, True)
    assert not wraps("tpu-v6e", (4, 4, 1))
    assert wrapped_axes("tpu-v4", (4, 4, 8)) == (True, True, True)
    assert wrapped_axes("tpu-v4", (2, 4, 8)) == (False, True, True)
    assert wrapped_axes("tpu-v4", (2, 2, 4)) == (False, False, False)  # the 2x2x4 slice
    hw = get_hardware("tpu-v6e")
    assert (hw.peak_flops, hw.hbm_bytes, hw.hbm_bandwidth) == (918e12, 32e9, 1638e9)


# ---- planning a grouped-query model ------------------------------------------------------------
def test_context_per_chip_multiquery_grouped_and_multihead():
    """Llama 3 70B's cache a position, batch 32 on 16 chips (bf16): by heads its 8 K/V heads
    split over 8 chips, one a chip, and repeat over the other 8: the same bytes as
    multiquery's one head on every chip, a quarter of multihead's 64 split 4 a chip; by batch
    each chip holds 2 sequences of all 8 heads, 8 times multiquery by batch."""
    per = {v: kv_bytes_per_chip("llama-3-70b", v, 16, 32, 1)
           for v in ATTENTION_VARIANTS + GROUPED_VARIANTS}
    one_head = 2 * 80 * 128 * 2  # K and V, 80 layers, D = 128, bf16: one head, one sequence
    assert per["grouped-heads"] == per["multiquery-heads"] == 32 * one_head
    assert per["multihead"] == 4 * per["grouped-heads"]
    assert per["grouped-batch"] == 8 * per["multiquery-batch"] == 2 * 8 * one_head
    with pytest.raises(UsageError, match="grouped-batch needs a grouped model"):
        kv_bytes_per_chip("palm-540b", "grouped-batch", 64, 128, 1)


def test_planner_prices_a_llama_decode_step():
    """The decode step of 16 sequences at 8k context on 8 TPU v5e chips, int8: the K/V heads
    split one a chip by heads, and the step is memory-bound (weights and KV-cache reads
    above compute). Batch 32 does not fit: 86 GB of cache and 71 GB of weights in 128 GB."""
    p = plan("llama-3-70b", "tpu-v5e", chips=8, batch=16, input_len=0, history_len=8192,
             gen_len=1, weights="int8")
    b = p.decode.best
    assert b.fits and b.mesh_shape in mesh_shapes("tpu-v5e", 8)  # a mesh on the 2x4 slice
    assert b.weights_s + b.kv_s > 4 * b.compute_s
    # the KV bytes each chip reads: 16 sequences' 8,193 positions of one K/V head, 80 layers
    assert b.kv_s == pytest.approx(16 * 8193 * 2 * 80 * 128 * 2 / 819e9, rel=1e-6)
    with pytest.raises(UsageError, match="nothing fits in memory"):
        plan("llama-3-70b", "tpu-v5e", chips=8, batch=32, input_len=0, history_len=8192,
             gen_len=1, weights="int8")


def test_decode_turns_compute_bound_later_with_the_cache_and_never_past_its_context():
    """The roofline with the cache's reads (theory.decode_critical_batch): at context 0 the
    weights' own ridge point; then later; infinite past kv_bound_context, where one
    sequence's cache reads take as long as its FLOPs."""
    ridge = theory.decode_ridge_batch("tpu-v5e", "int8")
    assert theory.decode_critical_batch("llama-3-70b", "tpu-v5e", "int8", 0) == \
        pytest.approx(ridge)
    limit = theory.kv_bound_context("llama-3-70b", "tpu-v5e")
    assert 1_700 < limit < 1_800  # 2·70.0e9·819e9 / (197e12 · 327,680 bytes)
    assert ridge < theory.decode_critical_batch("llama-3-70b", "tpu-v5e", "int8",
                                                int(limit) - 1) < math.inf
    assert theory.decode_critical_batch("llama-3-70b", "tpu-v5e", "int8", int(limit) + 1) \
        == math.inf
    # PaLM 540B's one K/V head a token: 20 times the context before the cache decides
    assert theory.kv_bound_context("palm-540b", "tpu-v5e") > 20 * limit
