"""Looped CollectiveEinsum: the looped schedule of every layout equals the plain one, and its
terms replace all-gathers and reduce-scatters by collective permutes round the ring."""
import functools

import numpy as np
import pytest

import tpuinfer as ti
from tpuinfer.layouts import step_terms

CFG = ti.MODELS["tiny"]
# On the full mesh, one layer: the same rings of 64 chips as every layer of tiny, in half the
# compile (each layer's 63 permutes each way compiled for 50 s a phase on 2 cores);
# test_measure.py reads these steps back
ONE_LAYER = CFG.replace(name="tiny-1-layer", n_layers=1)


@functools.lru_cache(maxsize=None)
def run(layout, shape, cfg=CFG):
    params = ti.init_params(cfg, seed=0)
    batch = int(np.prod(shape))
    prompt = np.random.default_rng(batch).integers(0, cfg.V, (batch, 4))
    return ti.generate(params, cfg, prompt, 3, mesh=ti.make_mesh(shape), prefill=layout,
                       decode=layout)


def assert_same(looped, plain):
    for got, want in [(looped.prefill_logits, plain.prefill_logits),
                      (looped.step_logits, plain.step_logits)]:
        assert np.linalg.norm(got - want) / np.linalg.norm(want) < 1e-5
    np.testing.assert_array_equal(looped.tokens, plain.tokens)


CASES = [(f, "heads", False, s) for f in ti.FFN_LAYOUTS for s in [(2, 2, 2), (1, 4, 2)]] + [
    ("ws2d", "batch", False, (2, 2, 2)), ("wg-xy", "batch", False, (2, 2, 2)),
    ("ws1d", "heads", True, (2, 2, 2)), ("ws2d", "batch", True, (2, 2, 2)),
    ("ws2d", "heads", True, (1, 4, 2))]


@pytest.mark.slow
@pytest.mark.parametrize("ffn, attention, bidirectional, shape", CASES,
                         ids=lambda v: "x".join(map(str, v)) if isinstance(v, tuple) else str(v))
def test_looped_matches_plain(ffn, attention, bidirectional, shape):
    looped = ti.Layout(ffn, attention, looped=True, bidirectional=bidirectional)
    assert_same(run(looped, shape), run(ti.Layout(ffn, attention), shape))


@pytest.mark.slow
def test_looped_ws2d_on_the_full_mesh_matches_plain():
    shape = (4, 8, 8)  # rings of 64 chips over yz: 63 permutes each way per layer
    assert_same(run(ti.Layout("ws2d", "heads", looped=True), shape, ONE_LAYER),
                run(ti.Layout("ws2d", "heads"), shape, ONE_LAYER))


def kinds(layout, shape=(2, 2, 2)):
    terms = step_terms(CFG, layout, shape, batch=8, tokens=4, context=8, weights="f32",
                       act_bytes=4)
    return {(c.kind, c.axes, c.count, c.bytes) for c in terms.collectives}


def test_looped_ws2d_trades_yz_all_gather_and_reduce_scatter_for_permutes():
    plain, looped = kinds(ti.Layout("ws2d")), kinds(ti.Layout("ws2d", looped=True))
    # B·L·E/X = 8·4·128 f32 = 16384 bytes gathered over yz, twice (2 layers)
    assert ("all-gather", ("y", "z"), 2, 16384.0) in plain
    assert ("reduce-scatter", ("y", "z"), 2, 16384.0) in plain
    # looped: a ring of YZ=4 chips: 3 permutes of one chip's BLE_xyz chunk (4096 bytes) per
    # layer, for the all-gather and again for the reduce-scatter
    assert {k for k in looped if k[0] == "collective-permute"} == {
        ("collective-permute", ("y", "z"), 6, 4096.0)}
    assert not any(k[0] in ("all-gather", "reduce-scatter") and k[1] == ("y", "z")
                   for k in looped)
    both = kinds(ti.Layout("ws2d", looped=True, bidirectional=True))
    assert ("collective-permute", ("y", "z"), 12, 2048.0) in both  # halves, both directions


def test_looped_weight_gathered_moves_weights_round_the_ring():
    looped = kinds(ti.Layout("wg-xyz", "heads", looped=True))
    # w_q, stored E_xH_yzD: one chip's chunk 128·64·8 f32 = 262144 bytes (w_o alike), moved
    # 7 times per layer round the ring of all 8 chips
    assert ("collective-permute", ("x", "y", "z"), 14, 262144.0) in looped
    # the only all-gather: the token ids of the whole batch (8·4 s32), for the embedding
    # lookup (the table is split over every chip and never moves)
    assert {k for k in looped if k[0] == "all-gather"} == {
        ("all-gather", ("x", "y", "z"), 1, 128.0)}


def test_bidirectional_needs_even_halves_and_an_activation_ring():
    with pytest.raises(ValueError, match=r"E/256=1 columns in halves"):
        step_terms(CFG, ti.Layout("ws2d", looped=True, bidirectional=True), (4, 8, 8),
                   batch=256, tokens=1, context=8)
    with pytest.raises(ValueError, match="wg-x loops its weights round the ring one way"):
        step_terms(CFG, ti.Layout("wg-x", looped=True, bidirectional=True), (2, 2, 2),
                   batch=8, tokens=1, context=8)
    with pytest.raises(ValueError, match="bidirectional=True needs looped=True"):
        ti.Layout("ws2d", bidirectional=True)
