# ---
# jupyter:
#   jupytext:
#     formats: ipynb,_src//py:percent
# ---

# %% [markdown]
# # 9 · int8 weights
#
# A decode step at small batch is memory-bound (chapter 1): its time is the time to read the
# weights. Store them in half the bytes and it takes half the time. The paper quantizes
# PaLM's weights to **int8** with one bf16 scale per output channel; activations stay bf16,
# and the matmuls still run in bf16 (the TPU v4 has no faster int8 path for them). What
# int8 buys is bytes:
#
# - half the **weight reads** per step: what a small-batch decode waits on;
# - half the **bytes a weight-gathered layout moves** (its collectives carry weights);
# - half the **memory** the weights occupy, leaving room for KV cache, or fitting on fewer
#   chips.
#
# It changes nothing that moves activations: the collectives of the weight-stationary
# layouts keep their bf16 size.
#
# **After this chapter you can** quantize a weight matrix per output channel; predict what
# int8 buys a decode step at a given batch, and where it stops helping; set the prediction
# beside the paper's measured decode latencies; and see int8 in a compiled program. (Paper:
# [Section 3.6](https://arxiv.org/abs/2211.05102), "Quantization", and Section 4.4.)

# %%
import tpuinfer as ti
ti.emulate(256)

# %%
import inspect

import numpy as np
import plotly.graph_objects as go

import booktools as bt
from tpuinfer import cost, model, quality, quant, text
from tpuinfer.measure import measure
from tpuinfer.paper import DECODE_PER_TOKEN_S, TABLE2, as_run
from tpuinfer.theory import decode_ridge_batch

# %% [markdown]
# ## How the library quantizes
#
# Symmetric, per output channel: each output column's largest magnitude maps to 127. The
# scale is applied *after* the matmul, so the matmul reads the int8 matrix (converted to bf16
# on the fly), and every layout shards the scale like its matrix's output dimension.

# %%
print(inspect.getsource(quant.quantize))

# %%
print(inspect.getsource(model.mm))

# %% [markdown]
# **Exercise 09.1 · Derive.** How many GiB do PaLM 540B's weights take in int8? Each weight
# is one byte, and each matrix adds one bf16 scale per output channel (the model's parameter
# count is in chapter 0's table). Four significant digits.

# %%
answer_1 = 503.3

# %%
# NBVAL_CHECK_OUTPUT
bt.check("09.1", answer_1)

# %% [markdown]
# The weight bytes of each model in each format (`ModelConfig.weight_bytes`; int8 includes
# its bf16 scales):

# %%
# NBVAL_CHECK_OUTPUT
rows = [[c.name, f"{c.weight_bytes('bf16') / 2**30:,.1f}", f"{c.weight_bytes('int8') / 2**30:,.1f}",
         f"{c.weight_bytes('int8') / c.weight_bytes('bf16'):.4f}"]
        for c in ti.MODELS.values() if c.n_params() > 1e9]  # the paper-sized ones
print(bt.table(["model", "bf16 GiB", "int8 GiB", "int8 / bf16"], rows))

# %% [markdown]
# ## What it buys: the paper's decode latency
#
# The paper measured PaLM 540B's decode (batch 64, 64 chips, 2D weight-stationary, attention
# by batch) at 36.9 ms per token in bf16 and 28.5 ms in int8 (Section 4.4). The cost model
# can price the same layouts on the paper's 4×4×4 slice, with the schedule the planner
# prefers for them (`paper.as_run`: here bidirectional looped, chapter 8).
#
# **Exercise 09.2 · Predict, then run.** int8 halves the weights' bytes. On the TPU v4
# datasheet profile (rule `overlap`), by what factor will int8 speed up that decode, bf16's
# time per token over int8's? The lock asks the cost model and sets its answer beside the
# paper's measured factor.

# %%
answer_2 = 1.57

# %%
from tpuinfer import paper, sweeps
from tpuinfer_widgets import PredictionLock

lock = PredictionLock("09.2", "int8's speed-up of PaLM 540B decode per token, tpu-v4",
                      lambda: paper.against_paper("int8-speedup", "tpu-v4"), guess=answer_2)
lock

# %%
lock.snapshot()

# %%
# NBVAL_CHECK_OUTPUT
bt.check("09.2", answer_2)

# %% [markdown]
# Per token, on the datasheet (a lower bound) and on the profile calibrated to Table 2
# (chapter 10), both rule `overlap`. The calibration was fitted to Table 2's four latencies,
# and the int8 column here is the same run as its low-latency decode (1.82 s over 64 tokens):
# its agreement is in sample, no evidence. The bf16 column it never saw.

# %%
# NBVAL_CHECK_OUTPUT
rows = []
for weights, paper_s in DECODE_PER_TOKEN_S.items():
    role = "in sample" if weights == TABLE2[1].weights else "held out"
    rows.append([weights, bt.seconds(paper_s)] + [
        bt.seconds(as_run(TABLE2[1], hw, weights).per_token_s)
        for hw in ("tpu-v4", "tpu-v4-calibrated")] + [role])
print(f"PaLM 540B decode per token, batch 64, 4x4x4, {as_run(TABLE2[1], 'tpu-v4').layout}")
print(bt.table(["weights", "paper (measured)", "tpu-v4 (datasheet)", "tpu-v4-calibrated",
                "for the calibration"], rows))

# %% [markdown]
# Not 2×: the step also reads the KV cache and communicates, and int8 halves neither. And as
# the batch grows, compute takes over (chapter 1) and the weight bytes stop mattering. One
# decode step at a 2048-token context, in the paper's decode layout (plain schedule, heads
# padded to 64), against the batch, predicted on the TPU v4 datasheet (rule overlap):

# %%
batches = [64, 128, 256, 512, 1024]
steps = {(w, b): cost.estimate("palm-540b-64heads", ti.Layout("ws2d", "batch"), (4, 4, 4),
                               batch=b, tokens=1, context=2048, weights=w)
         for w in ("bf16", "int8") for b in batches}
fig = go.Figure()
for w in ("bf16", "int8"):
    fig.add_trace(go.Scatter(x=batches, y=[steps[w, b].step_s * 1e3 for b in batches],
                             name=w, mode="lines+markers"))
fig.update_xaxes(type="log", tickvals=batches, title="batch")
fig.update_yaxes(title="ms per decode step (tpu-v4 datasheet, overlap)")
fig.update_layout(title="PaLM 540B decode on 64 chips: int8 helps where weights dominate",
                  height=360, width=700)
fig.show()

# %%
# NBVAL_CHECK_OUTPUT
rows = [[b, bt.seconds(steps["bf16", b].weights_s), bt.seconds(steps["int8", b].weights_s),
         bt.seconds(steps["bf16", b].step_s), bt.seconds(steps["int8", b].step_s),
         f"{steps['bf16', b].step_s / steps['int8', b].step_s:.2f}"] for b in batches]
print("PaLM 540B decode step, ws2d/batch plain on 4x4x4: predicted on tpu-v4 (datasheet), "
      "rule overlap")
print(bt.table(["batch", "weights bf16", "weights int8", "step bf16", "step int8", "speed-up"],
               rows))

# %% [markdown]
# ## Real int8 steps
#
# The tiny model quantized to int8 and generated on 2×2×2, against the unsharded int8
# reference. With bf16 arithmetic, summing in a different order (which is what sharding
# does) changes the last bits, and a random tiny model has many near-ties between tokens, so
# here we compare logits rather than tokens.

# %%
cfg = ti.MODELS["tiny"]
params = ti.init_params(cfg, seed=0)
mesh = ti.make_mesh((2, 2, 2))
prompt_BL = np.random.default_rng(7).integers(0, cfg.V, (8, 8))
out = ti.generate(params, cfg, prompt_BL, steps=4, mesh=mesh, weights="int8")
ref = ti.generate(params, cfg, prompt_BL, steps=4, weights="int8")
exact = ti.generate(params, cfg, prompt_BL, steps=4)  # f32, unquantized

# %%
scale = np.abs(ref.prefill_logits).max()
print(f"sharded int8 against the int8 reference: largest logit difference "
      f"{np.abs(out.prefill_logits - ref.prefill_logits).max() / scale:.1%} of the largest logit")
print(f"int8 reference against f32: {np.abs(ref.prefill_logits - exact.prefill_logits).max() / scale:.1%}")

# %% [markdown]
# Where int8 shows in the compiled program: the weights each device holds, and, in a
# weight-gathered layout, the all-gathers of step 0, which now move `s8`. One
# XYZ-weight-gathered prefill step in bf16 first:

# %%
gathered = {"bf16": measure(cfg, mesh, ti.Layout("wg-xyz", "batch"), phase="prefill",
                            batch=8, tokens=8, params=params, weights="bf16")}

# %%
# NBVAL_CHECK_OUTPUT
print(f"bf16 weight bytes each device holds: "
      f"{gathered['bf16'].measured.weight_bytes_per_device:,.0f}")

# %% [markdown]
# **Exercise 09.3 · Predict, then run.** The same step with int8 weights: how many weight
# bytes will each device hold? Every matrix's numbers become one byte each; each matrix gains
# one bf16 scale per output channel, a few thousand numbers in all; the norms' scales (3·E
# numbers, held whole by every device) stay bf16. Predict it to within 2%.

# %%
answer_3 = 486_976

# %%
lock = PredictionLock("09.3", "int8 weight bytes each device holds, wg-xyz on 2x2x2",
                      lambda: sweeps.step_quantity(cfg, mesh, ti.Layout("wg-xyz", "batch"),
                                                   phase="prefill", batch=8, tokens=8,
                                                   params=params, weights="int8",
                                                   quantity="weight_bytes"),
                      guess=answer_3)
lock

# %%
lock.snapshot()

# %%
# NBVAL_CHECK_OUTPUT
bt.check("09.3", answer_3)

# %%
gathered["int8"] = measure(cfg, mesh, ti.Layout("wg-xyz", "batch"), phase="prefill", batch=8,
                           tokens=8, params=params, weights="int8")

# %%
# NBVAL_CHECK_OUTPUT
rows = [[w, f"{m.predicted.weight_bytes_per_device:,.0f}", f"{m.measured.weight_bytes_per_device:,.0f}",
         f"{m.predicted.comm_bytes:,.0f}", f"{m.measured.comm_bytes:,.0f}"]
        for w, m in gathered.items()]
print(bt.table(["weights", "held predicted", "held measured", "moved predicted",
                "moved measured"], rows))
print()
print(bt.collectives_table(gathered["int8"]))

# %%
print(bt.wrapped(bt.measurement_notes(gathered["int8"])[:1]))

# %% [markdown]
# The int8 matrices move as `s8`; their scales (bf16, widened to f32 by this CPU backend,
# which the prediction accounts for) travel with them in small all-gathers of their own.

# %% [markdown]
# ## What int8 costs in quality, on a trained model
#
# The paper reports that int8 weights cost PaLM "no noticeable loss" in quality. Quality is
# what a trained model does with text, so it is measured on one: the tiny model trained on
# this project's prose (chapter 0), on held-out text it never trained on. Three numbers per
# weight format (`tpuinfer.quality.evaluate`): the held-out loss in nats per byte, its
# perplexity, and bits per byte; and how often two formats pick the same most likely next
# byte (top-1 agreement). f32 runs the checkpoint's bf16 weights in f32 arithmetic, so bf16
# against f32 is the arithmetic's rounding alone, and int8 against bf16 is the weights'
# quantization alone (both compute in bf16).

# %%
trained = ti.load_params("tiny")
train_N, held_N = text.split(text.corpus_bytes())
q = quality.evaluate(trained, cfg, held_N)

# %%
print(f"held-out text: {q.held_out_bytes:,} bytes predicted, in windows of "
      f"{quality.SEQ_LEN} bytes;\nbyte frequencies alone (unigram) give "
      f"{quality.unigram_loss(train_N, held_N):.3f} nats per byte")
print(bt.table(["weights", "loss (nats/byte)", "perplexity", "bits per byte"], q.rows()))
print(f"int8 perplexity / bf16: {q.perplexity('int8') / q.perplexity('bf16'):.4f}")
for (a, b), share in q.agreement.items():
    print(f"top-1 agreement, {a} with {b}: {share:.2%}")

# %% [markdown]
# Now the same quantization on random weights, the model every other chapter runs: there is
# no quality to lose (a random model predicts nothing), so the only measure left is how far
# int8 moves the logits. Side by side, on the same held-out bytes (`quality.logits_change`,
# relative norm of the logits' difference, and top-1 agreement), with each matrix's own
# rounding error (`quality.matrix_errors`, ||W - dequant(Q)|| / ||W||):

# %%
random_params = ti.init_params(cfg, seed=0)
window_BL = quality.windows(held_N, quality.SEQ_LEN)[:32, :-1]
rows = []
for name, p in (("trained", trained), ("random", random_params)):
    change = quality.logits_change(p, cfg, window_BL)
    errors = np.array(list(quality.matrix_errors(p).values()))
    rows.append([name, f"{np.median(errors):.2%}", f"{errors.max():.2%}",
                 f"{change.relative_norm:.2%}", f"{change.noise:.3f}",
                 f"{change.top1_agreement:.1%}", f"{change.median_lead:.2f}",
                 f"{change.spread:.2f}"])
print(f"{len(window_BL)} held-out windows of {quality.SEQ_LEN} bytes; int8 against bf16")
print(bt.table(["weights", "matrix error", "(max)", "logits moved", "int8's noise",
                "top-1 same", "top's lead", "logits' spread"], rows))
print("matrix error: median over the matrices; noise and spread: standard deviations, in "
      "logits;\ntop-1 same: how often int8 and bf16 pick the same most likely byte; top's "
      "lead: the top\nlogit's lead over the next, median over positions")

# %% [markdown]
# Why the two differ. Each matrix rounds the same way in both (about 0.7% of its norm: the
# floor of 255 levels per channel), and the noise int8 adds to each position's logits is
# about the same in both: a standard deviation of 0.02 to 0.03 of a logit. What
# differs is what it is added to. The random model's logits are noise themselves, of spread
# about 1, and its top choice leads the next by a fifth of a logit: the same perturbation is
# a larger fraction of them and changes the top choice at about one position in eighteen.
# The trained model's logits spread about three times wider, its top choice leads by one and
# a half, and int8's noise seldom reorders them: its held-out perplexity moves by a few
# hundredths of a percent. So a random-weight logit norm bounds the arithmetic (the test
# suite checks every layout's int8 run against it), but it is not a measure of quality: the
# paper's "no noticeable loss" is a statement about a trained model, and on this small one it
# holds.
#
# ## The KV cache in int8 or fp8
#
# Servers today keep the KV cache in a byte a value too: int8 with one bf16 scale per token
# and K/V head, quantized as each position is written (`tpuinfer.kv_formats`), or fp8
# (e4m3: 3 bits of mantissa, a plain cast with no scale). Chapters 6 and 12 show what that
# buys: twice the context in the same memory, and half the cache's reads in decode. What it
# costs is measured the same way: held-out loss with bf16 weights and the cache in each
# format, every position attending to keys and values read back from the cache, beside
# bf16's own cache (`quality.evaluate(..., kv=...)`). Each format is another pass over the
# text, so this runs on the first 4,096 held-out bytes (64 windows), a fifth of the set;
# the bf16 row is the same fifth.

# %%
q_kv = quality.evaluate(trained, cfg, held_N[:4096 + 1], formats=("bf16",),
                        kv=("int8", "fp8"))

# %%
print(f"held-out text: the first {q_kv.held_out_bytes:,} bytes, in windows of "
      f"{quality.SEQ_LEN} bytes; bf16 weights")
print(bt.table(["KV cache", "loss (nats/byte)", "perplexity", "vs bf16 cache",
                "top-1 same as bf16 cache"], q_kv.kv_rows()))

# %% [markdown]
# The int8 cache moves the held-out perplexity by hundredths of a percent, like the int8
# weights: its scale follows each token and head, so each head's D values share 255 levels
# spread over their own range. fp8 (e4m3) keeps 3 bits of mantissa: each value is rounded by
# up to one part in sixteen, coarser than int8's levels for the values that dominate a
# head, and its perplexity moves by about a percent. (Servers that keep an fp8 cache also
# scale it, per tensor at least; this is the bare format.)
#
# ## Recap
#
# - int8 weights with a bf16 scale per output channel: half the weight bytes read, stored
#   and (in weight-gathered layouts) moved; the matmuls still run in bf16.
# - It speeds decode up where weight reads dominate: small batches. The KV cache and the
#   activations' collectives are unchanged.
# - The paper measured 36.9 ms → 28.5 ms per token at batch 64; the datasheet predicts
#   faster in both and overstates int8's gain. The calibrated profile's int8 figure is in
#   sample (the same run as a column it was fitted to); its bf16 figure, held out, is the
#   test.
# - Quality is measured on a trained model: on the tiny model trained on this project's
#   prose, int8's held-out perplexity is within a few hundredths of a percent of bf16's, and
#   it agrees with bf16's top choice as often as bf16 agrees with f32's. Random weights only
#   bound the arithmetic.
# - The KV cache in int8 (a scale per token and head) costs as little; in fp8 with no scale,
#   about a percent of held-out perplexity.
#
# ## Exercises
#
# Exercises 09.1 to 09.3 are above, with the weight bytes, the decode latency and the
# compiled step.
#
# **Exercise 09.4 · Derive.** Chapter 1's ridge point with one byte per weight: above what
# batch do the weight matmuls of an int8 decode step on TPU v4 take longer than reading the
# int8 weights? Past it, int8 no longer shortens the weights' part of the step; compare the
# batch table above, where the speed-up reaches 1.00.

# %%
answer_4 = 115

# %%
# NBVAL_CHECK_OUTPUT
bt.check("09.4", answer_4)
