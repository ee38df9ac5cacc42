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
# and why prefill keeps attention by heads. (Paper:
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
from tpuinfer import cost, engine, planner, sweeps
from tpuinfer.layouts import attn_batch, attn_heads, step_terms
from tpuinfer.layouts.registry import check
from tpuinfer.measure import measure
from tpuinfer.hardware import get_hardware
from tpuinfer.paper import TABLE1

# %% [markdown]
# ## The two attention layouts

# %%
print(attn_heads.__doc__)
print(attn_batch.__doc__)

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
# on every chip), multiquery by batch (one head, split by sequence).

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
# the context, while the by-batch step barely moves. Prefill is the other way round:
# its K and V are computed from the prompt, and the cost of loading them is spread over every
# prompt token, so the paper keeps prefill attention by heads (chapter 7).
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
# - Prefill keeps attention by heads: its K/V loads are spread over every prompt token.
#
# ## Exercises
#
# 1. **Derive.** For PaLM 540B (multiquery, one K/V head) on 64 chips, how many times more KV
#    cache does each chip hold with attention by heads than by batch? Derive it from who
#    holds which sequences' cache, then check it against the library's count.
# 2. **Predict, then check.** How many all-to-alls does attention by batch add per layer
#    for a multiquery model? Write your prediction before reading the by-batch table.
# 3. **Derive.** On the 2×2×2 mesh, what is the smallest batch that attention by batch (in
#    2D weight-stationary, whose heads are split over all three axes) can run with? The
#    batch takes the longest run of heads axes, from the last, whose chips divide it.
# 4. At batch 512 on 64 chips, how many times longer a context does multiquery by batch fit
#    than multihead? (Round to a whole number.)

# %%
answer_1 = 64
answer_2 = 2
answer_3 = 2
answer_4 = 32

# %%
# NBVAL_CHECK_OUTPUT
bt.check("exercise 1", answer_1,
         planner.kv_bytes_per_chip("palm-540b", "multiquery-heads", 64, 512, 2048)
         / planner.kv_bytes_per_chip("palm-540b", "multiquery-batch", 64, 512, 2048),
         hint="by heads every chip holds every sequence's cache; by batch, 1/n of them")
bt.check("exercise 2", answer_2, m.measured.by_kind()["all-to-all"][0] // cfg.n_layers,
         hint="one to bring Q to the sequences' chips, one to bring the output back")


def runs_with(batch):
    try:
        check(cfg, ti.Layout("ws2d", "batch"), (2, 2, 2), batch)
        return True
    except ValueError:
        return False


bt.check("exercise 3", answer_3, next(b for b in range(1, 65) if runs_with(b)),
         hint="each chip of at least the last heads axis must own whole sequences")
ratio = (planner.max_context("palm-540b", 64, 512, "multiquery-batch")
         / planner.max_context("palm-540b", 64, 512, "multihead"))
bt.check("exercise 4", answer_4, round(ratio), hint="the table of max context has it")
