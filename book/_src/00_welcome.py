# ---
# jupyter:
#   jupytext:
#     formats: ipynb,_src//py:percent
# ---

# %% [markdown]
# # 0 · Welcome: partitioning a Transformer for inference
#
# A large language model does not fit on one chip, and even when it does, one chip is too
# slow. So the model is **partitioned**: every weight matrix is cut into pieces spread over
# many chips, and the chips exchange activations (or weights) with **collectives** such as
# all-gather and reduce-scatter. *How* you cut decides how fast a request runs, how much it
# costs, and how long a context fits in memory.
#
# This book teaches the partitioning ideas of Pope et al., *Efficiently Scaling Transformer
# Inference* (MLSys 2023, [arXiv 2211.05102](https://arxiv.org/abs/2211.05102)), which served
# PaLM 540B on 64 TPU v4 chips at 29 ms per generated token. Keep the paper open beside the
# book: every chapter names the section it follows. Every idea is shown three ways:
#
# 1. **as code** — the real `shard_map` body of each layout, shown with `inspect.getsource`
#    from the `tpuinfer` library, with every collective written out;
# 2. **as a real run** — the layout executes on an *emulated* mesh of up to 256 devices on
#    your laptop's CPU, and its tokens are checked against an unsharded reference model;
# 3. **as a prediction** — an analytical cost model says what the step should cost, and we put
#    that prediction beside what the compiler actually emitted.
#
# **After this chapter you can** start a chapter correctly (why `ti.emulate(256)` comes
# first), read the paper's tensor notation (`BLE_xyz`), name the models the book uses and
# where their parameters sit, run a sharded generation and check it against the reference,
# and read a table of predicted against compiled collectives.
# (Paper: [Section 2 and Section 3.1](https://arxiv.org/abs/2211.05102).)
#
# ## How to use it
#
# From the repository root: `pip install -e ".[book]"`, then `jupyter lab book/`. Run each
# chapter top to bottom (the first code cell must run first: see below). Two cores are enough.
# Every chapter has exercises, some where the idea is taught and the rest at its end, each
# labelled **Exercise NN.k**. A **Derive** exercise is worked on paper from what the chapter
# showed; a **Predict, then run** exercise asks for your number *before* the cell that runs
# the real thing (a compiled step on the emulated mesh, or the planner). Each has an answer
# cell (`answer_1 = ...`) and a check cell that says whether the answer is right; the check
# shows only the exercise and your answer, never how the expected value is computed. Many
# predict-then-run exercises come with a **prediction lock**: type your number (and, if you
# like, why) and lock it; only then does it run the step, and it sets your number beside the
# cost model's prediction and the measurement, saying how far each was.
# Get the student's edition, with the answers emptied, the worked solutions left out and
# checks that give a hint instead of the number, with `tpuinfer book --student DIR` (or
# `python book/_build.py --student DIR`); the repository's notebooks are the instructor's
# edition, with the answers and the worked derivations, so that CI can check them. A
# workshop plan is in `book/WORKSHOP.md`. Run `tpuinfer calibrate` once, on an
# idle machine (under a minute): it measures this CPU and writes a `host` profile, and from
# then on chapters 1, 5, 7, 8 and 11 set the cost model's prediction of every step's time on
# this CPU beside the time measured, with the error.
#
# | chapter | what it teaches |
# |---|---|
# | 01 | rooflines and MFU: compute, memory and communication bounds on a step |
# | 02 | meshes, shardings and collectives on 256 emulated devices |
# | 03 | 1D weight-stationary (Megatron) |
# | 04 | 2D weight-stationary |
# | 05 | weight-gathered layouts and the crossover |
# | 06 | attention: multiquery by heads and by batch, context length, an int8 cache |
# | 07 | prefill against decode, and the parallel block |
# | 08 | Looped CollectiveEinsum: hiding communication behind matmuls |
# | 09 | int8 weights and KV caches, and what they cost in quality |
# | 10 | the cost model and planner reproducing the paper's Table 2 |
# | 11 | end-to-end generation and the Pareto frontier of latency against cost |
# | 12 | planning Llama 3 70B: grouped-query attention, int8 caches, replicas, today's chips |
# | 13 | mixtures of experts: expert parallelism on the mesh, priced by the cost model |
# | 14 | how far to trust the model: every public measurement beside its prediction |

# %% [markdown]
# ## The first cell of every chapter
#
# JAX decides how many devices it has the moment its backend starts, and never changes its
# mind in a running process. So every chapter starts by asking for 256 emulated CPU devices
# (the paper's largest mesh is 4×8×8 = 256 chips) *before anything else touches JAX*. Smaller
# meshes are then built from the first devices. If you see an `EmulationError`, restart the
# kernel and run this cell first.

# %%
import tpuinfer as ti
ti.emulate(256)

# %%
# NBVAL_CHECK_OUTPUT
import jax
import numpy as np
import plotly.graph_objects as go

import booktools as bt
from tpuinfer import text

print(jax.device_count(), "devices on", jax.devices()[0].platform)

# %% [markdown]
# ## The notation
#
# The paper writes a tensor with its dimensions and, as subscripts, the mesh axes each
# dimension is split over. The library uses the same letters everywhere: in variable names
# (`x_BLE`), in einsum strings (`"BLE,EF->BLF"`) and in docstrings.
#
# | letter | meaning | letter | meaning |
# |---|---|---|---|
# | B | batch (sequences) | E | d_model |
# | L | tokens processed this step (1 in decode) | F | d_ff (feed-forward width) |
# | S | context length held in the KV cache | H | query heads |
# | V | vocabulary | K | key/value heads (K = 1: multiquery) |
# | n | chips, n = X·Y·Z | D | d_head |
#
# `BLE_xyz` is an activation [B, L, E] whose E is split over all three mesh axes: each chip
# holds [B, L, E/(XYZ)]. An axis not written means the tensor is *replicated* over it. A
# result "partial-sum over x" still has to be summed across the chips of x.
#
# ## The models
#
# The configurations live in `ti.MODELS`. `tiny` is built so that every layout runs on the
# full 4×8×8 mesh (E, F, H and V all divide by 256) in well under a second per step; the
# PaLM and MT-NLG presets are for the cost model (the table lists every preset the library
# has; the book runs only `tiny`). Each config computes its own counts: the book never
# recounts them.

# %%
# NBVAL_CHECK_OUTPUT
rows = [[c.name, c.n_layers, c.E, c.F, c.H, c.D, c.K, c.V, f"{c.n_params():,}"]
        for c in ti.MODELS.values()]
print(bt.table(["model", "layers", "E", "F", "H", "D", "K", "V", "parameters"], rows))

# %% [markdown]
# Where do the parameters sit? Per layer, attention holds W_q, W_k, W_v and W_o and the
# feed-forward holds W_gate, W_up and W_down; the embedding table is shared with the output
# projection. The feed-forward is **SwiGLU**: `(swish(x·W_gate) * (x·W_up))·W_down`, two
# E×F matrices in and one F×E out, where the paper's formulas count a plain two-matrix
# feed-forward (W_in, W_out). Chapters 4 and 5 show where the third matrix changes the
# paper's numbers. In PaLM the feed-forward holds most of each layer: F = 4E, three matrices of
# E·F, against attention's H·D ≈ E wide projections and a single K/V head. The tiny model,
# with 256 heads of 8, is shaped for partitioning, not for realism.

# %%
names = ["tiny", "palm-8b", "palm-540b"]
parts = {"attention": lambda c: c.n_layers * c.attention_params_per_layer(),
         "feed-forward": lambda c: c.n_layers * c.ffn_params_per_layer(),
         "embedding": lambda c: c.V * c.E}
fig = go.Figure([go.Bar(name=part, x=names, y=[f(ti.MODELS[m]) / ti.MODELS[m].n_params()
                                                for m in names]) for part, f in parts.items()])
fig.update_layout(barmode="stack", yaxis_title="share of parameters", height=340, width=560,
                  title="Where the parameters are")
fig.show()

# %% [markdown]
# ## A first real run
#
# `ti.generate` prefills a batch of prompts and then decodes, each phase in its own
# *layout*. Here: the tiny model on a 2×2×2 mesh (8 emulated devices), prefill in 2D
# weight-stationary with attention split by heads, decode in 2D weight-stationary with
# attention split by batch (chapters 4 and 6 explain both). Then the same prompts through the
# unsharded reference model (`mesh=None`). Parameters are f32 by default, so the sharded run
# must produce *exactly* the reference's tokens: partitioning changes where the arithmetic
# happens, not what it computes.
#
# The tiny model here is trained: `ti.load_params("tiny")` is a checkpoint that ships with
# the package, trained (`tpuinfer train`, 23 to 25 minutes on 2 CPU cores) on this project's own
# prose, one byte per token (`ti.encode`, `ti.decode`). The prompts are snippets of text it
# was never trained on, so what it writes is text you can read, and check.

# %%
cfg = ti.MODELS["tiny"]
params = ti.load_params("tiny")
mesh = ti.make_mesh((2, 2, 2))
prompt_BL = text.prompts(8, 16, seed=0)  # 8 held-out snippets of 16 bytes
layouts = dict(prefill=ti.Layout("ws2d", "heads"), decode=ti.Layout("ws2d", "batch"))
out = ti.generate(params, cfg, prompt_BL, steps=24, mesh=mesh, **layouts)
ref = ti.generate(params, cfg, prompt_BL, steps=24)

# %%
# NBVAL_CHECK_OUTPUT
print("sharded tokens equal the reference's:", bool((out.tokens == ref.tokens).all()))

# %%
for p, o in zip(prompt_BL[:4], out.tokens[:4]):
    print(repr(ti.decode(p)), "->", repr(ti.decode(o)))
print("first sequence's generated token ids:", out.tokens[0, :8].tolist(), "...")

# %% [markdown]
# How it learned: `tpuinfer train` keeps a record beside the checkpoint
# (`tpuinfer.checkpoint.metadata`), with the loss on the text it trained on and on the
# held-out text, every 50 steps. The dashed line is what byte frequencies alone give.

# %%
from tpuinfer import checkpoint

record = checkpoint.metadata("tiny")
curve = record["curve"]
fig = go.Figure()
for key, label in (("train_loss", "train"), ("held_out_loss", "held out")):
    fig.add_trace(go.Scatter(x=[c["step"] for c in curve], y=[c[key] for c in curve],
                             name=label, mode="lines+markers"))
fig.add_hline(y=record["unigram_held_out_loss"], line_dash="dash",
              annotation_text="byte frequencies alone (held out)")
run = record["training"]
fig.update_xaxes(title=f"training step ({run['batch']} windows of {run['seq_len']} bytes each)")
fig.update_yaxes(title="loss, nats per byte (measured)")
fig.update_layout(title=f"Training the tiny model ({run['wall_s'] / 60:.0f} min "
                        f"on {run['devices'].upper()}); kept step "
                        f"{record['kept_step']}", height=340, width=700)
fig.show()

# %% [markdown]
# What did each phase cost on this machine? The first call of a configuration compiles it
# (seconds); later steps reuse the compiled program. These are CPU timings of an emulation:
# they tell you nothing about a TPU, which is why the book compares *what was compiled*
# rather than wall time.

# %%
for phase, t in out.timings.items():
    print(f"{phase:8s} {t['layout']:12s} compile {t['compile_s']:.2f} s, "
          f"{t['steps']} step(s) of {t['step_s'] * 1e3:.1f} ms")

# %% [markdown]
# ## Predicted against measured
#
# `tpuinfer.measure.measure` compiles the very step the engine runs, reads the collectives
# out of the compiled program (kind, which devices talk, bytes per device), and puts them
# beside what the layout file predicts. On an emulated mesh this comparison is *exact* for
# the program compiled here. It carries over to a TPU with one caveat: XLA's CPU backend runs
# bf16 collectives in f32, so a bf16 model's collectives move twice the bytes here that they
# would on a TPU (the tiny model here is f32, so nothing is widened). The flags `measure`
# attaches, in the words of `tpuinfer.report`, say what each side assumes.

# %%
from tpuinfer.measure import measure

m = measure(cfg, mesh, layouts["prefill"], phase="prefill", batch=8, tokens=8, params=params)

# %%
# NBVAL_CHECK_OUTPUT
print(bt.by_kind_table(m))

# %%
print(bt.notes(m))

# %% [markdown]
# Here is how the whole library fits together; every box is a module you can open, and the
# chapters show their code where it matters.
#
# ```mermaid
# flowchart LR
#   C[ModelConfig<br/>config.py] --> P[params<br/>model.py]
#   P --> L["Layout (ffn, attention)<br/>layouts/*.py"]
#   L --> E["engine + generate<br/>shard_map bodies"]
#   L --> T["step_terms<br/>FLOPs, bytes, collectives"]
#   T --> CM["cost model<br/>cost.py + hardware.py"]
#   E --> M["measure<br/>compiled HLO"]
#   T --> M
#   CM --> PL["planner<br/>layouts, Pareto"]
#   PL --> W[widgets and chapters]
#   M --> W
# ```

# %% [markdown]
# ## Recap
#
# - `ti.emulate(256)` runs first, always: JAX fixes its device count when it starts.
# - `BLE_xyz` is [B, L, E] with E split over x, y and z; an axis not written is replicated.
# - A layout changes where the arithmetic happens, never what it computes: the sharded run's
#   tokens equal the reference's.
# - `measure` reads the collectives out of the compiled program and puts them beside the
#   layout's prediction; on the emulated mesh they agree exactly.
#
# ## Exercises
#
# **Exercise 00.1 · Derive.** On the mesh `ti.make_mesh((2, 4, 4))`, a collective over the
# axes y and z runs in separate groups at once: the devices that differ only along y and z
# form one group. How many devices does each group hold?
#
# **Exercise 00.2 · Derive.** How many parameters does one layer of PaLM 8B's feed-forward
# hold? Its dimensions are in the table of models; its SwiGLU has the three matrices described
# under it, and no biases.
#
# **Exercise 00.3 · Predict, then run.** The prefill step measured above ran one all-reduce.
# It sums the final RMS-norm's sum of squares: one f32 number per sequence, for the last
# position only (the only one whose logits generation needs), and every device ends with the
# whole sum. How many bytes per device will it move in the same step with a batch of 64
# sequences? Write your number in `answer_3`, or leave it there and type it into the
# prediction lock below: the lock runs the step only once your number is locked.

# %%
answer_1 = 16
answer_2 = 201_326_592
answer_3 = 256

# %%
from tpuinfer import sweeps
from tpuinfer_widgets import PredictionLock

lock = PredictionLock("00.3", "the all-reduce's bytes per device at batch 64", lambda: (
    sweeps.step_quantity(cfg, mesh, layouts["prefill"], phase="prefill", batch=64, tokens=8,
                         params=params, quantity="bytes:all-reduce")), guess=answer_3)
lock

# %%
lock.snapshot()

# %%
# NBVAL_CHECK_OUTPUT
bt.check("00.1", answer_1)
bt.check("00.2", answer_2)
bt.check("00.3", answer_3)
