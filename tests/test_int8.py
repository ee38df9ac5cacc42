"""int8 weights: per-output-channel symmetric quantization, scales in bf16 applied after the
matmul; what each device holds, how far the logits move, and the per-layer error."""
import numpy as np
import jax
import pytest

import tpuinfer as ti
from tpuinfer import engine, quality, quant

CFG = ti.MODELS["tiny"]


@pytest.fixture(scope="module")
def params():
    return ti.init_params(CFG, seed=0)


def placed(params, layout, fmt, mesh):
    return engine.place(quant.prepare(params, fmt), mesh, engine.param_specs(CFG, layout, fmt))


def first_shard_bytes(arrays):
    return sum(x.addressable_shards[0].data.nbytes for x in arrays)


@pytest.mark.parametrize("ffn", ["ws2d", "wg-xy"])
def test_int8_weight_bytes_per_device_are_half_of_bf16_plus_scales(params, ffn):
    layout, mesh = ti.Layout(ffn, "heads"), ti.make_mesh((2, 2, 2))
    bf16, int8 = placed(params, layout, "bf16", mesh), placed(params, layout, "int8", mesh)
    is_q = lambda x: isinstance(x, quant.QWeight)
    matrices = [w for w in jax.tree.leaves(int8, is_leaf=is_q) if is_q(w)]
    norms = first_shard_bytes(x for x in jax.tree.leaves(bf16) if x.ndim == 1)
    # every matrix at 1 byte instead of 2; plus one bf16 scale per output channel of the
    # device's own shard; norm scales unchanged
    expected = (engine.local_bytes(bf16) - norms) / 2 + norms + first_shard_bytes(
        w.scale for w in matrices)
    assert engine.local_bytes(int8) == expected
    assert first_shard_bytes(w.q for w in matrices) == (engine.local_bytes(bf16) - norms) / 2
    from tpuinfer.layouts import step_terms
    terms = step_terms(CFG, layout, (2, 2, 2), batch=8, tokens=1, context=8, weights="int8")
    assert terms.stored_weight_bytes == engine.local_bytes(int8)  # the cost model agrees


def test_quantization_error_per_layer_is_bounded(params):
    """Rounding to 255 levels of the channel's largest |w| leaves about 0.7% on Gaussian
    weights; bound every matrix at 1%."""
    errors = quality.matrix_errors(params)
    print("\n".join(f"{k}: {v:.3%}" for k, v in errors.items()))
    assert max(errors.values()) < 0.01
    assert min(errors.values()) > 0.003  # and it is rounding: no matrix comes through exact


def test_int8_on_the_deeper_mini_model():
    """`mini` (8 layers, d_model 512): every matrix's error stays under 1%, and the logits
    move by what that many rounded matrices add up to.

    Measured: 3.7% (relative norm) against the bf16 model, above the issue's 2% target, with
    the top token unchanged at about 95% of positions (bf16 itself moves 3% of them against
    f32). The weights are random Gaussians, where every matrix matters as much to the logits
    as to its own output; round-to-nearest's 0.7% per matrix then adds up as the square root
    of the ~60 matrices a logit passes through. The bound below is the measurement's, with
    margin, so that a real regression (a scale applied twice, a channel off) fails."""
    cfg = ti.MODELS["mini"]
    params = ti.init_params(cfg, seed=0)
    errors = quality.matrix_errors(params)
    print("\n".join(f"{k}: {v:.3%}" for k, v in errors.items()))
    assert len(errors) == 1 + 7 * cfg.n_layers and max(errors.values()) < 0.01
    prompt = np.random.default_rng(0).integers(0, cfg.V, (4, 16))
    diff, agree, *_ = quality.logits_change(params, cfg, prompt)
    print(f"mini: int8 logits {diff:.2%} from bf16; top token agrees at {agree:.0%}")
    assert diff < 0.05 and agree > 0.85


def test_int8_logits_close_to_bf16_on_trained_weights():
    """The int8 issue's target, logits within 2% of bf16's, on the trained tiny model over
    held-out text: measured 0.6% over 32 windows of 64 bytes, with the top token unchanged at
    98.6% of positions (0.6% and 98.8% over the 8 windows here). Its
    held-out perplexity and agreement, the paper's measure: tests/test_trained.py."""
    from tpuinfer import text
    trained = ti.load_params("tiny")
    window_BL = quality.windows(text.split(text.corpus_bytes())[1], quality.SEQ_LEN)[:8, :-1]
    change = quality.logits_change(trained, CFG, window_BL)
    assert change.relative_norm < 0.02 and change.top1_agreement > 0.97, change


def test_int8_logits_on_random_weights_sit_at_the_rounding_floor(params):
    """Random weights: the same 0.7% rounding per matrix moves the logits by 2.5%, above the
    2% target. Each logit passes through 15 matrices whose rounding adds up as independent
    noise (sqrt(15) x 0.7% = 2.7%, and 2.2% against f32 with no bf16 rounding at all), and a
    random model's logits carry no signal for that noise to be small against. Bounded at the
    measurement with margin, so that a real regression (a scale applied twice) fails."""
    prompt = np.random.default_rng(0).integers(0, CFG.V, (8, 16))
    bf16 = ti.generate(params, CFG, prompt, 1, weights="bf16")
    int8 = ti.generate(params, CFG, prompt, 1, weights="int8")
    rel = np.linalg.norm(int8.prefill_logits.astype(np.float32) - bf16.prefill_logits.astype(
        np.float32)) / np.linalg.norm(bf16.prefill_logits.astype(np.float32))
    assert 0.01 < rel < 0.03, rel
    # every layout's int8 run against this int8 reference, by logits and tokens:
    # tests/test_layouts.py::test_weight_format_logits_match_reference


def test_cost_model_int8_versus_bf16_decode_ratio_matches_the_paper():
    """Section 4.4: decode per token at batch 64 on 64 chips, 28.5 ms int8 against 36.9 ms bf16."""
    from tpuinfer.cost import estimate
    kw = dict(batch=64, tokens=1, context=2048, hardware="tpu-v4-calibrated")
    t = {w: estimate("palm-540b-64heads", ti.Layout("ws2d", "batch"), (4, 4, 4), weights=w,
                     **kw).step_s for w in ("int8", "bf16")}
    assert abs((t["int8"] / t["bf16"]) / (28.5 / 36.9) - 1) < 0.10
