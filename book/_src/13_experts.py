# ---
# jupyter:
#   jupytext:
#     formats: ipynb,_src//py:percent
# ---

# %% [markdown]
# # 13 · Experts
#
# Most large models served today are not dense. Mixtral 8x7B, Qwen3's MoE models, DeepSeek-V3
# and Llama 4 replace each feed-forward block by a **mixture of experts**: a router sends
# every token to k of M feed-forward blocks (its experts), so a token multiplies by a small
# share of the weights while the model holds all of them. The paper's reasoning still holds:
# a step costs its FLOPs, the weights it reads and the bytes it moves (Section 2), and a
# layout is chosen by which of them it trades (Section 3). What changes is which weights a
# step reads, and a new collective: tokens travel to their experts and back, two all-to-alls
# per layer.
#
# **After this chapter you can** count a mixture of experts' total and active parameters;
# state the capacity rule and say which tokens it drops; lay experts out over a mesh with
# expert parallelism and tensor parallelism and predict each layer's all-to-alls byte for
# byte; derive how many distinct experts a batch touches, and from it the batch at which an
# MoE decode reads every expert and the batch at which it turns compute-bound; and read the
# planner's choice of an expert-parallel degree per phase. (Paper: [Sections 2 and 3](
# https://arxiv.org/abs/2211.05102); experts and capacity: GShard, [arXiv 2006.16668](
# https://arxiv.org/abs/2006.16668), Section 2.2; the Switch Transformer, [arXiv 2101.03961](
# https://arxiv.org/abs/2101.03961), Section 2.2; Mixtral, [arXiv 2401.04088](
# https://arxiv.org/abs/2401.04088); Qwen3, [arXiv 2505.09388](
# https://arxiv.org/abs/2505.09388).)

# %%
import tpuinfer as ti
ti.emulate(256)

# %%
import inspect

import jax.numpy as jnp
import numpy as np
import plotly.graph_objects as go
from jax.sharding import PartitionSpec as P

import booktools as bt
from tpuinfer import experts, model, moe, planner, theory
from tpuinfer.errors import UsageError
from tpuinfer.hardware import chip_counts, get_hardware
from tpuinfer.layouts import _experts, registry
from tpuinfer.measure import measure

# %% [markdown]
# ## The models
#
# Each preset's numbers carry their source in `tpuinfer/config.py` (the model cards'
# `config.json`). F is each expert's hidden size; a token goes through k of the M experts of
# every layer. Total and active parameters come from the one table of shapes
# (`tpuinfer/shapes.py`): active is all of them but the M − k experts a token skips in each
# layer (`ModelConfig.n_active_params`). The cards say 46.7B and 12.9B (Mixtral), 30.5B and
# 3.3B (Qwen3-30B-A3B), 235B and 22B (Qwen3-235B-A22B).

# %%
# NBVAL_CHECK_OUTPUT
def count(n):
    return f"{n / 1e9:.3f}B" if n >= 1e9 else f"{n / 1e6:.2f}M"


rows = []
for name in ("tiny-moe", "mixtral-8x7b", "qwen3-30b-a3b", "qwen3-235b-a22b"):
    c = ti.MODELS[name]
    rows.append([name, c.n_layers, c.E, c.M, c.top_k, c.F, c.U or "-", count(c.n_params()),
                 count(c.n_active_params()), f"{c.n_params() / c.n_active_params():.1f}"])
print(bt.table(["model", "layers", "E", "experts M", "k", "expert F", "shared U", "total",
                "active", "total/active"], rows))

# %% [markdown]
# Mixtral reads 3.6 times the weights it multiplies by, Qwen3 9 to 11 times. Our count of
# Qwen3-30B-A3B's active parameters, 3.353B, sits above the card's 3.3B: the card rounds it
# down (its total, 30.5B, and its total without embeddings, 29.9B, agree with ours to 0.1%).
# tiny-moe has 256 experts (as DeepSeek-V3 has), so that the full 4×8×8 mesh holds one on
# each chip, and one shared expert that every token goes through. Not here: DeepSeek-V3
# itself, whose multi-head latent attention the library does not implement.
#
# ## The block
#
# The reference model (`tpuinfer.model`) runs the mixture in four steps
# (`tpuinfer.moe`): route each token to its k experts, dispatch each route's token into a
# buffer of slots per expert, run every expert on its slots, and combine each token's k
# outputs, weighted by the router:

# %%
print(inspect.getsource(model._mixture))

# %%
print(inspect.getsource(moe.route))

# %% [markdown]
# Static shapes need a fixed number of slots per expert, so that a step compiles once. The
# capacity rule (`tpuinfer.experts.capacity`, the one place it is written) gives each expert
# C = min(L, max(1, ⌈1.25·L·k/M⌉)) slots per sequence of L tokens; a sequence's routes queue
# at their experts in token order, and those past C are **dropped**: that token gets nothing
# from that expert (its other experts, the shared ones and the residual still reach it).
# GShard and the Switch Transformer drop tokens over capacity in the same way; counting the
# queue per sequence is MaxText's dropping path, and makes the dropped routes a property of
# the batch, not of how a layout places it. C for the presets:

# %%
# NBVAL_CHECK_OUTPUT
rows = [[name] + [ti.MODELS[name].capacity(L) for L in (1, 16, 512, 2048)]
        for name in ("tiny-moe", "mixtral-8x7b", "qwen3-30b-a3b", "qwen3-235b-a22b")]
print(bt.table(["model", "C at L = 1", "L = 16", "L = 512", "L = 2,048"], rows))

# %% [markdown]
# In decode (L = 1) C is 1: a token's k experts are distinct, so nothing is ever dropped, but
# every sequence carries a slot at every expert, M slots for its k routes. We come back to
# that price below.
#
# **Exercise 13.1 · Derive.** How many slots C does each of Qwen3-235B-A22B's experts get
# for a prefill of 1,000 tokens a sequence (128 experts, 8 a token)?

# %%
answer_1 = 79

# %%
# NBVAL_CHECK_OUTPUT
bt.check("13.1", answer_1)

# %% [markdown]
#
# Drops by hand: a router of zeros gives every expert the same score, and top-k breaks the
# tie towards the lowest experts, so every token goes to experts 0 and 1, each weighted 1/2.
# A prompt of 4 tokens sends 4 routes to each; C = 1 keeps one: 6 routes dropped a sequence
# a layer, 12 over tiny-moe's two layers. `generate` returns the drops per phase and
# sequence:

# %%
cfg = ti.MODELS["tiny-moe"]
params = ti.init_params(cfg, seed=0)
zero_router = {**params, "layers": [w | {"w_router": jnp.zeros_like(w["w_router"])}
                                    for w in params["layers"]]}
prompt_BL = np.random.default_rng(0).integers(0, cfg.V, (8, 4))

# %%
# NBVAL_CHECK_OUTPUT
out = ti.generate(zero_router, cfg, prompt_BL[:2], steps=2)
print("dropped in prefill, per sequence:", out.dropped["prefill"].tolist())
print("dropped in decode, per sequence: ", out.dropped["decode"].tolist())

# %% [markdown]
# **Exercise 13.2 · Predict, then run.** With the same router of zeros, a sequence whose
# prompt has 8 tokens: how many routes will tiny-moe drop in its prefill, both layers
# together? Mind what the capacity rule gives for 8 tokens. The cell after your answer runs
# it.

# %%
answer_2 = 28

# %%
eight = ti.generate(zero_router, cfg, prompt_BL[:1, :1].repeat(8, axis=1), steps=1)
print("dropped in prefill:", int(eight.dropped["prefill"][0]))

# %%
# NBVAL_CHECK_OUTPUT
bt.check("13.2", answer_2)

# %% [markdown]
# ## Experts on the mesh
#
# An expert-parallel layout splits the chips into **expert axes** e, over which the experts
# split (each chip holds M/|e| of them), and **tensor axes** t, the rest, over which every
# expert's F splits (and attention's heads, as in 1D weight-stationary). Each group of e runs
# its own sequences. Three layouts, named by their expert axes: `ep-x` (experts over x,
# tensor-parallel over y·z), `ep-xy` (over x·y, tensor over z) and `ep-xyz` (over every chip,
# no tensor parallelism). Their shared body, `tpuinfer/layouts/_experts.py`, in its own
# words:

# %%
print(_experts.__doc__)

# %% [markdown]
# The specs of one layer of tiny-moe under `ep-x` (`registry.param_specs`): the experts
# `M_xEF_yz`, the router whole on every chip, attention and the shared expert split over y·z:

# %%
# NBVAL_CHECK_OUTPUT
for name, spec in sorted(registry.param_specs(cfg, ti.Layout("ep-x"), mesh_shape=(2, 2, 2))
                         ["layers"][0].items()):
    print(f"{name:15s} {str(P(*spec))}")

# %% [markdown]
# A real run on 2×2×2: prefill in `ep-x` with attention by heads, decode in `ep-xyz` with
# attention by batch (generate moves the weights between them), against the unsharded
# reference. The tokens and the dropped routes are the same; the logits differ only by the
# order of f32 sums:

# %%
mesh = ti.make_mesh((2, 2, 2))
ref = ti.generate(params, cfg, prompt_BL, steps=3)
run = ti.generate(params, cfg, prompt_BL, steps=3, mesh=mesh,
                  prefill=ti.Layout("ep-x", "heads"), decode=ti.Layout("ep-xyz", "batch"))

# %%
# NBVAL_CHECK_OUTPUT
print("tokens equal to the reference:", bool((run.tokens == ref.tokens).all()))
print("drops equal to the reference: ", all((run.dropped[p] == ref.dropped[p]).all()
                                            for p in ("prefill", "decode")))
rel = np.linalg.norm(run.step_logits - ref.step_logits) / np.linalg.norm(ref.step_logits)
print("logits within 1e-5 (relative):", bool(rel < 1e-5))

# %% [markdown]
# The same steps compiled, every collective beside the prediction (`measure` reads the
# compiled program; one row per distinct collective; f32, as the engine runs). First the
# prefill in `ep-x`, 4 tokens a sequence, batch 8: per layer, attention's all-gather and
# reduce-scatter over y·z, step 1's all-gather, the dispatch all-to-all over x (each chip's 4
# sequences' 256 slots of E = 64), step 6's reduce-scatter over y·z (the 8 sequences' slots
# at the chip's 128 experts, with the shared expert's rows), and the combine all-to-all
# (those slots, a quarter of E each); once a step, the final norm's all-reduce and the
# logits' reduce-scatter:

# %%
m_prefill = measure(cfg, mesh, ti.Layout("ep-x", "heads"), phase="prefill", batch=8,
                    tokens=4, context=4, repeats=0)
m_decode = measure(cfg, mesh, ti.Layout("ep-xyz", "batch"), phase="decode", batch=8,
                   context=7, repeats=0)

# %%
# NBVAL_CHECK_OUTPUT
print(bt.collectives_table(m_prefill))

# %% [markdown]
# The decode in `ep-xyz`: nothing is tensor-parallel, attention runs on each chip's own
# sequence, and only the tokens move: per layer one all-to-all there and one back, each a
# sequence's 256 slots (C = 1 at every expert) of E:

# %%
# NBVAL_CHECK_OUTPUT
print(bt.collectives_table(m_decode))
exact = lambda side: sorted((x.kind, x.axes, x.count, x.bytes) for x in side.collectives)
print("every collective equal to the prediction:",
      exact(m_prefill.measured) == exact(m_prefill.predicted)
      and exact(m_decode.measured) == exact(m_decode.predicted))

# %% [markdown]
# On the full 4×8×8 mesh `ep-xyz` holds one expert on each chip; a decode step of 256
# sequences, one a chip:

# %%
m_full = measure(cfg, ti.make_mesh((4, 8, 8)), ti.Layout("ep-xyz", "heads"),
                 phase="decode", batch=256, context=8, repeats=0)

# %%
# NBVAL_CHECK_OUTPUT
print(bt.collectives_table(m_full))
print("every collective equal to the prediction:",
      exact(m_full.measured) == exact(m_full.predicted))

# %% [markdown]
# **Exercise 13.3 · Predict, then run.** tiny-moe decoding 8 sequences on 2×2×2 in `ep-xy`
# (experts over x·y, 4 groups; each expert's F over z), f32: how many bytes per device will
# the step's all-to-alls move, dispatch and combine of both layers together (chapter 2's
# convention: an all-to-all is charged its input)? The lock compiles the step and counts.

# %%
answer_3 = 393_216

# %%
from tpuinfer import sweeps
from tpuinfer_widgets import PredictionLock

lock = PredictionLock("13.3", "all-to-all bytes per device, tiny-moe ep-xy decode, batch 8",
                      lambda: sweeps.step_quantity(cfg, mesh, ti.Layout("ep-xy", "heads"),
                                                   phase="decode", batch=8, context=7,
                                                   params=params, quantity="bytes:all-to-all"),
                      guess=answer_3)
lock

# %%
lock.snapshot()

# %%
# NBVAL_CHECK_OUTPUT
bt.check("13.3", answer_3)

# %% [markdown]
# ## How many experts a batch touches
#
# A decode step's expert weights need only be read for the experts some token went to (a
# grouped matmul skips an expert whose buffer is empty; the cost model prices that,
# `step_terms(..., experts="touched")`). With uniform routing, each of T tokens picks k of
# the M experts, every k-subset alike. Expert m is missed by one token with probability
# 1 − k/M, and by all T independent tokens with probability (1 − k/M)^T, so
#
# E[experts touched] = M · (1 − (1 − k/M)^T),
#
# k at T = 1 (the k experts of one token), rising to M once T passes a few times M/k
# (`experts.experts_touched`).
#
# **Exercise 13.4 · Derive.** From how many tokens T does uniform routing touch 99% of
# Mixtral's 8 experts on average (2 a token)? Solve for T; give it to three figures.

# %%
answer_4 = 16.0

# %%
# NBVAL_CHECK_OUTPUT
bt.check("13.4", answer_4)

# %% [markdown]
# The formula, against a simulation of uniform routing (numpy, 2,000 draws):

# %%
print(inspect.getsource(experts.experts_touched))

# %%
# NBVAL_CHECK_OUTPUT
rng = np.random.default_rng(0)
rows = []
for name in ("mixtral-8x7b", "qwen3-30b-a3b"):
    c = ti.MODELS[name]
    for T in (1, 4, 16, 64):
        # each token's k experts: the first k of a random permutation of M
        picks = np.argsort(rng.random((2000, T, c.M)), axis=-1)[..., :c.top_k]
        seen = np.zeros((2000, c.M), bool)
        np.put_along_axis(seen, picks.reshape(2000, -1), True, axis=-1)
        rows.append([name, T, f"{experts.experts_touched(c.M, c.top_k, T):.2f}",
                     f"{seen.sum(-1).mean():.2f}"])
print(bt.table(["model", "tokens T", "formula", "simulated"], rows))

# %% [markdown]
# Real routing departs from this in two ways, both towards **fewer** experts. Load is uneven:
# if a token picks expert m with probability p_m (Σ p_m = k), then
# E[touched] = Σ (1 − (1 − p_m)^T), which is concave in the p_m and so largest when they are
# all equal; load-balancing losses push routers towards uniform, never past it. And tokens
# are not independent: the tokens of one sequence, or one topic, favour the same experts. The
# formula is an upper bound on the expert weights a step reads; a router's measured
# statistics can only lower it.
#
# ## The decode roofline of a mixture of experts
#
# Chapter 1's ridge point: a dense decode step turns compute-bound once its 2·N·B FLOPs
# outlast reading N·b bytes of weights, at B = peak·b/(2·bandwidth). A mixture of experts
# multiplies by its N_active parameters per token, but reads the weights of every expert some
# token touched:
#
# compute = 2·N_active·B / peak,   reads = (N − N_experts·(1 − f(B)))·b / bandwidth,
#
# f(B) the fraction of experts touched (`theory.moe_decode_roofline`). At B = 1 the step
# reads only the k experts a token uses; once f(B) ≈ 1 it reads all of them, as a dense
# model of its total size does, while still computing for N_active. Past that point the
# reads stop growing and compute catches up at B* ≈ (N/N_active) · peak·b/(2·bandwidth):
# the dense ridge point times the ratio of total to active parameters.

# %%
batches = np.unique(np.geomspace(1, 8192, 60).astype(int))
fig = go.Figure()
for name, colour in (("mixtral-8x7b", "#4c78a8"), ("qwen3-30b-a3b", "#e45756")):
    parts = [theory.moe_decode_roofline(name, b, "h100-sxm") for b in batches]
    fig.add_scatter(x=batches, y=[p[1] * 1e3 for p in parts], name=f"{name}: weight reads",
                    line_color=colour)
    fig.add_scatter(x=batches, y=[p[0] * 1e3 for p in parts], name=f"{name}: compute",
                    line_color=colour, line_dash="dot")
    b_star = theory.moe_decode_critical_batch(name, "h100-sxm")
    fig.add_vline(x=b_star, line_color=colour, line_dash="dash",
                  annotation_text=f"B* {b_star:,.0f}")
fig.add_vline(x=theory.decode_ridge_batch("h100-sxm"), line_color="grey",
              annotation_text="dense ridge", annotation_position="bottom right")
fig.update_xaxes(type="log", title="batch (sequences in a decode step)")
fig.update_yaxes(type="log", title="ms per step on one chip (prediction, h100-sxm datasheet)")
fig.update_layout(height=440, width=860, title="Decode of a mixture of experts: weight reads "
                  "grow until every expert is read, compute never stops growing (bf16)")
fig.show()

# %% [markdown]
# The batch at which uniform routing touches 99% of the experts (`experts.all_experts_batch`),
# and B* on each chip, beside the dense ridge point (bf16 weights, datasheet profiles; the KV
# cache and communication left out, as in chapter 1):

# %%
# NBVAL_CHECK_OUTPUT
rows = []
for name in ("mixtral-8x7b", "qwen3-30b-a3b", "qwen3-235b-a22b"):
    c = ti.MODELS[name]
    rows.append([name, f"{experts.all_experts_batch(c):.0f}",
                 f"{c.n_params() / c.n_active_params():.1f}"]
                + [f"{theory.moe_decode_critical_batch(name, hw):,.0f}"
                   for hw in ("tpu-v5e", "tpu-v6e", "h100-sxm")])
rows.append(["a dense model", "-", "1.0"] + [f"{theory.decode_ridge_batch(hw):,.0f}"
                                             for hw in ("tpu-v5e", "tpu-v6e", "h100-sxm")])
print(bt.table(["model", "B reading 99% of experts", "N/N_active", "B* tpu-v5e",
                "B* tpu-v6e", "B* h100-sxm"], rows))

# %% [markdown]
# Mixtral reads nearly all 8 experts from a batch of 16; Qwen3's 128 need about 70 tokens.
# Below those batches each added sequence adds expert reads, so batching pays less than for a
# dense model; above them batching pays as it does for a dense model of the **total** size,
# but the compute it buys is only N_active's: Mixtral's decode stays memory-bound up to about
# 1,100 sequences on an H100, Qwen3's up to 3,000. A mixture of experts is a model that
# wants very large decode batches, or few chips' worth of weights per sequence.
#
# ## What static capacity costs in decode
#
# In decode every sequence brings one token and C = 1, so its buffer has a slot at every
# expert: M slots of E for its k routes. The dispatch all-to-all and every chip's expert
# matmuls carry the empty slots too. Per sequence and layer, the slots the buffers move
# against the routes a dropless dispatch would move (a ragged all-to-all, as DeepEP and
# megablocks run):

# %%
# NBVAL_CHECK_OUTPUT
rows = [[name, c.M * c.capacity(1), c.top_k, f"{c.M * c.capacity(1) / c.top_k:.0f}x"]
        for name, c in ((n, ti.MODELS[n]) for n in ("mixtral-8x7b", "qwen3-30b-a3b",
                                                     "qwen3-235b-a22b"))]
print(bt.table(["model", "slots a sequence moves (decode)", "its routes", "padding"], rows))

# %% [markdown]
# Mixtral's 4x is cheap next to its weight reads; Qwen3's 16x is what the planner pays for
# in decode below, where the all-to-alls and tensor parallelism's reduce-scatter of every
# slot rival or outweigh the weight reads. The cost model prices what the code runs: static
# buffers.
#
# ## The planner's choice of an expert-parallel degree
#
# The planner weighs the three layouts on every mesh (`ep-x` on X×Y×Z is expert-parallel
# degree X, tensor-parallel Y·Z; X = 1 is tensor parallelism alone), per phase. More expert
# parallelism holds fewer experts a chip and splits each chip's share of the capacity buffers
# among more chips; more tensor parallelism splits attention (held by every group of experts)
# over more chips, but pays a reduce-scatter of every slot. For each preset on each chip, the
# fewest chips (powers of two) that hold batch 32 with 2,048 prompt tokens and 256 generated
# (bf16), and the planner's choice per phase (predictions on the datasheet profiles, rule
# `overlap`):

# %%
def fewest_chips(name, hw, batch=32):
    for n in [c for c in chip_counts(hw, 1, 256) if c & (c - 1) == 0]:
        try:
            return n, planner.plan(name, hw, n, batch, input_len=2048, gen_len=256)
        except UsageError:  # nothing fits on n chips
            continue
    return None, None


plans = {(name, hw): fewest_chips(name, hw)
         for name in ("mixtral-8x7b", "qwen3-30b-a3b", "qwen3-235b-a22b")
         for hw in ("tpu-v5e", "tpu-v6e", "h100-sxm")}

# %%
# NBVAL_CHECK_OUTPUT
rows = []
for (name, hw), (n, p) in plans.items():
    pre, dec = p.prefill, p.decode
    degrees = [f"{ph.experts['expert_parallel']} x {ph.experts['tensor_parallel']}"
               for ph in (pre, dec)]
    where = [f"{ph.best.layout.ffn} {'x'.join(map(str, ph.best.mesh_shape))}"
             for ph in (pre, dec)]
    rows.append([name, hw, n, degrees[0], where[0], bt.seconds(pre.best.latency_s),
                 degrees[1], where[1], bt.seconds(dec.best.per_token_s)])
print(bt.table(["model", "chip", "chips", "prefill", "on", "latency", "decode", "on",
                "per token"], rows))
print("prefill, decode: expert-parallel x tensor-parallel degree")

# %% [markdown]
# Prefill takes the highest expert-parallel degree it can run in almost every row: its
# capacity buffers are large (640 slots at each of Mixtral's experts, 160 at Qwen3's), each
# doubling of the degree halves the slots a chip sends, and tensor parallelism would
# reduce-scatter all of them (Mixtral on 16 v5e chips stops at 8 × 2 because it has 8
# experts). Qwen3-235B on 64 v5e chips stops short, at 16 × 4: 32 × 2 runs too, and the
# planner says why it lost (the first line below).
#
# Decode divides. Qwen3-30B keeps the highest degree on every chip (one H100 holds it whole),
# parallel. Mixtral goes the other way on v6e and H100, to tensor parallelism alone (1 × 4,
# 1 × 2), and meets in the middle on v5e (4 × 4); Qwen3-235B settles between the two
# extremes on every chip. What decides is a trade between two terms. Every group of
# experts holds attention (and the shared weights) whole, split over only its |t| chips:
# more groups, more copies of attention to read each step. Tensor parallelism instead
# reduce-scatters every slot of the buffers, and Qwen3's carry 16 times its routes. v5e's
# slower links tip each model towards expert parallelism. The planner says why, by the
# terms that differ most from the best at the next-best degree:

# %%
# NBVAL_CHECK_OUTPUT
why = [f"qwen3-235b-a22b on 64 tpu-v5e, prefill: "
       f"{plans['qwen3-235b-a22b', 'tpu-v5e'][1].prefill.experts['why']}"]
for key in (("mixtral-8x7b", "tpu-v5e"), ("qwen3-235b-a22b", "tpu-v6e"),
            ("qwen3-235b-a22b", "h100-sxm")):
    n, p = plans[key]
    why.append(f"{key[0]} on {n} {key[1]}, decode: {p.decode.experts['why']}")
print(bt.wrapped(why))

# %% [markdown]
# The same on the command line, every degree's best beside the choice:
# `tpuinfer plan --model mixtral-8x7b --hardware tpu-v5e --chips 16 --batch 32 --gen-len 256`
# (add `--json` for the terms as numbers).
#
# ## Recap
#
# - A mixture of experts routes each token to k of M experts: it holds N parameters and
#   multiplies by N_active (Mixtral 46.7B and 12.9B; Qwen3-235B-A22B 235B and 22B).
# - Static shapes give each expert C = min(L, max(1, ⌈1.25·L·k/M⌉)) slots per sequence;
#   routes past C are dropped, the same ones in the reference and every layout. In decode
#   C = 1: nothing drops, but every sequence moves M slots for k routes.
# - Expert parallelism splits the experts over e and each expert over t: per layer an
#   all-to-all over e dispatches the slots, a reduce-scatter over t sums each expert's
#   partial products, an all-to-all over e brings them back; `measure` finds exactly the
#   predicted bytes.
# - A batch of T tokens touches M·(1 − (1 − k/M)^T) experts under uniform routing (an upper
#   bound for real routers). Decode reads every expert from a batch of a few M/k, and turns
#   compute-bound only at about N/N_active times a dense model's ridge point.
# - The planner weighs expert-parallel degree against tensor parallelism per phase: prefill
#   takes the most expert parallelism, decode trades attention's copies against the
#   reduce-scatter of every slot, and so depends on M/k and on the chip's links.
#
# ## Exercises
#
# Exercises 13.1 to 13.4 are above: the capacity of a long prefill, the routes a router of
# zeros drops, the all-to-alls of an `ep-xy` decode, and the batch that reads every expert.
