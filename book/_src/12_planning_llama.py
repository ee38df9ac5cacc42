# ---
# jupyter:
#   jupytext:
#     formats: ipynb,_src//py:percent
# ---

# %% [markdown]
# # 12 · Planning Llama 3 70B
#
# The paper's method outlives its model. The models served today are Llama-shaped: a serial
# block with a SwiGLU feed-forward, **grouped-query attention** (K key/value heads, each read
# by H/K query heads: Llama 3 70B has 64 query heads and 8 K/V heads), an untied output table
# of 128,256 rows; and they run on TPU v5e, v6e and H100, usually with the KV cache in int8
# and as several replicas of a smaller group. This chapter plans Llama 3 70B with the same
# cost model and planner as PaLM 540B, and finds where the paper's conclusions carry over
# and where they change.
#
# Its plans on v5e are priced on `tpu-v5e-calibrated`: the v5e datasheet with three
# constants fitted to three public measurements of this very model, int8 weights and an
# int8 cache on a v5e-16 (chapter 14 names them and shows how far the fit holds on every
# other row of that table). Where an H100 is planned, `h100-calibrated` likewise; the other
# chips, and the roofline's derivation, use their datasheets. Every table says which.
#
# **After this chapter you can** size a grouped-query model's KV cache, in bf16 and in int8,
# and say how it splits over chips; find the fewest chips that hold a model and its cache;
# derive the batch above which decode turns compute-bound once the cache's reads are
# counted, and the context beyond which it never does; say when several replicas of a
# smaller group beat one group over every chip; read a latency-against-cost frontier per
# context length; and size prefill servers against decode servers. (Paper:
# [Sections 2, 3.3 and 4](
# https://arxiv.org/abs/2211.05102); Llama 3's shapes: Grattafiori et al. 2024,
# [arXiv 2407.21783](https://arxiv.org/abs/2407.21783), Table 3.)

# %%
import tpuinfer as ti
ti.emulate(256)

# %%
import numpy as np
import plotly.graph_objects as go
from jax.sharding import PartitionSpec as P

import booktools as bt
from tpuinfer import accuracy, kv, planner, theory
from tpuinfer.errors import UsageError
from tpuinfer.hardware import chip_counts, get_hardware
from tpuinfer.layouts import registry
from tpuinfer.measure import measure
from tpuinfer.report import gib

# %% [markdown]
# ## The model beside PaLM
#
# Each preset's numbers carry their source in `tpuinfer/config.py`. The number that matters
# most for serving is the KV cache a token costs, every layer's keys and values of it.
#
# **Exercise 12.1 · Derive.** How many bytes of KV cache does one token of Llama 3 70B hold
# in bf16? It has 80 layers, and 8 K/V heads of 128. The table below then has it for every
# model (`ModelConfig.kv_bytes_per_token`).

# %%
answer_1 = 327_680

# %%
# NBVAL_CHECK_OUTPUT
bt.check("12.1", answer_1)

# %%
# NBVAL_CHECK_OUTPUT
rows = []
for name in ("palm-62b", "palm-540b", "llama-3-8b", "llama-3-70b", "llama-3-405b",
             "qwen2.5-72b"):
    c = ti.MODELS[name]
    rows.append([name, f"{c.n_params() / 1e9:.1f}B", c.n_layers, c.E, c.H, c.K, c.D,
                 f"{c.V:,}", "tied" if c.tied_embeddings else "untied",
                 f"{c.kv_bytes_per_token(2) / 1024:.0f} KiB",
                 f"{c.weight_bytes('int8') / 1e9:.1f} GB"])
print(bt.table(["model", "params", "layers", "E", "H", "K", "D", "V", "output",
                "KV a token", "int8 weights"], rows))
print("output: the output table tied to the embedding or not; KV a token: in bf16")

# %% [markdown]
# Llama 3 70B is an eighth of PaLM 540B's size, yet a token of its cache is 2.7 times
# PaLM's: PaLM's one K/V head (multiquery) against Llama's eight. Grouped-query attention
# sits between the paper's two extremes, and the planner now has to decide where those eight
# heads live.
#
# ## Where the K/V heads live
#
# Attention by heads splits the query heads over the chips h the feed-forward layout splits
# its heads over. A multiquery model's one K/V head cannot split at all (chapter 6: every
# chip caches it). A grouped model's K/V heads split over as many chips as K allows, the
# longest leading part p of h whose chip count divides K, and repeat over the rest
# (`tpuinfer.layouts._common.kv_split`). tiny-llama (K = 4, the engine's grouped preset),
# its cache spec `[B, S, K, D]` by layout and mesh:

# %%
# NBVAL_CHECK_OUTPUT
small = ti.MODELS["tiny-llama"]
rows = []
for layout, shape, batch in [(ti.Layout("ws1d", "heads"), (2, 2, 2), 8),
                             (ti.Layout("ws1d", "heads"), (4, 8, 8), 256),
                             (ti.Layout("ws2d", "heads"), (4, 8, 8), 256),
                             (ti.Layout("ws1d", "batch"), (4, 8, 8), 256)]:
    spec = registry.cache_spec(small, layout, shape, batch)
    local = registry.cache_shape_per_chip(small, layout, shape, batch, 8)
    rows.append([str(layout), "x".join(map(str, shape)), str(P(*spec)), local[2], local[0]])
print(bt.table(["layout", "mesh", "cache spec [B, S, K, D]", "K/V heads a chip",
                "sequences a chip"], rows))

# %% [markdown]
# On 2×2×2, 1D weight-stationary splits K = 4 over x·y (4 chips) and repeats it over z. On
# 4×8×8 it splits over x (4 chips) and repeats over y·z: 64 chips hold each head. 2D
# weight-stationary splits its heads over z·y then x, and z = 8 does not divide 4: every chip
# holds all four, as for multiquery. By batch, the cache splits over every chip whatever K is.
#
# Servers keep this cache in int8: one byte a value, and one bf16 scale per token and K/V
# head (`kv="int8"`, chapter 6; chapter 9 measures its cost in quality).
#
# **Exercise 12.2 · Derive.** How many bytes of KV cache does one token of Llama 3 70B hold
# with the cache in int8?

# %%
answer_2 = 166_400

# %%
# NBVAL_CHECK_OUTPUT
bt.check("12.2", answer_2)

# %% [markdown]
# The cache per position on 16 chips at batch 32 (`kv.kv_bytes_per_chip`, the grouped model
# beside its multiquery and multihead forms, each with D = 128), and the longest context
# that fits in 30% of a v5e's HBM, with the cache in bf16 and in int8:

# %%
# NBVAL_CHECK_OUTPUT
per_position = {v: kv.kv_bytes_per_chip("llama-3-70b", v, 16, 32, 1)
                for v in kv.ATTENTION_VARIANTS + kv.GROUPED_VARIANTS}
fits = {(v, fmt): kv.max_context("llama-3-70b", 16, 32, v, hardware="tpu-v5e", kv=fmt)
        for v in per_position for fmt in ("bf16", "int8")}
print(bt.table(["variant", "KV a position a chip (bf16)", "max context, bf16",
                "max context, int8"],
               [[v, f"{b / 1024:.0f} KiB", f"{fits[v, 'bf16']:,}", f"{fits[v, 'int8']:,}"]
                for v, b in per_position.items()]))

# %% [markdown]
# By heads, Llama's 8 heads split over 8 of the 16 chips and repeat twice: the same bytes as
# multiquery's one head on every chip. By batch each chip holds 2 of the 32 sequences with
# all 8 heads: 8 times multiquery by batch, a quarter of multihead by heads. Grouped-query
# attention buys back most of multiquery's saving in memory; the paper's 32× more context
# from optimized multiquery (its abstract) shrinks here to 8×, from 915 tokens to 7,324. An
# int8 cache buys back a factor of two of what grouped-query attention gave up, for every
# variant alike.
#
# ## How few chips
#
# The fewest chips (powers of two) on which the planner finds a decode step that fits, 16
# sequences at 8,192 tokens of context (a bf16 cache), per chip and weight format; each a
# prediction under rule `overlap`, on the chip's calibrated profile where it has one (v5e,
# H100) and its datasheet where not:

# %%
def fewest_chips(hw, weights, batch=16, context=8192):
    for n in [c for c in chip_counts(hw, 1, 256) if c & (c - 1) == 0]:
        try:
            p = planner.plan("llama-3-70b", hw, n, batch, input_len=0, history_len=context,
                             gen_len=1, weights=weights)
        except UsageError:  # nothing fits on n chips
            continue
        return n, p.decode.best
    return None, None


fewest = {(hw, w): fewest_chips(hw, w)
          for hw in ("tpu-v5e-calibrated", "tpu-v6e", "tpu-v5p", "h100-calibrated")
          for w in ("bf16", "int8")}

# %%
# NBVAL_CHECK_OUTPUT
print(bt.table(["chip", "weights", "chips", "HBM a chip", "layout", "mesh", "per token",
                "memory"],
               [[hw, w, n, gib(get_hardware(hw).hbm_bytes), str(e.layout),
                 "x".join(map(str, e.mesh_shape)), bt.seconds(e.per_token_s),
                 gib(e.memory_per_chip_bytes)] for (hw, w), (n, e) in fewest.items()]))
try:  # twice the batch on the same 8 v5e chips
    planner.plan("llama-3-70b", "tpu-v5e-calibrated", 8, 32, input_len=0, history_len=8192,
                 gen_len=1, weights="int8")
except UsageError as err:
    print()
    print(bt.wrapped([f"batch 32 on 8 tpu-v5e chips, int8: {err}"]))
e = planner.plan("llama-3-70b", "tpu-v5e-calibrated", 8, 32, input_len=0, history_len=8192,
                 gen_len=1, weights="int8", kv="int8").decode.best
print(f"the same with an int8 cache: {e.layout} on {'x'.join(map(str, e.mesh_shape))}, "
      f"{gib(e.memory_per_chip_bytes)} a chip, {bt.seconds(e.per_token_s)} a token")

# %% [markdown]
# The weights alone (70.6 GB in int8, twice that in bf16) set a floor; the cache of 16 × 8,192
# tokens, 43 GB more, raises it. A 16 GB v5e needs 8 chips in int8 and 16 in bf16; an 80 GB
# H100 needs 2 and 4. On so few chips the planner's choice is the 1D program, looped both
# ways: it prints as 2D weight-stationary on a mesh whose x is 1 (chapter 10), or as 1D by
# batch. Below the 2D crossover (n > 4F/E = 14 chips here, chapter 4; 8F/E = 28 for a
# SwiGLU layer's two reduce-scatters, chapter 10), 1D moves fewer bytes. Twice the batch
# does not fit on those 8 v5e chips: 32 sequences' cache is 86 GB, and with the weights
# every layout needs more than a chip's 14.9 GiB (the planner's message). With the cache in
# int8 it fits (the last line): that is what the format buys first.
#
# ## The decode roofline, with the cache
#
# Chapter 1's ridge point counts only the weights: decode turns compute-bound once the batch
# B passes peak·b / (2·HBM bandwidth), 120 sequences on a v5e in int8. But every sequence
# also reads its own cache, S·k bytes for S positions of k bytes each, and that read does not
# shrink as the batch grows. Compute 2·N·B/peak against (N·b + B·S·k)/bandwidth:
#
# B* = N·b / (2·N·bandwidth/peak − S·k),
#
# and the denominator reaches zero at S = 2·N·bandwidth/(peak·k): beyond that context no
# batch is compute-bound (`theory.decode_critical_batch`, `theory.kv_bound_context`). k is
# the cache's bytes a token: an int8 cache halves it (its scales aside), and doubles that
# context. On the v5e datasheet (the roofline is the chip's, not a fit's):

# %%
# NBVAL_CHECK_OUTPUT
rows = []
for name in ("palm-540b", "llama-3-70b", "llama-3-8b"):
    for fmt in ("bf16", "int8"):
        rows.append([name, fmt] + [
            f"{theory.decode_critical_batch(name, 'tpu-v5e', 'int8', s, kv=fmt):.0f}"
            for s in (0, 512, 1024, 8192)]
            + [f"{theory.kv_bound_context(name, 'tpu-v5e', kv=fmt):,.0f}"])
print("critical batch B* on tpu-v5e (datasheet), int8 weights; inf: never")
print(bt.table(["model", "cache", "S = 0", "S = 512", "S = 1,024", "S = 8,192",
                "never beyond S"], rows))

# %% [markdown]
# PaLM 540B's one K/V head keeps its decode able to turn compute-bound up to 37,000 tokens of
# context; Llama 3 70B's eight stop it at 1,764 with a bf16 cache, Llama 3 8B's at 476. For a
# grouped-query model at chatbot contexts, decode is memory-bound at every batch: batching
# still spreads the weights' reads, but each added sequence adds a cache read that costs
# more time than its FLOPs. An int8 cache moves each of those contexts to nearly twice as
# far. The cost model's own terms for the planner's best decode on 16 v5e chips (int8
# weights; datasheet, to set beside B*), against the batch, at 2,048 tokens of context, past
# the bf16 cache's limit and short of the int8 one's:

# %%
batches = [4, 8, 16, 32, 64, 128, 256, 512]
fig = go.Figure()
for fmt, dash in (("bf16", "dot"), ("int8", "solid")):
    best = {}
    for b in batches:
        try:
            best[b] = planner.plan("llama-3-70b", "tpu-v5e", 16, b, input_len=0,
                                   history_len=2048, gen_len=1, weights="int8",
                                   kv=fmt).decode.best
        except UsageError:  # the cache no longer fits
            pass
    xs = list(best)
    fig.add_trace(go.Scatter(x=xs, y=[best[b].compute_s * 1e3 for b in xs], line_dash=dash,
                             name=f"compute, {fmt} cache", line_color="#4c78a8"))
    fig.add_trace(go.Scatter(x=xs, y=[(best[b].weights_s + best[b].kv_s) * 1e3 for b in xs],
                             line_dash=dash, name=f"weights + KV reads, {fmt} cache",
                             line_color="#e45756"))
ridge = theory.decode_critical_batch("llama-3-70b", "tpu-v5e", "int8", 2048, kv="int8")
fig.add_vline(x=ridge, line_color="grey", annotation_text=f"B*, int8 cache: {ridge:.0f}")
fig.update_xaxes(type="log", title="batch (sequences)")
fig.update_yaxes(type="log", title="ms per decode step (prediction, tpu-v5e datasheet)")
fig.update_layout(height=420, width=860, title="Llama 3 70B decode on 16 v5e chips, int8 "
                  "weights, S = 2,048: the planner's best layout's terms")
fig.show()

# %% [markdown]
# With a bf16 cache the reads stay above compute at every batch that fits: past its limit
# context no batch is compute-bound, and each added sequence adds more read time than
# compute. With the int8 cache the two lines cross, between batch 128 and 256, a little
# before the B* the derivation gives: the cost model's compute also counts attention's
# FLOPs (QK^T and PV, which grow with the context), which B* leaves out. What an int8 cache
# buys a grouped-query model at this context is the difference between a decode that is
# memory-bound at every batch and one that a large batch can still make compute-bound.
#
# ## Where the paper's choices hold, and where they flip
#
# The paper's decode rule: 2D weight-stationary once the chips pass the crossover, attention
# by batch. For Llama 3 70B at batch 32 and 4,096 tokens of context on v5e (int8 weights, a
# bf16 cache; `tpu-v5e-calibrated`), and for the same model made multiquery or multihead
# (`kv.variant_config`):

# %%
# NBVAL_CHECK_OUTPUT
rows = []
for n in (8, 16, 32, 64):
    for variant, name in (("grouped-batch", "grouped (K = 8)"),
                          ("multiquery-batch", "multiquery (K = 1)"),
                          ("multihead", "multihead (K = 64)")):
        try:
            e = planner.plan(kv.variant_config("llama-3-70b", variant), "tpu-v5e-calibrated",
                             n, 32, input_len=0, history_len=4096, gen_len=1,
                             weights="int8").decode.best
            rows.append([n, name, str(e.layout), "x".join(map(str, e.mesh_shape)),
                         bt.seconds(e.per_token_s)])
        except UsageError:
            rows.append([n, name, "does not fit", "", ""])
print(bt.table(["chips", "attention", "layout", "mesh", "per token"], rows))
for ffn in ("ws1d", "ws2d"):  # 64 chips, the grouped model, each feed-forward layout's best
    e = planner.plan("llama-3-70b", "tpu-v5e-calibrated", 64, 32, input_len=0,
                     history_len=4096, gen_len=1, weights="int8", ffn=ffn).decode.best
    print(f"64 chips, best {ffn}: {e.layout} on {'x'.join(map(str, e.mesh_shape))}, "
          f"collectives {bt.seconds(e.comm_s)}, step {bt.seconds(e.per_token_s)}")

# %% [markdown]
# Three things differ from PaLM 540B on TPU v4. On 8 chips the grouped model's decode runs
# attention **by heads**: its 8 K/V heads split one to a chip, nothing is repeated, and by
# batch would read the same cache bytes after two all-to-alls per layer. Where n ≤ K the
# heads split the cache as well as the batch does; the paper's multiquery model, with one
# head, never had that choice. From 16 chips on the heads repeat, and by batch wins again,
# as the paper found. Second, the step itself: at every chip count the grouped model is
# slower than its multiquery form, because its cache reads are 8 times larger, the price of
# its quality paid in decode time. Third, the feed-forward layout: up to 16 chips the
# planner runs the 1D program (1D by batch, or 2D on a mesh whose x is 1); from 32 the
# grouped and multiquery forms split E over X = 2, past SwiGLU's crossover (8F/E = 28
# chips), and the multihead form follows at 64; there 2D's collectives take a third less
# time than 1D's best (the last two lines).
#
# ## One wide group, or replicas
#
# Sixteen chips can run one model over all sixteen, or two replicas of the model on eight
# chips each, the batch split between them (`replicas=2`), or more. A replica holds the
# whole model on fewer chips, so each chip reads twice the weights a step; in exchange each
# replica decodes half the batch, with its collectives over half the chips. The planner
# weighs every replica count that divides the chips and the batch and whose replica holds
# the model (`replicas="auto"`; `tpuinfer plan --replicas auto`), and says which it chose.
# The public jax-llm-examples table measured both on a v5e-16 (chapter 14): Llama 3.1 70B,
# int8 weights and cache, tensor parallel over 16 chips and as two replicas of 8.
#
# **Exercise 12.3 · Predict, then run.** Llama 3 70B decoding on 16 v5e chips
# (`tpu-v5e-calibrated`), int8 weights and cache, 2,048 tokens of context: from what batch (a
# power of two, from 8 up) will `replicas="auto"` choose two replicas of 8 chips over one
# group of 16? Think of which of the step's terms each choice doubles or halves, and which
# term grows with the batch. The lock asks the planner.

# %%
answer_3 = 128

# %%
from tpuinfer import sweeps
from tpuinfer_widgets import PredictionLock

REQUEST = dict(input_len=0, history_len=2048, gen_len=1, weights="int8", kv="int8")
lock = PredictionLock("12.3", "the first batch at which two replicas of 8 beat one group of 16",
                      lambda: sweeps.replica_crossover("llama-3-70b", "tpu-v5e-calibrated", 16,
                                                       [8, 16, 32, 64, 128, 256], **REQUEST),
                      guess=answer_3)
lock

# %%
lock.snapshot()

# %%
# NBVAL_CHECK_OUTPUT
bt.check("12.3", answer_3)

# %% [markdown]
# The public measurements of both shapes, each beside the model's price of exactly what ran
# (1D weight-stationary, attention by heads, plain collectives, the cache as chapter 14
# reads the table: filled to 1,024 positions), and then the planner's own choice at 2,048
# positions, free to pick layouts and replicas:

# %%
# NBVAL_CHECK_OUTPUT
public = {(r.config["batch"], r.config["replicas"]): r for r in accuracy.rows("tpu-v5e")
          if r.config.get("context_length") == 2048}
rows = []
for b in (8, 16, 32, 64, 128):
    row = [b]
    for r in (1, 2):
        ran = public[b, r]
        row += [bt.seconds(ran.measured),
                bt.seconds(accuracy.predict(ran, "tpu-v5e-calibrated"))]
    e = planner.plan("llama-3-70b", "tpu-v5e-calibrated", 16, b, replicas="auto",
                     **REQUEST).decode.best
    row += [f"{e.replicas} x {'x'.join(map(str, e.mesh_shape))}", bt.seconds(e.per_token_s)]
    rows.append(row)
print("a decode step; measured: jax-ml/jax-llm-examples, llama3/README.md (v5e-16);")
print("predicted: tpu-v5e-calibrated")
print(bt.table(["batch", "1 x 16 measured", "predicted", "2 x 8 measured", "predicted",
                "planner (auto)", "its step"], rows))
for r in (1, 2):  # the terms of the batch-128 step as it ran, per chip
    ph = accuracy.phases(public[128, r], "tpu-v5e-calibrated")[0]
    terms = ", ".join(f"{k[:-2]} {bt.seconds(v / ph.steps)}" for k, v in ph.times().items())
    print(f"batch 128, {r} x {16 // r} chips: {terms}")

# %% [markdown]
# Measured and priced alike, one group of 16 wins up to batch 64 and two replicas of 8 win at
# 128. The terms say why (the last two lines). A replica's chips each read twice the
# weights, 10.6 ms a step against 5.4, a price that does not grow with the batch. What a
# replica halves does grow with it: each collective runs over 8 chips instead of 16, and the
# cache's reads halve too, since 8 K/V heads on 16 chips repeat each head on two chips and
# on 8 chips hold each once. Once those outgrow the weights' second read, replicas win. The
# planner's own choice switches at the same batch; its layouts (looped, attention by batch
# where that pays) it prices faster than the public code's at every batch, even at twice
# the filled context: a prediction nobody has measured.
#
# ## Latency against cost, per context length
#
# The paper's Figure 1 for Llama 3 70B's decode on v5e (int8): every chip count and batch,
# the points no other point beats on both latency per token and chip-seconds per token, at
# three contexts (`planner.pareto`).

# %%
fig = go.Figure()
frontiers = {}
for context in (1024, 4096, 16384):
    frontiers[context] = planner.pareto("llama-3-70b", "tpu-v5e-calibrated",
                                        chips=[8, 16, 32, 64],
                                        batches=[1, 4, 16, 64, 256], input_len=0,
                                        history_len=context, gen_len=64,
                                        weights="int8")["decode"]
    pts = frontiers[context]
    fig.add_trace(go.Scatter(x=[p["latency_s"] * 1e3 for p in pts],
                             y=[p["cost_chip_s_per_token"] * 1e3 for p in pts],
                             mode="lines+markers", name=f"context {context:,}",
                             text=[f"{p['chips']} chips, batch {p['batch']}, {p['ffn']}/"
                                   f"{p['attention']}" for p in pts]))
fig.update_xaxes(type="log", title="ms per generated token (prediction, tpu-v5e-calibrated)")
fig.update_yaxes(type="log", title="chip-ms per generated token")
fig.update_layout(height=420, width=860,
                  title="Llama 3 70B decode, int8, on v5e: the latency-cost frontier")
fig.show()

# %%
# NBVAL_CHECK_OUTPUT
for context, pts in frontiers.items():
    cheapest = min(pts, key=lambda p: p["cost_chip_s_per_token"])
    print(f"context {context:6,}: cheapest {cheapest['chips']} chips, batch "
          f"{cheapest['batch']}, {bt.seconds(cheapest['latency_s'])} a token, "
          f"{cheapest['cost_chip_s_per_token'] * 1e3:.2f} chip-ms a token")

# %% [markdown]
# A longer context makes every token dearer: the cheapest point costs 1.80 chip-ms a token at
# 1,024 tokens of context, 3.05 at 4,096 and 8.98 at 16,384, where it falls back to batch
# 64: a larger batch's cache no longer fits on these chips, and past the cache-bound context
# a larger batch saves only the weights' reads, which the cache's already outweigh.
#
# ## Prefill servers per decode server
#
# Prefill and decode want different machines (chapter 7), so a service can run them on
# separate servers and hand the cache from one to the other (disaggregated serving). How many
# of each? A request of 2,048 prompt tokens and 256 generated, both on servers of 16 v5e
# chips (int8): a prefill server serves batch/latency requests a second; a decode server
# batch/(256 · time per token).

# %%
# NBVAL_CHECK_OUTPUT
prefill = {b: planner.plan("llama-3-70b", "tpu-v5e-calibrated", 16, b, input_len=2048,
                           gen_len=0, weights="int8").prefill.best for b in (1, 4, 16)}
decode = {b: planner.plan("llama-3-70b", "tpu-v5e-calibrated", 16, b, input_len=0,
                          history_len=2048, gen_len=256, weights="int8").decode.best
          for b in (16, 64, 128)}
rows = [[f"prefill, batch {b}", str(e.layout), bt.seconds(e.latency_s), f"{e.mfu:.0%}",
         f"{b / e.latency_s:.1f}"] for b, e in prefill.items()]
rows += [[f"decode, batch {b}", str(e.layout), bt.seconds(e.latency_s), f"{e.mfu:.0%}",
          f"{b / e.latency_s:.1f}"] for b, e in decode.items()]
print(bt.table(["server of 16 chips", "layout", "latency", "MFU", "requests a second"], rows))
ratio = (64 / decode[64].latency_s) / (4 / prefill[4].latency_s)
print(f"prefill servers (batch 4) per decode server (batch 64): {ratio:.1f}")

# %% [markdown]
# A decode server at batch 64 finishes 23 requests a second; a prefill server at batch 4
# (a second a batch) 4: about six prefill servers feed one decode server. Read the prefill
# side with care. Its MFU, 36% to 42%, is the calibrated profile's matmuls at 43% of peak
# less their communication, and that efficiency was fitted to decode steps only (chapter
# 14), never to a prefill: the paper's TPU v4 reached 76% on its best prefill (Table 2). The
# count of prefill servers is the least tested number in this chapter.
#
# ## A grouped-query step, for real
#
# The engine runs grouped-query attention on the emulated mesh exactly as on a slice:
# tiny-llama (serial SwiGLU, K = 4, untied) on 2×2×2, 2D weight-stationary decode with
# attention by batch. Each chip of z·y computes its K/V head (4 heads over z·y = 4 chips),
# whole on every chip of x, where it rides in the X copies of step 3's reduce-scatter
# (chapter 4). By batch, K and V move to batch-split by an all-to-all over z·y, where their
# heads are split, and over x, where they repeat, each chip keeps its own rows. Compiled,
# every collective against the prediction:

# **Exercise 12.4 · Predict, then run.** How many bytes per device will this step's
# all-to-alls move, both layers together (batch 8, f32)? Its Q and attention output move as
# chapter 6's did (the same 256 heads of 8); add K and V, each moving its chip's heads of the
# one token to batch-split.

# %%
answer_4 = 33_792

# %%
lock = PredictionLock("12.4", "all-to-all bytes per device, tiny-llama by-batch decode",
                      lambda: sweeps.step_quantity(small, (2, 2, 2), ti.Layout("ws2d", "batch"),
                                                   phase="decode", batch=8, context=64,
                                                   quantity="bytes:all-to-all"),
                      guess=answer_4)
lock

# %%
lock.snapshot()

# %%
# NBVAL_CHECK_OUTPUT
bt.check("12.4", answer_4)

# %%
m = measure(small, ti.make_mesh((2, 2, 2)), ti.Layout("ws2d", "batch"), phase="decode",
            batch=8, context=64, repeats=0)

# %%
# NBVAL_CHECK_OUTPUT
print(bt.sides_table(m))
exact = lambda side: sorted((x.kind, x.axes, x.count, x.bytes) for x in side.collectives)
print("every collective equal to the prediction:", exact(m.measured) == exact(m.predicted))

# %% [markdown]
# ## Recap
#
# - Grouped-query attention's K/V heads split over as many chips as K allows and repeat over
#   the rest; by batch the cache splits over every chip. Llama 3 70B's cache a token is 320
#   KiB, 2.7 times PaLM 540B's.
# - An int8 cache (a byte a value, a bf16 scale per token and head) nearly halves it: about
#   twice the context in the same memory, and half the cache's reads a step.
# - With the cache's reads counted, decode turns compute-bound at B* = N·b / (2·N·bandwidth/
#   peak − S·k), and never beyond S = 2·N·bandwidth/(peak·k): 1,764 tokens for Llama 3 70B on
#   a v5e with a bf16 cache, 3,473 with an int8 one. Decode at chatbot contexts is
#   memory-bound at every batch unless the cache is small.
# - The paper's choices mostly hold; where n ≤ K attention by heads splits a grouped
#   model's cache as well as by batch does and skips the all-to-alls, and SwiGLU's two
#   reduce-scatters move the 1D-against-2D crossover to 8F/E.
# - Replicas of a smaller group read the weights more times but halve what grows with the
#   batch (collectives, repeated cache reads): on a v5e-16, two replicas of 8 win from batch
#   128, in the public measurements and in the model.
# - Prefill and decode servers are sized apart: here about six prefill servers per decode
#   server, a count that rests on the least tested of the calibrated constants.
#
# ## Exercises
#
# Exercises 12.1 to 12.4 are above: the cache a token costs in bf16 and in int8, when
# replicas win, and the grouped-query step.
#
# **Exercise 12.5 · Derive.** The context beyond which no batch makes Llama 3 70B's decode
# compute-bound on an H100 (`h100-sxm`: 989 TFLOP/s, 3.35 TB/s), with a bf16 cache, in tokens,
# to the nearest hundred.

# %%
answer_5 = 1400

# %%
# NBVAL_CHECK_OUTPUT
bt.check("12.5", answer_5)
