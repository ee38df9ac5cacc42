"""Every layout against the unsharded reference, in prefill and decode, on several meshes
(the full 4x8x8 among them); every layout's partition specs pinned."""
import functools
import inspect
import os

import numpy as np
import pytest

import tpuinfer as ti
from tpuinfer.layouts import registry
from tpuinfer.layouts.interface import AttentionLayout, FfnLayout
from tpuinfer.model import QUERY_BLOCK

CFG = ti.MODELS["tiny"]
MESHES = [(2, 2, 2), (1, 4, 2), (4, 8, 8)]  # cubic, non-cubic with a size-1 axis, the full mesh
# test_measure.py reads these steps back from the suite's compilation cache (the same model,
# batch and lengths), so both use the same model on each mesh: tiny, and on the full mesh tiny
# with one layer. Every layer is the same program on the same residual layout (the last
# hands it to the output projection as each hands it to the next), and on 4x8x8 a second
# layer doubled a step's compile, the suite's largest cost.
PROMPT_LEN, STEPS = 4, 3  # prefill, then two decode steps through the cache
FULL = (4, 8, 8)
ONE_LAYER = CFG.replace(name="tiny-1-layer", n_layers=1)


def model_on(shape, cfg=CFG):
    """The model a test runs on this mesh: `cfg`, with one layer on the full mesh."""
    return cfg.replace(name=f"{cfg.name}-1-layer", n_layers=1) if tuple(shape) == FULL else cfg


LAYOUTS = [ti.Layout(f, a) for f in ti.FFN_LAYOUTS for a in ti.ATTENTION_LAYOUTS]


@functools.lru_cache(maxsize=None)
def params():
    return ti.init_params(CFG, seed=0)


@functools.lru_cache(maxsize=None)
def prompt(batch):
    return np.random.default_rng(batch).integers(0, CFG.V, (batch, PROMPT_LEN))


def assert_matches_reference(out, ref):
    # logits within 1e-4 relative (f32): the layouts only reorder sums
    for got, want in [(out.prefill_logits, ref.prefill_logits), (out.step_logits, ref.step_logits)]:
        rel = np.linalg.norm(got - want) / np.linalg.norm(want)
        assert rel < 1e-4, rel
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    # the KV cache equal to f32 rounding, every layer, every position
    for layer_out, layer_ref in zip(out.cache, ref.cache):
        for t in "kv":
            np.testing.assert_allclose(np.asarray(layer_out[t]), np.asarray(layer_ref[t]),
                                       rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(out.tokens, ref.tokens)  # greedy tokens identical


@pytest.mark.slow
@pytest.mark.parametrize("shape", MESHES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("layout", LAYOUTS, ids=str)
def test_layout_matches_reference(layout, shape):
    batch = int(np.prod(shape))  # the smallest batch every layout accepts on this mesh
    check_run(model_on(shape), shape, batch, layout, layout)


@pytest.mark.slow
@pytest.mark.parametrize("prefill, decode", [
    (ti.Layout("ws2d", "heads"), ti.Layout("ws2d", "batch")),  # the paper's low-latency pair
    (ti.Layout("wg-xyz", "batch"), ti.Layout("ws2d", "batch")),  # its high-throughput pair
    (ti.Layout("wg-x", "heads"), ti.Layout("ws1d", "heads")),
], ids=str)
def test_phase_pair_matches_reference(prefill, decode):
    """Prefill and decode in different layouts: generate reshards weights and cache between."""
    check_run(ONE_LAYER, FULL, 256, prefill, decode)


# ---- attention by batch below the chip count, MT-NLG's block, long prompts, sampling --------
MTNLG = ti.MODELS["tiny-mtnlg"]  # serial block, GELU feed-forward, multihead (K = H)
L_ = ti.Layout


@functools.lru_cache(maxsize=None)
def model_params(cfg):
    return params() if cfg == CFG else ti.init_params(cfg, seed=0)


@functools.lru_cache(maxsize=None)
def model_prompt(cfg, batch, length=PROMPT_LEN):
    return np.random.default_rng(batch).integers(0, cfg.V, (batch, length))  # tiny: prompt()


@functools.lru_cache(maxsize=None)
def model_reference(cfg, batch, length=PROMPT_LEN, **sampling):
    return ti.generate(model_params(cfg), cfg, model_prompt(cfg, batch, length), STEPS,
                       **sampling)


def check_run(cfg, shape, batch, prefill, decode, length=PROMPT_LEN, **sampling):
    out = ti.generate(model_params(cfg), cfg, model_prompt(cfg, batch, length), STEPS,
                      mesh=ti.make_mesh(shape), prefill=prefill, decode=decode, **sampling)
    assert_matches_reference(out, model_reference(cfg, batch, length, **sampling))
    return out


# (shape, batch, prefill, decode): the batch takes the longest suffix of the heads axes h
# that divides B/|b| (attn_batch.split); the comment names it, g, and what stays, r
SMALL_BATCH = [
    ((2, 2, 2), 4, L_("ws2d", "batch"), L_("ws2d", "batch")),  # h = z·y·x: g = y·x, r = z
    ((2, 2, 2), 2, L_("ws1d", "batch"), L_("ws1d", "batch")),  # h = x·y·z: g = z
    ((1, 4, 2), 4, L_("wg-x", "batch"), L_("wg-x", "batch")),  # b = x, h = z·y: g = y
    ((4, 8, 8), 16, L_("ws2d", "heads"), L_("ws2d", "batch")),  # the paper's pair: g = x
]


@pytest.mark.slow
@pytest.mark.parametrize("shape, batch, prefill, decode", SMALL_BATCH,
                         ids=[f"{'x'.join(map(str, s))}-B{b}-{p}-{d}"
                              for s, b, p, d in SMALL_BATCH])
def test_small_batch_attention_matches_reference(shape, batch, prefill, decode):
    check_run(model_on(shape), shape, batch, prefill, decode)


# MT-NLG's shape: every layout on every mesh, each in one phase of a pair, so that each
# compiles once per mesh; on 2x2x2 the pairs run one way, on 1x4x2 the other (every layout
# in both phases); on 4x8x8 the decode layouts split the batch below the chip count.
PAIRS = [(L_("ws1d", "heads"), L_("ws2d", "batch")), (L_("ws2d", "heads"), L_("ws1d", "batch")),
         (L_("wg-x", "heads"), L_("wg-xy", "batch")), (L_("wg-xy", "heads"), L_("wg-x", "batch")),
         (L_("wg-xyz", "heads"), L_("wg-xyz", "batch"))]
MTNLG_RUNS = ([((2, 2, 2), 8, p, d) for p, d in PAIRS] + [((1, 4, 2), 8, d, p) for p, d in PAIRS]
              + [((4, 8, 8), b, p, d) for b, (p, d) in zip((32, 64, 256, 32, 256), PAIRS)])


@pytest.mark.slow
@pytest.mark.parametrize("shape, batch, prefill, decode", MTNLG_RUNS,
                         ids=[f"{'x'.join(map(str, s))}-B{b}-{p}-{d}"
                              for s, b, p, d in MTNLG_RUNS])
def test_mtnlg_shape_matches_reference(shape, batch, prefill, decode):
    """4x8x8: ws2d/batch at B=32 takes g = y·x (multihead K, V cached over r = z), ws1d/batch
    at B=64 g = y·z, wg-x/batch at B=32 g = y."""
    check_run(model_on(shape, MTNLG), shape, batch, prefill, decode)


# Prompts longer than one block of queries (model.QUERY_BLOCK): two blocks, on two meshes,
# by heads and by batch. Few heads and a small batch: the f32 scores of 520 queries are the
# cost here (the unsharded reference holds a block's scores for every head).
TINY8 = CFG.replace(name="tiny-8-heads", n_heads=8)
LONG_RUNS = [
    ((2, 2, 2), 2, TINY8, L_("ws2d", "batch"), L_("ws1d", "heads")),  # g = x
    ((2, 2, 2), 2, MTNLG.replace(name="tiny-mtnlg-8-heads", n_heads=8, n_kv_heads=8),
     L_("ws1d", "heads"), L_("ws2d", "batch")),
    ((1, 4, 2), 4, TINY8, L_("ws1d", "heads"), L_("ws2d", "batch")),  # g = y·x, r = z
    # the full mesh: tiny's 256 heads, one per chip; one sequence, as a long prompt is served
    ((4, 8, 8), 1, ONE_LAYER, L_("ws2d", "heads"), L_("ws1d", "heads")),
]


@pytest.mark.slow
@pytest.mark.parametrize("shape, batch, cfg, prefill, decode", LONG_RUNS,
                         ids=[f"{'x'.join(map(str, s))}-{c.name}-{p}-{d}"
                              for s, b, c, p, d in LONG_RUNS])
def test_prompt_longer_than_the_query_block_matches_reference(shape, batch, cfg, prefill,
                                                              decode):
    check_run(cfg, shape, batch, prefill, decode, length=QUERY_BLOCK + 8)


@pytest.mark.slow
@pytest.mark.parametrize("shape, batch", [((2, 2, 2), 8), ((1, 4, 2), 8), ((4, 8, 8), 256)],
                         ids=["2x2x2", "1x4x2", "4x8x8"])
def test_sampling_on_a_mesh_matches_reference(shape, batch):
    """The same key, temperature and top-k give the reference's tokens."""
    layout, cfg = L_("ws2d", "batch"), model_on(shape)
    out = check_run(cfg, shape, batch, layout, layout, temperature=0.8, top_k=20, seed=3)
    assert (out.tokens != model_reference(cfg, batch).tokens).any()  # sampled, not greedy


# bf16 and int8 (bf16 activations) against the reference in the same format, by logits: the
# layouts reorder sums of bf16 products, so logits move by bf16 rounding, not by 1e-4.
# Measured on 2x2x2 (relative norm): at most 1.2% in bf16 and in int8, every layout, for the
# prompt's logits and for every decode step of a sequence whose tokens stayed the reference's.
# The random tiny model's top two logits lie as close as one bf16 rounding (0.03), so a
# rounding can flip a greedy choice, after which that sequence follows another prefix: in
# bf16 1 sequence of 8 (wg-x, wg-xy), in int8 up to 2 (ws2d). At most half may differ.
FORMAT_TOLERANCE = {"bf16": 0.02, "int8": 0.02}


@functools.lru_cache(maxsize=None)
def reference_in(weights, batch, cfg=CFG):
    return ti.generate(model_params(cfg), cfg, prompt(batch), STEPS, weights=weights)


# Every feed-forward layout in both formats: on 2x2x2 each in both phases (attention by heads
# in prefill, by batch in decode); on 1x4x2 each in one phase of a pair, so that each layout
# compiles once per format; on 4x8x8 the paper's two pairs (below).
FORMAT_PAIRS = [(L_("ws1d", "heads"), L_("ws2d", "batch")),
                (L_("wg-x", "heads"), L_("wg-xy", "batch")),
                (L_("wg-xyz", "heads"), L_("ws1d", "batch"))]
FORMAT_RUNS = ([((2, 2, 2), 8, L_(f, "heads"), L_(f, "batch")) for f in ti.FFN_LAYOUTS]
               + [((1, 4, 2), 8, p, d) for p, d in FORMAT_PAIRS])
# On 4x8x8 (one layer, as above), every feed-forward layout in each format: the paper's two
# pairs first, each in the format it ran it in (its Table 2: the low-latency pair in bf16,
# the high-throughput pair in int8), then pairs that run every other layout in both formats.
FULL_MESH_FORMAT_RUNS = [("bf16", L_("ws2d", "heads"), L_("ws2d", "batch")),
                         ("int8", L_("wg-xyz", "batch"), L_("ws2d", "batch")),
                         ("bf16", L_("ws1d", "heads"), L_("wg-x", "batch")),
                         ("bf16", L_("wg-xy", "heads"), L_("wg-xyz", "batch")),
                         ("int8", L_("wg-x", "heads"), L_("ws1d", "batch")),
                         ("int8", L_("wg-xy", "heads"), L_("wg-xy", "batch"))]


@pytest.mark.slow
@pytest.mark.parametrize("weights", list(FORMAT_TOLERANCE))
@pytest.mark.parametrize("shape, batch, prefill, decode", FORMAT_RUNS,
                         ids=[f"{'x'.join(map(str, s))}-{p}-{d}" for s, b, p, d in FORMAT_RUNS])
def test_weight_format_logits_match_reference(shape, batch, prefill, decode, weights):
    check_format_run(shape, batch, prefill, decode, weights)


@pytest.mark.slow
@pytest.mark.parametrize("weights, prefill, decode", FULL_MESH_FORMAT_RUNS,
                         ids=[f"4x8x8-{w}-{p}-{d}" for w, p, d in FULL_MESH_FORMAT_RUNS])
def test_weight_format_logits_match_reference_on_the_full_mesh(weights, prefill, decode):
    check_format_run((4, 8, 8), 256, prefill, decode, weights, ONE_LAYER)


def check_format_run(shape, batch, prefill, decode, weights, cfg=CFG):
    out = ti.generate(model_params(cfg), cfg, prompt(batch), STEPS, mesh=ti.make_mesh(shape),
                      prefill=prefill, decode=decode, weights=weights)
    ref = reference_in(weights, batch, cfg)
    same = (out.tokens == ref.tokens).all(axis=1)  # sequences that kept the reference's tokens
    assert same.mean() >= 0.5, out.tokens != ref.tokens
    for got, want in [(out.prefill_logits, ref.prefill_logits),
                      (out.step_logits[same], ref.step_logits[same])]:
        got, want = np.asarray(got, np.float32), np.asarray(want, np.float32)
        rel = np.linalg.norm(got - want) / np.linalg.norm(want)
        assert rel < FORMAT_TOLERANCE[weights], (prefill, decode, weights, rel)


# ---- partition specs, pinned ---------------------------------------------------------------
XYZ, ZY = ("x", "y", "z"), ("z", "y")
STORED_2D = {"w_q": ("x", ZY, None), "w_k": ("x", None, None), "w_v": ("x", None, None),
             "w_o": (ZY, None, "x"), "w_gate": ("x", ZY), "w_up": ("x", ZY),
             "w_down": (ZY, "x")}
SPECS = {
    "ws1d": ({"w_q": (None, XYZ, None), "w_k": (), "w_v": (), "w_o": (XYZ, None, None),
              "w_gate": (None, XYZ), "w_up": (None, XYZ), "w_down": (XYZ, None),
              "norm": ()}, (None, XYZ)),
    "ws2d": (STORED_2D | {"norm": ("x",)}, (None, XYZ)),
    # the table split over every chip: E over the residual's axes, then the gathered ones
    "wg-x": (STORED_2D | {"norm": ()}, (None, ("z", "y", "x"))),
    "wg-xy": (STORED_2D | {"norm": ()}, (None, ("z", "x", "y"))),
    "wg-xyz": (STORED_2D | {"norm": ()}, (None, XYZ)),
}
CACHE = {  # (heads, batch) cache specs of [B, S, K, D] on 4x8x8, batch 256
    "ws1d": ((None, None, None, None), (XYZ, None, None, None)),
    "ws2d": ((None, None, None, None), (("z", "y", "x"), None, None, None)),
    "wg-x": ((("x",), None, None, None), (("x", "z", "y"), None, None, None)),
    "wg-xy": ((("x", "y"), None, None, None), (("x", "y", "z"), None, None, None)),
    "wg-xyz": ((XYZ, None, None, None), (XYZ, None, None, None)),
}
# Attention by batch below the chip count on 4x8x8: the batch takes the longest suffix of the
# heads axes that divides B/|b|; multihead K stays split over the rest.
SMALL_BATCH_CACHE = {  # (ffn, batch, multihead) -> spec
    ("ws2d", 16, False): (("x",), None, None, None),  # h = z·y·x = 8·8·4: x divides 16
    ("ws2d", 32, False): (("y", "x"), None, None, None),
    ("ws2d", 32, True): (("y", "x"), None, ("z",), None),
    ("ws1d", 64, True): (("y", "z"), None, ("x",), None),  # h = x·y·z
    ("wg-x", 32, False): (("x", "y"), None, None, None),  # b = x, h = z·y; B/|b| = 8
}


@pytest.mark.parametrize("ffn", ti.FFN_LAYOUTS)
def test_partition_specs_are_pinned(ffn):
    layer, embed = SPECS[ffn]
    specs = registry.param_specs(CFG, ti.Layout(ffn, "heads"))
    assert specs["layers"][0] == layer
    assert specs["embed"] == embed
    heads, batch = CACHE[ffn]
    assert registry.cache_specs(CFG, ti.Layout(ffn, "heads"), (4, 8, 8), 256)[0]["k"] == heads
    assert registry.cache_specs(CFG, ti.Layout(ffn, "batch"), (4, 8, 8), 256)[0]["k"] == batch


@pytest.mark.parametrize("ffn, batch, multihead", list(SMALL_BATCH_CACHE))
def test_small_batch_cache_specs_are_pinned(ffn, batch, multihead):
    cfg = ti.MODELS["tiny-mtnlg" if multihead else "tiny"]
    spec = registry.cache_specs(cfg, ti.Layout(ffn, "batch"), (4, 8, 8), batch)[0]["k"]
    assert spec == SMALL_BATCH_CACHE[ffn, batch, multihead]


def _members(protocol) -> dict:
    """What `protocol` asks for: each method's parameters (without self), each attribute's type."""
    methods = {n: list(inspect.signature(f).parameters)[1:] for n, f in vars(protocol).items()
               if inspect.isfunction(f) and not n.startswith("_")}
    return methods | {n: t for n, t in protocol.__annotations__.items()}


@pytest.mark.parametrize("registered, protocol", [(registry.FFN, FfnLayout),
                                                  (registry.ATTENTION, AttentionLayout)])
def test_every_registered_layout_meets_the_interface(registered, protocol):
    """Each layout module defines every name of its interface, methods with the interface's
    parameters (one context object each), under the name it is registered by."""
    assert set(registered) == set(ti.FFN_LAYOUTS + ti.EXPERT_LAYOUTS if protocol is FfnLayout
                                  else ti.ATTENTION_LAYOUTS)
    for name, module in registered.items():
        assert isinstance(module, protocol), name
        assert module.NAME == name
        for member, want in _members(protocol).items():
            got = getattr(module, member)
            if isinstance(want, list):
                assert list(inspect.signature(got).parameters) == want, (name, member)
            else:
                assert not callable(got), (name, member)


# ---- bad input -----------------------------------------------------------------------------
def test_mesh_that_does_not_divide_names_dimension_axes_and_padding():
    with pytest.raises(ValueError, match=r"E=256 does not divide by X·Y·Z=3 on mesh 3x1x1"):
        ti.generate(params(), CFG, prompt(3), 1, mesh=ti.make_mesh((3, 1, 1)))
    from tpuinfer.layouts import step_terms
    with pytest.raises(ValueError, match=r"H=48 does not divide by X·Y·Z=64 on mesh 4x4x4.*"
                                         r"pad the heads.*palm-540b-64heads"):
        step_terms(ti.MODELS["palm-540b"], ti.Layout("ws2d", "heads"), (4, 4, 4), batch=64,
                   tokens=1, context=2048)


def test_batch_smaller_than_its_sharding_says_what_would_work():
    with pytest.raises(ValueError, match=r"batch B=3 cannot be split over x=2 chips.*use a "
                                         r"batch of 2, 4"):
        ti.generate(params(), CFG, prompt(3), 1, mesh=ti.make_mesh((2, 2, 2)),
                    prefill=ti.Layout("ws2d", "heads"), decode=ti.Layout("ws2d", "batch"))


def test_unknown_layout_names_the_choices():
    with pytest.raises(ValueError, match="unknown feed-forward layout 'ws3d'.*ws1d, ws2d"):
        ti.Layout("ws3d", "heads")
    with pytest.raises(ValueError, match="unknown attention layout 'rows'.*heads, batch"):
        ti.Layout("ws2d", "rows")


def test_mesh_larger_than_the_emulated_devices():
    with pytest.raises(ValueError, match=r"mesh 8x8x8 needs 512 devices but JAX has 256.*"
                                         r"emulate\(512\)"):
        ti.make_mesh((8, 8, 8))


def test_emulate_after_the_backend_started_says_restart():
    assert ti.emulate(256) == 256  # the count it already has: a no-op
    with pytest.raises(ti.EmulationError, match="already started with 256.*Restart the kernel"):
        ti.emulate(128)


def test_emulate_adds_its_xla_cpu_flags_unless_xla_flags_names_them(monkeypatch):
    from tpuinfer import mesh
    monkeypatch.setenv("XLA_FLAGS", "--xla_backend_optimization_level=0")
    ti.emulate(256)  # the backend has started: the flags still go to processes started later
    assert os.environ["XLA_FLAGS"].split() == ["--xla_backend_optimization_level=0",
                                               *mesh.CPU_FLAGS]
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_use_fusion_emitters=true")  # the user's choice
    ti.emulate(256)
    assert os.environ["XLA_FLAGS"] == "--xla_cpu_use_fusion_emitters=true"
    monkeypatch.delenv("XLA_FLAGS")
    ti.emulate(256)
    assert os.environ["XLA_FLAGS"].split() == list(mesh.CPU_FLAGS)
