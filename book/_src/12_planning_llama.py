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
# of 128,256 rows; and they run on TPU v5e, v6e and H100. This chapter plans Llama 3 70B with
# the same cost model and planner as PaLM 540B, and finds where the paper's conclusions carry
# over and where they change.
#
# **After this chapter you can** size a grouped-query model's KV cache and say how it splits
# over chips; find the fewest chips that hold a model and its cache; derive the batch above
# which decode turns compute-bound once the cache's reads are counted, and the context beyond
# which it never does; read a latency-against-cost frontier per context length; and size
# prefill servers against decode servers. (Paper: [Sections 2, 3.3 and 4](
# https://arxiv.org/abs/2211.05102); Llama 3's shapes: Grattafiori et al. 2024,
# [arXiv 2407.21783](https://arxiv.org/abs/2407.21783), Table 3.)

# %%
import tpuinfer as ti
ti.emulate(256)

# %%
import numpy as np
import plotly.graph_objects as go

import booktools as bt
from tpuinfer import kv, planner, theory
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
    rows.append([str(layout), "x".join(map(str, shape)), str(spec), local[2], local[0]])
print(bt.table(["layout", "mesh", "cache spec [B, S, K, D]", "K/V heads a chip",
                "sequences a chip"], rows))

# %% [markdown]
# On 2×2×2, 1D weight-stationary splits K = 4 over x·y (4 chips) and repeats it over z. On
# 4×8×8 it splits over x (4 chips) and repeats over y·z: 64 chips hold each head. 2D
# weight-stationary splits its heads over z·y then x, and z = 8 does not divide 4: every chip
# holds all four, as for multiquery. By batch, the cache splits over every chip whatever K is.
#
# The same for Llama 3 70B's cache per position on 16 chips at batch 32 (`kv.kv_bytes_per_chip`,
# the grouped model beside its multiquery and multihead forms, each with D = 128):

# %%
# NBVAL_CHECK_OUTPUT
per_position = {v: kv.kv_bytes_per_chip("llama-3-70b", v, 16, 32, 1)
                for v in kv.ATTENTION_VARIANTS + kv.GROUPED_VARIANTS}
fits = {v: kv.max_context("llama-3-70b", 16, 32, v, hardware="tpu-v5e") for v in per_position}
print(bt.table(["variant", "KV per position per chip", "max context (30% of a v5e's HBM)"],
               [[v, f"{b / 1024:.0f} KiB", f"{fits[v]:,}"] for v, b in per_position.items()]))

# %% [markdown]
# By heads, Llama's 8 heads split over 8 of the 16 chips and repeat twice: the same bytes as
# multiquery's one head on every chip. By batch each chip holds 2 of the 32 sequences with
# all 8 heads: 8 times multiquery by batch, a quarter of multihead by heads. Grouped-query
# attention buys back most of multiquery's saving in memory; the paper's 32× more context
# from optimized multiquery (its abstract) shrinks here to 8×, from 915 tokens to 7,324.
#
# ## How few chips
#
# The fewest chips (powers of two) on which the planner finds a decode step that fits, 16
# sequences at 8,192 tokens of context, per chip and weight format; each a prediction on the
# chip's datasheet profile, rule `overlap`:

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


fewest = {(hw, w): fewest_chips(hw, w) for hw in ("tpu-v5e", "tpu-v6e", "tpu-v5p", "h100-sxm")
          for w in ("bf16", "int8")}

# %%
# NBVAL_CHECK_OUTPUT
print(bt.table(["chip", "weights", "chips", "HBM a chip", "layout", "mesh", "per token",
                "memory"],
               [[hw, w, n, gib(get_hardware(hw).hbm_bytes), str(e.layout),
                 "x".join(map(str, e.mesh_shape)), bt.seconds(e.per_token_s),
                 gib(e.memory_per_chip_bytes)] for (hw, w), (n, e) in fewest.items()]))
try:  # twice the batch on the same 8 v5e chips
    planner.plan("llama-3-70b", "tpu-v5e", 8, 32, input_len=0, history_len=8192, gen_len=1,
                 weights="int8")
except UsageError as err:
    print()
    print(bt.wrapped([f"batch 32 on 8 tpu-v5e chips, int8: {err}"]))

# %% [markdown]
# The weights alone (70.6 GB in int8, twice that in bf16) set a floor; the cache of 16 × 8,192
# tokens, 43 GB more, raises it. A 16 GB v5e needs 8 chips in int8 and 16 in bf16; an 80 GB
# H100 needs 2 and 4. On so few chips the planner's choice is 1D weight-stationary, looped
# both ways: below the 2D crossover (n > 4F/E = 14 here, chapter 4), 1D moves fewer bytes.
# Twice the batch does not fit on those 8 v5e chips: 32 sequences' cache is 86 GB, and with
# the weights every layout needs more than a chip's 14.9 GiB (the planner's message, last
# line).
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
# batch is compute-bound (`theory.decode_critical_batch`, `theory.kv_bound_context`).

# %%
# NBVAL_CHECK_OUTPUT
rows = []
for name in ("palm-540b", "llama-3-70b", "llama-3-8b"):
    rows.append([name] + [f"{theory.decode_critical_batch(name, 'tpu-v5e', 'int8', s):.0f}"
                          for s in (0, 512, 1024, 8192)]
                + [f"{theory.kv_bound_context(name, 'tpu-v5e'):,.0f}"])
print("critical batch B* on tpu-v5e (datasheet), int8 weights, bf16 cache; inf: never")
print(bt.table(["model", "S = 0", "S = 512", "S = 1,024", "S = 8,192", "context beyond which "
                "never"], rows))

# %% [markdown]
# PaLM 540B's one K/V head keeps its decode able to turn compute-bound up to 37,000 tokens of
# context; Llama 3 70B's eight stop it at 1,764, Llama 3 8B's at 476. For a grouped-query model
# at chatbot contexts, decode is memory-bound at every batch: batching still spreads the
# weights' reads, but each added sequence adds a cache read that costs more time than its
# FLOPs. The cost model's own terms for the planner's best decode on 16 v5e chips (int8),
# against the batch, at two contexts:

# %%
batches = [4, 8, 16, 32, 64, 128, 256]
fig = go.Figure()
for context, dash in ((512, "solid"), (8192, "dot")):
    best = {}
    for b in batches:
        try:
            best[b] = planner.plan("llama-3-70b", "tpu-v5e", 16, b, input_len=0,
                                   history_len=context, gen_len=1, weights="int8").decode.best
        except UsageError:  # the cache no longer fits
            pass
    xs = list(best)
    fig.add_trace(go.Scatter(x=xs, y=[best[b].compute_s * 1e3 for b in xs], line_dash=dash,
                             name=f"compute, S = {context:,}", line_color="#4c78a8"))
    fig.add_trace(go.Scatter(x=xs, y=[(best[b].weights_s + best[b].kv_s) * 1e3 for b in xs],
                             line_dash=dash, name=f"weights + KV reads, S = {context:,}",
                             line_color="#e45756"))
ridge = theory.decode_critical_batch("llama-3-70b", "tpu-v5e", "int8", 512)
fig.add_vline(x=ridge, line_color="grey", annotation_text=f"B* at S = 512: {ridge:.0f}")
fig.update_xaxes(type="log", title="batch (sequences)")
fig.update_yaxes(type="log", title="ms per decode step (prediction, tpu-v5e datasheet)")
fig.update_layout(height=420, width=860, title="Llama 3 70B decode on 16 v5e chips, int8: "
                  "the planner's best layout's terms")
fig.show()

# %% [markdown]
# At S = 512 the compute line meets the reads only near batch 256, later than B* = 169: the
# derivation assumes each chip reads its own share of the cache, while the planner's layouts
# here (attention by heads, K = 8 heads on 16 chips) repeat each K/V head on two chips, so
# each chip reads more. At 8,192 the reads stay far above compute at every batch that fits,
# and above batch 64 the cache no longer fits.
#
# ## Where the paper's choices hold, and where they flip
#
# The paper's decode rule: 2D weight-stationary once the chips pass the crossover, attention
# by batch. For Llama 3 70B at batch 32 and 4,096 tokens of context on v5e (int8), and for the
# same model made multiquery or multihead (`kv.variant_config`):

# %%
# NBVAL_CHECK_OUTPUT
rows = []
for n in (8, 16, 32, 64):
    for variant, name in (("grouped-batch", "grouped (K = 8)"),
                          ("multiquery-batch", "multiquery (K = 1)"),
                          ("multihead", "multihead (K = 64)")):
        try:
            e = planner.plan(kv.variant_config("llama-3-70b", variant), "tpu-v5e", n, 32,
                             input_len=0, history_len=4096, gen_len=1, weights="int8").decode.best
            rows.append([n, name, str(e.layout), "x".join(map(str, e.mesh_shape)),
                         bt.seconds(e.per_token_s)])
        except UsageError:
            rows.append([n, name, "does not fit", "", ""])
print(bt.table(["chips", "attention", "layout", "mesh", "per token"], rows))
for ffn in ("ws1d", "ws2d"):  # 64 chips, the grouped model, each feed-forward layout's best
    e = planner.plan("llama-3-70b", "tpu-v5e", 64, 32, input_len=0, history_len=4096,
                     gen_len=1, weights="int8", ffn=ffn).decode.best
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
# its quality paid in decode time. Third, the feed-forward layout: 2D weight-stationary wins
# at 32 chips (and at 16 for the multiquery form), but at 64 the planner returns to 1D for
# all three models. On v5e's 2D
# torus only a full side of 16 chips is a ring: 1D's best slice, 4×16, has one; 2D's best,
# 8×8, has none, and its collectives take longer (the last two lines).
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
    frontiers[context] = planner.pareto("llama-3-70b", "tpu-v5e", chips=[8, 16, 32, 64],
                                        batches=[1, 4, 16, 64, 256], input_len=0,
                                        history_len=context, gen_len=64,
                                        weights="int8")["decode"]
    pts = frontiers[context]
    fig.add_trace(go.Scatter(x=[p["latency_s"] * 1e3 for p in pts],
                             y=[p["cost_chip_s_per_token"] * 1e3 for p in pts],
                             mode="lines+markers", name=f"context {context:,}",
                             text=[f"{p['chips']} chips, batch {p['batch']}, {p['ffn']}/"
                                   f"{p['attention']}" for p in pts]))
fig.update_xaxes(type="log", title="ms per generated token (prediction, tpu-v5e datasheet)")
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
# A longer context makes every token dearer: the cheapest point costs 1.44 chip-ms a token at
# 1,024 tokens of context, 3.57 at 4,096 and 11.6 at 16,384, where it falls back to batch
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
prefill = {b: planner.plan("llama-3-70b", "tpu-v5e", 16, b, input_len=2048, gen_len=0,
                           weights="int8").prefill.best for b in (1, 4, 16)}
decode = {b: planner.plan("llama-3-70b", "tpu-v5e", 16, b, input_len=0, history_len=2048,
                          gen_len=256, weights="int8").decode.best for b in (16, 64, 128)}
rows = [[f"prefill, batch {b}", str(e.layout), bt.seconds(e.latency_s), f"{e.mfu:.0%}",
         f"{b / e.latency_s:.1f}"] for b, e in prefill.items()]
rows += [[f"decode, batch {b}", str(e.layout), bt.seconds(e.latency_s), f"{e.mfu:.0%}",
          f"{b / e.latency_s:.1f}"] for b, e in decode.items()]
print(bt.table(["server of 16 chips", "layout", "latency", "MFU", "requests a second"], rows))
ratio = (64 / decode[64].latency_s) / (4 / prefill[4].latency_s)
print(f"prefill servers (batch 4) per decode server (batch 64): {ratio:.1f}")

# %% [markdown]
# A decode server at batch 64 finishes 17 requests a second; a prefill server at batch 4
# (half a second a batch) about 8: two prefill servers feed one decode server. The prefill
# MFU is the datasheet's bound (the paper measured 76% on its best prefill, Table 2), so on
# a real chip the prefill side needs more servers than this prediction says.
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

# **Exercise 12.2 · Predict, then run.** How many bytes per device will this step's
# all-to-alls move, both layers together (batch 8, f32)? Its Q and attention output move as
# chapter 6's did (the same 256 heads of 8); add K and V, each moving its chip's heads of the
# one token to batch-split.

# %%
answer_2 = 33_792

# %%
from tpuinfer import sweeps
from tpuinfer_widgets import PredictionLock

lock = PredictionLock("12.2", "all-to-all bytes per device, tiny-llama by-batch decode",
                      lambda: sweeps.step_quantity(small, (2, 2, 2), ti.Layout("ws2d", "batch"),
                                                   phase="decode", batch=8, context=64,
                                                   quantity="bytes:all-to-all"),
                      guess=answer_2)
lock

# %%
lock.snapshot()

# %%
# NBVAL_CHECK_OUTPUT
bt.check("12.2", answer_2)

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
# - With the cache's reads counted, decode turns compute-bound at B* = N·b / (2·N·bandwidth/
#   peak − S·k), and never beyond S = 2·N·bandwidth/(peak·k): 1,764 tokens for Llama 3 70B on
#   a v5e. Decode at chatbot contexts is memory-bound at every batch.
# - The paper's choices mostly hold; where n ≤ K attention by heads splits a grouped
#   model's cache as well as by batch does and skips the all-to-alls, and a chip's topology
#   (v5e's rings only on full sides of 16) can move the 1D-against-2D choice.
# - Prefill and decode servers are sized apart: here two prefill servers per decode server.
#
# ## Exercises
#
# Exercises 12.1 and 12.2 are above, with the models and the grouped-query step.
#
# **Exercise 12.3 · Derive.** The context beyond which no batch makes Llama 3 70B's decode
# compute-bound on an H100 (`h100-sxm`: 989 TFLOP/s, 3.35 TB/s), with a bf16 cache, in tokens,
# to the nearest hundred.

# %%
answer_3 = 1400

# %%
# NBVAL_CHECK_OUTPUT
bt.check("12.3", answer_3)
