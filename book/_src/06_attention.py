# ---
# jupyter:
#   jupytext:
#     formats: ipynb,_src//py:percent
# ---

# %% [markdown]
# # 6 · Attention: multiquery by heads and by batch, and context length
#
# In decode, every step reads the whole **KV cache**: the keys and values of every token
# each sequence has seen, for every layer. At large batch and long context that is more
# bytes than the weights. PaLM uses **multiquery** attention: its H query heads share a
# single key/value head (K = 1), which makes the cache H times smaller than multihead's.
#
# But multiquery takes away the dimension the layouts of chapters 3 to 5 split attention
# over. With attention partitioned **by heads** (what those chapters did), each chip holds
# some query heads, and the single K/V head must be on every one of them: the cache is
# *replicated* over the heads axes, and the memory saving is lost.
#
# The paper's answer is to partition attention **by batch**: Q, K, V and the cache are split
# over the sequences, so each chip holds and reads only 1/n of the cache. The price is two
# all-to-alls per layer, to move Q from head-split to batch-split and the attention output
# back. In decode, Q is one token per sequence while the cache holds thousands: the trade
# pays.
#
# **After this chapter you can** derive the KV cache per chip of multihead, multiquery by
# heads and multiquery by batch; explain why partitioning by batch multiplies the context
# that fits; count the collectives attention by batch adds; and say when it pays in decode
# and why it matters less in prefill. (Paper:
# [Section 3.3](https://arxiv.org/abs/2211.05102), "Partitioning the attention layer", and
# Table 1.)
#
# ```mermaid
# flowchart LR
#   Q["Q: B_bLH_hD<br/>(heads split)"] -- "all-to-all(h)" --> QB["Q: B_bhLHD<br/>(batch split)"]
#   QB -- "attend against<br/>own cache rows B_bhSD" --> OB["O: B_bhLHD"]
#   OB -- "all-to-all(h)" --> O["O: B_bLH_hD<br/>(back to heads) → · W_o"]
# ```

# %%
import tpuinfer as ti
ti.emulate(256)

# %%
import inspect

import numpy as np
import plotly.graph_objects as go

import booktools as bt
from tpuinfer import cost, engine, kv, planner, sweeps
from tpuinfer.layouts import attn_batch, attn_heads, step_terms
from tpuinfer.measure import measure
from tpuinfer.hardware import get_hardware
from tpuinfer.paper import TABLE1

# %% [markdown]
# ## The two attention layouts
#
# Each layout file's docstring, up to where it states the KV cache a chip holds (exercise
# 06.1 derives that below):

# %%
print(attn_heads.__doc__[:attn_heads.__doc__.index("KV-cache bytes per chip")])

# %%
print(attn_batch.__doc__[:attn_batch.__doc__.index("KV-cache bytes per chip")])

# %% [markdown]
# Attention by batch's body: the all-to-all, then multiquery's K and V need no traffic
# (every chip of the heads axes already computed them for all its sequences, and keeps its
# own rows), then attention on whole heads against the chip's own cache rows, then the
# all-to-all back.

# %%
print(inspect.getsource(attn_batch.attend))

# %% [markdown]
# ## What it saves: the KV cache per chip
#
# PaLM 540B on 64 chips, batch 512, a 2048-token context, in bf16. The three variants the
# paper compares: multihead (its comparison model has 48 heads of 128, so its cache is 48
# heads wide, split over the chips by heads), multiquery by heads (one head of 256, replicated
# on every chip), multiquery by batch (one head, split by sequence). The cache holds K and V
# for every layer (118), position and sequence.
#
# **Exercise 06.1 · Derive.** How many GiB of KV cache does each chip hold with multiquery by
# batch, for that request (bf16: 2 bytes a number)?
#
# **Exercise 06.2 · Derive.** The paper's Table 1 gives the longest context whose cache fits
# in 30% of a chip's 32 GiB of HBM. What is it for multihead at batch 512? (With 48 heads
# split over 64 chips, a chip still holds a whole head.)

# %%
answer_1 = 1.84
answer_2 = 333

# %% [markdown] tags=["solution"]
# **Solution 06.1 and 06.2.** A chip's cache is 2 (K and V) · layers · (K/V heads it holds) ·
# D · bytes · (sequences it holds) · S.
#
# - Multiquery by batch: one head, 512/64 = 8 sequences a chip:
#   2 · 118 · 1 · 256 · 2 · 8 · 2048 = 1,979,711,488 bytes = **1.84 GiB**.
# - Multiquery by heads: one head, but all 512 sequences on every chip: 64 times that,
#   118 GiB. Multiquery's H-times saving is lost, and more: the one head is 256 wide.
# - Multihead: ⌈48/64⌉ = 1 head of 128 a chip, all 512 sequences: 59 GiB.
#
# Table 1 divides the budget, 0.3 · 32 GiB = 10,307,921,510 bytes, by the bytes one position
# costs a chip: multihead 2 · 118 · 128 · 2 · 512 = 30,932,992 bytes at batch 512, so
# **333 positions** (the paper prints 330); multiquery by heads 61,865,984, so 166 (165);
# multiquery by batch 966,656, so 10,663 (10,700). At batch 128 each is 4 times longer. By
# batch against multihead: 10,663/333 = 32, the paper's headline.

# %% tags=["solution"]
print({v: (round(planner.kv_bytes_per_chip("palm-540b", v, 64, 512, 2048) / 2**30, 2),
           planner.max_context("palm-540b", 64, 512, v)) for v in planner.ATTENTION_VARIANTS})

# %%
# NBVAL_CHECK_OUTPUT
bt.check("06.1", answer_1)
bt.check("06.2", answer_2)

# %% [markdown]
# The library's table, for all three variants at the paper's two batches:

# %%
# NBVAL_CHECK_OUTPUT
rows = [[v, f"{planner.kv_bytes_per_chip('palm-540b', v, 64, 512, 2048) / 2**30:.2f}"]
        + [f"{planner.max_context('palm-540b', 64, b, v):,} ({TABLE1[v, b]:,})"
           for b in (128, 512)]
        for v in planner.ATTENTION_VARIANTS]
print("max context: the library's (the paper's Table 1 in brackets, as printed there)")
print(bt.table(["variant", "KV GiB/chip (B 512, S 2048)", "max context, B 128",
                "max context, B 512"], rows))

# %% [markdown]
# The "max context" columns are the longest context whose cache fits in 30% of each chip's
# HBM (what the paper reserves for it); in brackets, the paper's Table 1, which rounds to
# two or three figures and agrees with the library to within 1%. Multiquery by heads is
# *worse* than multihead:
# replicated, its one 256-wide head costs more per chip than 48 narrower heads split over 64
# chips. By batch, it is 32 times better than multihead: the paper's headline.

# %% [markdown]
# ## An int8 cache: Table 1 again
#
# The cache need not be bf16. Servers today keep it in a byte a value: int8, with one bf16
# scale per token and K/V head (a head's D values share it), quantized as each position is
# written (`kv="int8"`, `tpuinfer.kv_formats`; chapter 9 measures what it costs in quality).
#
# **Exercise 06.3 · Derive.** With the cache in int8, what is the longest context
# multiquery by batch fits in 30% of a chip's 32 GiB at batch 512 (Table 1's setting)?

# %%
answer_3 = 21_161

# %%
# NBVAL_CHECK_OUTPUT
bt.check("06.3", answer_3)

# %%
# NBVAL_CHECK_OUTPUT
fits = {(v, b, fmt): kv.max_context("palm-540b", 64, b, v, kv=fmt)
        for v in planner.ATTENTION_VARIANTS for b in (128, 512) for fmt in ("bf16", "int8")}
rows = [[v, b, f"{fits[v, b, 'bf16']:,}", f"{fits[v, b, 'int8']:,}",
         f"{fits[v, b, 'int8'] / fits[v, b, 'bf16']:.3f}"]
        for v in planner.ATTENTION_VARIANTS for b in (128, 512)]
print("max context in 30% of a TPU v4's HBM, PaLM 540B on 64 chips")
print(bt.table(["variant", "batch", "bf16 cache", "int8 cache", "int8 / bf16"], rows))

# %% [markdown]
# Every length of Table 1 nearly doubles: not quite, because each head's scale costs 2 bytes a
# position beside its D one-byte values (1/128 more for multiquery's D = 256, 1/64 for the
# multihead model's D = 128). Memory is what the format buys first; the decode step's reads
# are the second. PaLM 540B at batch 512 on 64 chips, 2D weight-stationary by batch, the same
# step in both cache formats (`tpu-v4` datasheet, rule `overlap`, plain schedule): the cache's
# reads halve, and the step follows only where they outgrow its compute.

# %%
# NBVAL_CHECK_OUTPUT
rows = []
for S in (8192, 32768, 65536):
    for fmt in ("bf16", "int8"):
        e = cost.estimate("palm-540b-64heads", ti.Layout("ws2d", "batch"), (4, 4, 4), batch=512,
                          tokens=1, context=S, kv=fmt)
        rows.append([f"{S:,}", fmt, bt.seconds(e.compute_s), bt.seconds(e.weights_s + e.kv_s),
                     bt.seconds(e.kv_s), bt.seconds(e.step_s),
                     f"{e.memory_per_chip_bytes / 2**30:.1f}", "yes" if e.fits else "no"])
print(bt.table(["context", "cache", "compute", "HBM reads", "of them KV", "step",
                "GiB/chip", "fits"], rows))

# %% [markdown]
# At batch 512 the step is compute-bound: 2·N·B FLOPs outlast the weights' and the cache's
# reads until the context is long. From 32,768 positions the bf16 cache's reads pass the
# compute and the step grows with them; the int8 cache keeps them under it, and at 65,536
# its step is a fifth shorter. And at 32,768 the bf16 cache no longer fits in 32 GiB, the
# int8 one does. Chapter 12 meets a model whose eight K/V heads make these reads dominate at
# every batch.

# %%
contexts = [2**k for k in range(7, 18)]  # 128 .. 128k
batches = [2**k for k in range(6, 11)]  # 64 .. 1024
curves = sweeps.context_curves("palm-540b", 64, 512, contexts, batches)
fig = go.Figure()
for v, ys in curves["kv_bytes_per_chip"].items():
    fig.add_trace(go.Scatter(x=contexts, y=[y / 2**30 for y in ys], name=v,
                             mode="lines+markers"))
budget = 0.3 * get_hardware("tpu-v4").hbm_bytes / 2**30  # the paper's 30% of HBM for the cache
fig.add_trace(go.Scatter(x=[contexts[0], contexts[-1]], y=[budget, budget], mode="lines",
                         name="30% of a TPU v4's HBM", line=dict(dash="dot", color="black")))
fig.add_trace(go.Scatter(x=[TABLE1[v, 512] for v in planner.ATTENTION_VARIANTS],
                         y=[budget] * 3, mode="markers", name="paper, Table 1 (batch 512)",
                         marker=dict(symbol="star", size=13, color="black")))
fig.update_xaxes(type="log", title="context length S")
fig.update_yaxes(type="log", title="KV cache GiB per chip")
fig.update_layout(title="PaLM 540B, 64 chips, batch 512: KV cache per chip<br><sup>each "
                  "variant's longest context is where it crosses 30% of HBM</sup>", height=400,
                  width=820)
fig.show()

# %% [markdown]
# ## What it costs: two all-to-alls
#
# The tiny model (multiquery, 256 heads of 8) decoding on 2×2×2: prefill by heads, decode by
# heads or by batch. Both against the reference.

# %%
cfg = ti.MODELS["tiny"]
params = ti.init_params(cfg, seed=0)
mesh = ti.make_mesh((2, 2, 2))
prompt_BL = np.random.default_rng(4).integers(0, cfg.V, (8, 8))
steps = 4
runs = {att: ti.generate(params, cfg, prompt_BL, steps=steps, mesh=mesh,
                         prefill=ti.Layout("ws2d", "heads"), decode=ti.Layout("ws2d", att))
        for att in ("heads", "batch")}
ref = ti.generate(params, cfg, prompt_BL, steps=steps)

# %% [markdown]
# The cache each device ends up holding, read from the arrays `generate` returned, beside
# the layout's prediction (`step_terms(...).stored_kv_bytes`, f32 here: 4 bytes per
# element). By heads every device holds the whole cache of all 8 sequences; by batch, one
# sequence.

# %%
# NBVAL_CHECK_OUTPUT
rows = []
for att, out in runs.items():
    predicted = step_terms(cfg, ti.Layout("ws2d", att), (2, 2, 2), batch=8, tokens=1,
                           context=8 + steps, weights="f32", act_bytes=4).stored_kv_bytes
    rows.append([att, bool((out.tokens == ref.tokens).all()), f"{predicted:,.0f}",
                 f"{engine.local_bytes(out.cache):,}"])
print(bt.table(["decode attention", "tokens equal reference", "KV bytes/device predicted",
                "KV bytes/device measured"], rows))

# %% [markdown]
# And the collectives of the by-batch decode step: the same as by heads, plus two
# all-to-alls per layer.
#
# **Exercise 06.4 · Predict, then run.** The tiny model (256 query heads of 8, multiquery,
# f32) decoding 8 sequences on 2×2×2 with attention by batch: Q is split over the heads, 32
# heads a chip, and moves to batch-split; the attention output moves back. How many bytes per
# device will the step's all-to-alls move, both layers together (chapter 2: an all-to-all is
# charged its input)?

# %%
answer_4 = 32_768

# %%
from tpuinfer_widgets import PredictionLock

lock = PredictionLock("06.4", "all-to-all bytes per device, by-batch decode at batch 8",
                      lambda: sweeps.step_quantity(cfg, mesh, ti.Layout("ws2d", "batch"),
                                                   phase="decode", batch=8,
                                                   context=8 + steps, params=params,
                                                   quantity="bytes:all-to-all"),
                      guess=answer_4)
lock

# %%
lock.snapshot()

# %%
# NBVAL_CHECK_OUTPUT
bt.check("06.4", answer_4)

# %%
m = measure(cfg, mesh, ti.Layout("ws2d", "batch"), phase="decode", batch=8, context=8 + steps,
            params=params)

# %%
# NBVAL_CHECK_OUTPUT
print(bt.by_kind_table(m))
print()
print(bt.collectives_table(m))

# %% [markdown]
# ## When it pays
#
# PaLM 540B decoding at batch 512 on 64 chips in 2D weight-stationary: the step time by heads
# and by batch as the context grows. By heads, every chip reads the whole cache; by batch,
# 1/64 of it, for the price of the all-to-alls (in the communication term). Predicted on
# the `tpu-v4` datasheet profile, rule `overlap`, plain schedule; PaLM 540B with its heads
# padded to 64, as the paper runs it on 64 chips.

# %%
# NBVAL_CHECK_OUTPUT
rows = []
for S in (2048, 8192, 32768):
    for att in ("heads", "batch"):
        e = cost.estimate("palm-540b-64heads", ti.Layout("ws2d", att), (4, 4, 4), batch=512,
                          tokens=1, context=S)
        rows.append([f"{S:,}", att, bt.seconds(e.kv_s), bt.seconds(e.comm_s),
                     bt.seconds(e.step_s), f"{e.memory_per_chip_bytes / 2**30:.0f}",
                     "yes" if e.fits else "no"])
print(bt.table(["context", "attention", "KV read", "comm", "step", "GiB/chip", "fits"], rows))

# %% [markdown]
# By heads, even a 2048-token context does not fit at batch 512 (135 GiB per chip), and its
# cache reads alone take longer than the whole by-batch step; from there they grow with
# the context, while the by-batch step barely moves.
#
# The paper's Figure 8 draws latency per generated token against the context for the three
# variants. Here is the cost model's version of that comparison (predicted, not the paper's
# measurements): PaLM 540B on the 4×4×4 slice, batch 256, int8 weights, 2D weight-stationary,
# each variant with its own attention layout (`sweeps.context_latency`); `tpu-v4` datasheet,
# rule `overlap`. Hollow markers: the cache no longer fits in HBM there (the model prices
# the step anyway).

# %%
by_context = sweeps.context_latency("palm-540b", [2**k for k in range(7, 16)], batch=256,
                                    weights="int8", mesh=(4, 4, 4))
fig = go.Figure()
for v, c in by_context["variants"].items():
    fig.add_trace(go.Scatter(
        x=by_context["contexts"], y=[t * 1e3 for t in c["per_token_s"]], name=v,
        mode="lines+markers", text=c["layout"], hovertemplate="S = %{x}: %{y:.1f} ms, %{text}",
        marker=dict(size=9, symbol=["circle" if f else "circle-open" for f in c["fits"]])))
fig.update_xaxes(type="log", title="context length S (tokens)")
fig.update_yaxes(type="log", title="ms per generated token")
fig.update_layout(title="The cost model's Figure 8: PaLM 540B decode on 64 chips, batch 256, "
                  "int8<br><sup>predicted on tpu-v4 (datasheet), rule overlap; hollow: the "
                  "cache does not fit</sup>", height=420, width=780, margin=dict(t=80))
fig.show()

# %% [markdown]
# By heads, both the multihead cache (48 heads split over 64 chips, a head each) and the
# replicated multiquery head are read whole by every chip for all 256 sequences: their
# latency grows in proportion to the context once the cache's reads outweigh the weights'.
# By batch, each chip reads only its own 4 sequences' cache, and the step barely moves over
# the whole range. At the shortest contexts by batch is a little slower: its two all-to-alls
# a layer cost more than the small cache reads they save.
#
# Prefill is a different balance. Its K and V are computed from the prompt in the same step,
# and the cost of loading them is spread over every prompt token, so attention by batch buys
# much less there. The paper's one-sequence prefill runs by heads (one sequence cannot be
# split by batch); its high-throughput prefill runs by batch in XYZ-weight-gathered, where
# every chip already holds whole sequences and needs no all-to-all (chapter 7).
#
# ## Explore
#
# The context explorer draws the KV cache per chip and the longest context that fits, for
# any model, chip count, batch and share of HBM.

# %%
from tpuinfer_widgets import ContextExplorer

explorer = ContextExplorer(model="palm-540b", chips=64, batch=128)
explorer

# %%
explorer.snapshot()

# %% [markdown]
# ## Recap
#
# - Multiquery shares one K/V head among all query heads: an H-times smaller cache.
# - Partitioned by heads, that one head is replicated on every chip and the saving is lost;
#   partitioned by batch, each chip holds 1/n of the sequences' cache.
# - The price is two all-to-alls per layer, small in decode (one query token per sequence).
# - In prefill the K/V loads are spread over every prompt token, so by batch matters less;
#   the paper's prefills run by heads at one sequence, and by batch where the layout already
#   splits the batch (XYZ-weight-gathered).
#
# ## Exercises
#
# Exercises 06.1 to 06.4 are above, with the cache sizes, the int8 cache and the by-batch
# step.
#
# **Exercise 06.5 · Derive.** On the 2×2×2 mesh, what is the smallest batch that attention by
# batch (in 2D weight-stationary, whose heads are split over the axes z, y, x, in that order)
# can run with? The batch takes the longest run of heads axes, from the last, whose chips
# divide it, and it needs at least one axis.

# %%
answer_5 = 2

# %%
# NBVAL_CHECK_OUTPUT
bt.check("06.5", answer_5)
