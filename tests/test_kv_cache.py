"""KV-cache formats (tpuinfer/kv_formats.py): an int8 cache with a bf16 scale per token and
head, and fp8, in the reference model and every layout (each against the reference run with
the same cache), the bytes each device holds against the prediction, the cost model's KV
reads and Table 1's lengths; fp8 weights on the chips that compute in fp8."""
import functools

import numpy as np
import pytest

import tpuinfer as ti
from tpuinfer import kv_formats
from tpuinfer.cli import main
from tpuinfer.cost import estimate
from tpuinfer.errors import UsageError
from tpuinfer.hardware import get_hardware
from tpuinfer.kv import kv_bytes_per_chip, max_context, variant_config
from tpuinfer.layouts import step_terms
from tpuinfer.measure import measure
from tpuinfer.paper import TABLE1

L_ = ti.Layout
TINY, LLAMA = ti.MODELS["tiny"], ti.MODELS["tiny-llama"]  # multiquery; grouped-query (K = 4)
MTNLG = ti.MODELS["tiny-mtnlg"]  # multihead (K = H)
PROMPT_LEN, STEPS = 4, 3  # a prefill, then two decode steps through the cache
# Prompts whose greedy choices lie far from a tie (tests/test_gqa.py says why seed 3).
PROMPT_SEED = 3


def one_layer(cfg):
    """On 4x8x8 one layer, as tests/test_layouts.py runs there: every layer is the same
    program, and a second doubled the compile."""
    return cfg.replace(name=f"{cfg.name}-1-layer", n_layers=1)


@functools.lru_cache(maxsize=None)
def params(cfg):
    return ti.init_params(cfg, seed=0)


@functools.lru_cache(maxsize=None)
def run(cfg, batch, kv, shape=None, prefill=None, decode=None):
    prompt = np.random.default_rng(PROMPT_SEED).integers(0, cfg.V, (batch, PROMPT_LEN))
    mesh = None if shape is None else ti.make_mesh(shape)
    return ti.generate(params(cfg), cfg, prompt, STEPS, mesh=mesh, prefill=prefill,
                       decode=decode, kv=kv)


# ---- the format table ----------------------------------------------------------------------
def test_bytes_per_value_of_each_format():
    """int8: one byte a value and one bf16 scale per token and head (D values share it)."""
    assert [kv_formats.FORMATS[f].bytes_per_value(8) for f in ("bf16", "int8", "fp8")] == \
        [2, 1.25, 1]
    assert kv_formats.array_bytes((2, 3, 4, 128), "int8") == 2 * 3 * 4 * (128 + 2)
    assert TINY.kv_bytes(4, 16, kv="int8") == 2 * 2 * 4 * 16 * 1 * (8 + 2)  # K, V; 2 layers
    assert ti.MODELS["palm-540b"].kv_bytes_per_token(kv="int8") == 2 * 118 * 258
    with pytest.raises(UsageError, match=r"unknown KV-cache format 'int4'.*bf16, int8, fp8"):
        ti.generate(params(TINY), TINY, np.zeros((1, 2), np.int32), 1, kv="int4")


def test_int8_cache_holds_values_and_scales():
    """The reference's int8 cache: per token and head, the largest |value| is 127 levels, and
    values times scales give back the keys within half a level. At the prompt's positions the
    keys are the same computation in every run, so the bf16 cache's (within bf16 rounding,
    2^-9 of a value) stands for them."""
    q, b = run(TINY, 4, "int8"), run(TINY, 4, "bf16")
    k, scale = np.asarray(q.cache[0]["k"]), np.asarray(q.cache[0]["k_scale"], np.float32)
    assert k.dtype == np.int8 and k.shape == (4, PROMPT_LEN + STEPS, 1, 8)
    assert scale.shape == (4, PROMPT_LEN + STEPS, 1)
    written = slice(0, PROMPT_LEN + STEPS - 1)  # the last token is sampled, never written
    assert (np.abs(k[:, written]).max(axis=-1) == 127).all()
    prompt = slice(0, PROMPT_LEN)
    back = k[:, prompt] * scale[:, prompt, :, None]
    want = np.asarray(b.cache[0]["k"], np.float32)[:, prompt]
    assert (np.abs(back - want) <= 0.5 * scale[:, prompt, :, None] + 2**-8 * np.abs(want)).all()


# ---- every layout against the reference with the same cache ---------------------------------
# Each run is one generate: its prefill in one layout, its two decode steps in another. On
# 2x2x2 each feed-forward layout prefills by heads and decodes by batch (tiny, multiquery) or
# the other way round (tiny-llama, grouped-query); on 4x8x8 the pairs cross, so that every
# feed-forward x attention layout runs in both phases on both meshes for multiquery, and
# grouped-query in both phases on 2x2x2 and in one on 4x8x8 (each compile there is seconds).
FFNS = ti.FFN_LAYOUTS
# On 4x8x8 a batch of 64 where the layouts split it (wg-xy by batch and wg-xyz need 256).
CROSSED = [(b, L_(f, "batch"), L_(g, "heads")) for b, f, g in
           zip((64, 64, 64, 256, 256), FFNS, ("ws2d", "ws1d", "wg-xy", "wg-x", "wg-xyz"))]
INT8_RUNS = ([(TINY, (2, 2, 2), 8, L_(f, "heads"), L_(f, "batch")) for f in FFNS]
             + [(LLAMA, (2, 2, 2), 8, L_(f, "batch"), L_(f, "heads")) for f in FFNS]
             + [(one_layer(TINY), (4, 8, 8), b, p, d) for b, p, d in CROSSED]
             + [(one_layer(LLAMA), (4, 8, 8), b, d, p) for b, p, d in CROSSED[:3]]
             # multihead, where it is cheap: two pairs on 2x2x2
             + [(MTNLG, (2, 2, 2), 8, L_("ws2d", "heads"), L_("wg-x", "batch")),
                (MTNLG, (2, 2, 2), 8, L_("wg-xyz", "batch"), L_("ws1d", "heads"))])


@pytest.mark.slow
@pytest.mark.parametrize("cfg, shape, batch, prefill, decode", INT8_RUNS,
                         ids=[f"{c.name}-{'x'.join(map(str, s))}-{p}-{d}"
                              for c, s, b, p, d in INT8_RUNS])
def test_int8_cache_matches_reference(cfg, shape, batch, prefill, decode):
    """Tokens identical to the reference's with the same int8 cache. A layout's reordered f32
    sums can move a key across a rounding boundary of its int8 level, so the cache may
    differ by one level (and its scale by a bf16 rounding), and the logits by that much:
    measured below 1e-4 relative, bounded at 1e-3."""
    out, ref = run(cfg, batch, "int8", shape, prefill, decode), run(cfg, batch, "int8")
    np.testing.assert_array_equal(out.tokens, ref.tokens)
    for got, want in [(out.prefill_logits, ref.prefill_logits), (out.step_logits, ref.step_logits)]:
        assert np.linalg.norm(got - want) / np.linalg.norm(want) < 1e-3
    for layer_out, layer_ref in zip(out.cache, ref.cache):
        assert sorted(layer_out) == ["k", "k_scale", "v", "v_scale"]
        for t in "kv":
            got, want = np.asarray(layer_out[t], np.int32), np.asarray(layer_ref[t], np.int32)
            assert np.abs(got - want).max() <= 1 and (got != want).mean() < 0.01
            np.testing.assert_allclose(np.asarray(layer_out[f"{t}_scale"], np.float32),
                                       np.asarray(layer_ref[f"{t}_scale"], np.float32),
                                       rtol=2**-7)


@pytest.mark.slow
def test_fp8_cache_and_fp8_weights_run_on_the_emulated_mesh():
    """XLA:CPU runs float8_e4m3fn: an fp8 cache (f32 activations) matches the reference with
    the same cache, and fp8 weights (bf16 activations; gathered as fp8 by wg-xy) match it
    within bf16's reordered sums (the 2% tests/test_layouts.py allows bf16 and int8
    weights)."""
    layouts = dict(prefill=L_("wg-xy", "batch"), decode=L_("wg-xy", "batch"))
    out, ref = run(TINY, 8, "fp8", (2, 2, 2), **layouts), run(TINY, 8, "fp8")
    assert str(out.cache[0]["k"].dtype) == "float8_e4m3fn"
    np.testing.assert_array_equal(out.tokens, ref.tokens)
    prompt = np.random.default_rng(PROMPT_SEED).integers(0, TINY.V, (8, PROMPT_LEN))
    fp8 = ti.generate(params(TINY), TINY, prompt, 1, mesh=ti.make_mesh((2, 2, 2)),
                      weights="fp8", kv="fp8", **layouts)
    fp8_ref = ti.generate(params(TINY), TINY, prompt, 1, weights="fp8", kv="fp8")
    got, want = (np.asarray(x.prefill_logits, np.float32) for x in (fp8, fp8_ref))
    assert np.linalg.norm(got - want) / np.linalg.norm(want) < 0.02


# ---- bytes each device holds: the compiled step against the prediction ----------------------
# tiny with d_head 64 (H·D unchanged): int8's scale is 2 bytes a 64-value head, 3% on top
D64 = TINY.replace(name="tiny-d64", n_heads=32, d_head=64)


@functools.lru_cache(maxsize=None)
def measured(cfg, layout, kv, phase="decode"):
    return measure(cfg, ti.make_mesh((2, 2, 2)), layout, phase=phase, batch=8,
                   tokens=PROMPT_LEN if phase == "prefill" else None, context=7, repeats=0,
                   kv=kv)


@pytest.mark.slow
@pytest.mark.parametrize("cfg, layout, phase", [
    (TINY, L_("ws2d", "batch"), "decode"), (LLAMA, L_("wg-xy", "heads"), "prefill"),
    (D64, L_("ws1d", "batch"), "decode")], ids=lambda x: getattr(x, "name", str(x)))
def test_kv_bytes_per_device_equal_the_prediction(cfg, layout, phase):
    """The compiled step's cache arguments on one device against the terms' stored KV bytes:
    equal byte for byte in every format; int8's are bf16's times (1 + 2/D)/2 (D = 8: 0.625;
    D = 64: 0.516, about half) and fp8's exactly half. The collectives and FLOPs do not
    change: the layouts move keys and values as activations, and quantize them where they are
    cached."""
    m = {kv: measured(cfg, layout, kv, phase) for kv in ("bf16", "int8", "fp8")}
    for kv, x in m.items():
        assert x.measured.kv_bytes_per_device == x.predicted.kv_bytes_per_device, kv
        assert x.to_json()["measured"]["kv_bytes_per_device"] == x.measured.kv_bytes_per_device
        # the scores and values still read as attention's matmuls, the scales apart from them
        assert (x.measured.flops, x.measured.attention_flops) == (
            x.predicted.flops, x.predicted.attention_flops)
    bf16 = m["bf16"].measured.kv_bytes_per_device
    assert m["int8"].measured.kv_bytes_per_device == bf16 * (1 + 2 / cfg.D) / 2
    assert m["fp8"].measured.kv_bytes_per_device == bf16 / 2
    if cfg.D == 64:
        assert m["int8"].measured.kv_bytes_per_device / bf16 < 0.52
    exact = lambda x: sorted((c.kind, c.axes, c.group, c.count, c.bytes)
                             for c in x.measured.collectives)
    assert exact(m["int8"]) == exact(m["bf16"]) == exact(m["fp8"])
    assert exact(m["int8"]) == sorted((c.kind, c.axes, c.group, c.count, c.bytes)
                                      for c in m["int8"].predicted.collectives)


@pytest.mark.slow
def test_measure_command_line_reports_the_cache(capsys):
    import json
    args = ["measure", "--mesh", "2x2x2", "--ffn", "ws2d", "--attention", "batch", "--phase",
            "decode", "--batch", "8", "--context", "7", "--repeats", "0", "--kv", "int8"]
    assert main(args + ["--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["kv"] == "int8"
    assert out["measured"]["kv_bytes_per_device"] == out["predicted"]["kv_bytes_per_device"] \
        == 2 * 2 * 7 * (8 + 2)  # K and V, 2 layers, 7 positions of one sequence, one head
    assert main(args) == 0
    assert "KV cache held" in capsys.readouterr().out


# ---- the cost model ---------------------------------------------------------------------------
def test_int8_cache_halves_the_decode_steps_kv_reads():
    """Llama 3 70B decode at 32k context: the terms' KV bytes and the KV time in int8 are
    bf16's times (1 + 2/128)/2; nothing else moves."""
    kw = dict(batch=32, tokens=1, context=32_768, hardware="tpu-v5e")
    e = {kv: estimate("llama-3-70b", L_("ws2d", "batch"), (4, 4, 1), kv=kv, **kw)
         for kv in ("bf16", "int8")}
    ratio = (1 + 2 / 128) / 2
    assert e["int8"].terms.kv_bytes == e["bf16"].terms.kv_bytes * ratio
    assert e["int8"].kv_s == pytest.approx(e["bf16"].kv_s * ratio)
    assert e["int8"].weights_s == e["bf16"].weights_s and e["int8"].kv == "int8"
    assert estimate("llama-3-70b", L_("ws2d", "batch"), (4, 4, 1), **kw).kv == "bf16"
    # the decode roofline: one sequence's cache outlasts its FLOPs at about twice the context
    from tpuinfer import theory
    assert theory.kv_bound_context("llama-3-70b", "tpu-v5e", kv="int8") == pytest.approx(
        theory.kv_bound_context("llama-3-70b", "tpu-v5e") / ratio)
    # the f32 engine's default cache is f32; an explicit format overrides it
    t = {kv: step_terms(TINY, L_("ws2d"), (2, 2, 2), batch=8, tokens=1, context=16,
                        act_bytes=4, kv=kv).kv_bytes for kv in (None, "bf16")}
    assert t[None] == 2 * t["bf16"]


def test_table1_lengths_double_with_an_int8_cache():
    """Table 1's rows (PaLM 540B, 64 TPU v4 chips, 30% of HBM): an int8 cache holds bf16's
    context times 2/(1 + 2/D), the scales' overhead (D = 256; the multihead baseline's 128),
    and an fp8 cache twice it, each to within the whole position the lengths round down to."""
    for (variant, batch) in TABLE1:
        d = variant_config("palm-540b", variant).D
        bf16 = max_context("palm-540b", 64, batch, variant)
        int8 = max_context("palm-540b", 64, batch, variant, kv="int8")
        fp8 = max_context("palm-540b", 64, batch, variant, kv="fp8")
        assert abs(int8 - bf16 * 2 / (1 + 2 / d)) <= 2, (variant, batch)
        assert abs(fp8 - 2 * bf16) <= 2
    assert kv_bytes_per_chip("palm-540b", "multihead", 64, 128, 1, kv="int8") == \
        kv_bytes_per_chip("palm-540b", "multihead", 64, 128, 1) * (1 + 2 / 128) / 2


def test_max_context_command_line_takes_the_cache_format(capsys):
    import json
    args = ["max-context", "--model", "palm-540b", "--batch", "512", "--json"]
    assert main(args) == 0
    bf16 = json.loads(capsys.readouterr().out)
    assert main(args + ["--kv", "int8"]) == 0
    int8 = json.loads(capsys.readouterr().out)
    assert (bf16["kv"], int8["kv"]) == ("bf16", "int8")
    assert abs(int8["max_context"] - bf16["max_context"] * 2 / (1 + 2 / 256)) <= 2


def test_fp8_weights_priced_on_chips_that_compute_in_fp8():
    """H100 and H200: fp8 weights one byte a value (and a bf16 scale per output channel, as
    int8's), the weight matmuls at twice the bf16 rate; a chip without fp8 says which have
    it."""
    h100, h200 = get_hardware("h100-sxm"), get_hardware("h200")
    assert h100.fp8_flops == h200.fp8_flops == pytest.approx(2 * h100.peak_flops, rel=1e-3)
    assert h200.peak_flops == h100.peak_flops  # the same GH100 compute
    assert (h200.hbm_bytes, h200.hbm_bandwidth) == (141e9, 4.8e12)
    kw = dict(batch=512, tokens=2048, context=2048, hardware="h100-sxm")
    e = {w: estimate("llama-3-70b", L_("ws2d", "heads"), (1, 2, 4), weights=w, **kw)
         for w in ("bf16", "int8", "fp8")}
    t = e["fp8"].terms
    assert t.stored_weight_bytes == e["int8"].terms.stored_weight_bytes
    assert e["fp8"].compute_s == pytest.approx(
        t.flops / h100.fp8_flops + t.attention_flops / h100.peak_flops)
    assert e["int8"].compute_s == pytest.approx(
        (t.flops + t.attention_flops) / h100.peak_flops)  # int8 is weight-only: bf16 matmuls
    assert ti.MODELS["llama-3-70b"].weight_bytes("fp8") == \
        ti.MODELS["llama-3-70b"].weight_bytes("int8")
    with pytest.raises(UsageError, match=r"tpu-v4 has no fp8 matmul.*h100-sxm, h200"):
        estimate("palm-8b", L_("ws2d"), (2, 2, 2), batch=8, tokens=1, context=8,
                 weights="fp8")
    from tpuinfer.planner import plan
    with pytest.raises(UsageError, match=r"tpu-v5e has no fp8 matmul.*int8 weights"):
        plan("llama-3-8b", "tpu-v5e", 8, 8, weights="fp8")
    # an fp8 cache is storage: one byte a value on any chip
    assert estimate("palm-8b", L_("ws2d", "batch"), (2, 2, 2), batch=8, tokens=1,
                    context=2048, kv="fp8").terms.kv_bytes == estimate(
        "palm-8b", L_("ws2d", "batch"), (2, 2, 2), batch=8, tokens=1, context=2048,
        kv="bf16").terms.kv_bytes / 2


@pytest.mark.slow
def test_demo_runs_with_an_int8_cache(capsys):
    """`tpuinfer demo --kv int8`: the sharded run and the reference hold the same int8 cache,
    and the report says which."""
    import json
    assert main(["demo", "--mesh", "2x2x2", "--batch", "8", "--prompt-len", "4", "--steps",
                 "2", "--prefill", "ws2d", "heads", "--decode", "ws2d", "batch", "--kv",
                 "int8", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["kv"] == "int8" and report["tokens_match"]
    assert all(p["collectives_match"] for p in report["phases"])
