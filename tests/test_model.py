"""The configs' counts and the unsharded reference model."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tpuinfer as ti
from tpuinfer import model
from tpuinfer.shapes import param_shapes


def test_tiny_param_count_matches_initialised_params():
    cfg = ti.MODELS["tiny"]
    params = ti.init_params(cfg, seed=0)
    assert sum(x.size for x in jax.tree.leaves(params)) == cfg.n_params() == 3_810_048


@pytest.mark.parametrize("name, expected", [("palm-8b", 8.6e9), ("palm-62b", 62.5e9),
                                            ("palm-540b", 540e9)])
def test_palm_param_counts_within_one_percent(name, expected):
    assert abs(ti.MODELS[name].n_params() / expected - 1) < 0.01


def test_mt_nlg_is_multihead_serial_and_about_530b():
    cfg = ti.MODELS["mt-nlg-530b"]
    assert not cfg.multiquery and not cfg.parallel_block and not cfg.gated_ffn
    assert abs(cfg.n_params() / 530e9 - 1) < 0.01


def test_64_head_palm_adds_about_18b_params():
    extra = ti.MODELS["palm-540b-64heads"].n_params() - ti.MODELS["palm-540b"].n_params()
    assert 17e9 < extra < 19e9  # Section 4.4: "about 18B more parameters"


@pytest.mark.parametrize("name", list(ti.MODELS))
def test_flops_per_token_is_twice_the_weight_matmul_elements(name):
    """An independent count: walk the parameter shapes, keep the matrices (not norms); of a
    mixture of experts' experts, a token multiplies by the k of M it is routed to."""
    cfg = ti.MODELS[name]
    shapes = param_shapes(cfg)
    def used(name, shape):  # an expert matrix is [M, ...]: k of its M slices
        n = int(np.prod(shape))
        return n // cfg.n_experts * cfg.top_k if name.startswith("w_expert") else n
    elements = sum(used(n, s) for layer in shapes["layers"] for n, s in layer.items()
                   if "norm" not in n) + int(np.prod(shapes["embed"]))
    assert cfg.flops_per_token() == 2 * elements


def test_kv_bytes_multiquery_vs_multihead():
    cfg = ti.MODELS["palm-540b"]
    # 2 tensors · 118 layers · K=1 · D=256 · 2 bytes = 120,832 bytes per token
    assert cfg.kv_bytes_per_token() == 120_832
    mh = cfg.replace(n_kv_heads=cfg.H)
    assert mh.kv_bytes(8, 2048) == 48 * cfg.kv_bytes(8, 2048)


def test_unknown_model_names_the_choices():
    with pytest.raises(ValueError, match="unknown model 'gpt-5'.*tiny.*palm-540b"):
        ti.get_model("gpt-5")


def _prompt(cfg, B=4, L=6, seed=1):
    return np.random.default_rng(seed).integers(0, cfg.V, (B, L))


def test_decode_with_cache_matches_prefill_of_the_longer_sequence():
    """The KV cache is right: decoding token t against the cache gives the logits a prefill of
    the whole sequence gives at position t."""
    cfg = ti.MODELS["tiny"]
    params = ti.init_params(cfg, seed=0)
    prompt = _prompt(cfg)
    out = ti.generate(params, cfg, prompt, steps=4)
    full = np.concatenate([prompt, out.tokens[:, :3]], axis=1)  # every token fed back in
    cache = model.init_cache(cfg, full.shape[0], full.shape[1])
    logits, _ = model.forward(params, cfg, jnp.asarray(full), cache, 0)
    L = prompt.shape[1]
    np.testing.assert_allclose(out.step_logits, np.asarray(logits)[:, L - 1:], rtol=1e-4,
                               atol=1e-5)


def test_serial_multihead_block_runs_and_caches():
    cfg = ti.ModelConfig("serial-mh", 2, 64, 256, 4, 16, 4, 128, parallel_block=False,
                         gated_ffn=False)
    params = ti.init_params(cfg, seed=0)
    out = ti.generate(params, cfg, _prompt(cfg), steps=3)
    assert out.tokens.shape == (4, 3)
    assert out.cache[0]["k"].shape == (4, 9, 4, 16)


def test_greedy_picks_the_argmax_and_sampling_is_seeded():
    cfg = ti.MODELS["tiny"]
    params = ti.init_params(cfg, seed=0)
    prompt = _prompt(cfg)
    greedy = ti.generate(params, cfg, prompt, steps=3)
    assert (greedy.tokens == greedy.step_logits.argmax(-1)).all()
    a = ti.generate(params, cfg, prompt, steps=5, temperature=1.0, seed=7)
    b = ti.generate(params, cfg, prompt, steps=5, temperature=1.0, seed=7)
    c = ti.generate(params, cfg, prompt, steps=5, temperature=1.0, seed=8)
    assert (a.tokens == b.tokens).all() and not (a.tokens == c.tokens).all()


def test_bf16_is_selectable_and_close_to_f32():
    cfg = ti.MODELS["tiny"]
    params = ti.init_params(cfg, seed=0)
    prompt = _prompt(cfg)
    f32 = ti.generate(params, cfg, prompt, steps=1)
    bf16 = ti.generate(params, cfg, prompt, steps=1, weights="bf16")
    assert bf16.prefill_logits.dtype == np.dtype(jnp.bfloat16)
    rel = np.linalg.norm(bf16.prefill_logits.astype(np.float32) - f32.prefill_logits) \
        / np.linalg.norm(f32.prefill_logits)
    assert rel < 0.03


def test_bad_prompts_are_refused():
    cfg = ti.MODELS["tiny"]
    params = ti.init_params(cfg, seed=0)
    with pytest.raises(ValueError, match=r"\[0, 512\)"):
        ti.generate(params, cfg, np.full((2, 3), 600), steps=1)
    with pytest.raises(ValueError, match="batch, length"):
        ti.generate(params, cfg, np.zeros(5, int), steps=1)
