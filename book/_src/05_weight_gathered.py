# ---
# jupyter:
#   jupytext:
#     formats: ipynb,_src//py:percent
# ---

# %% [markdown]
# # 5 · Weight-gathered layouts and the crossover
#
# In every weight-stationary layout the weights stay put and the *activations* travel: the
# bytes moved grow with the number of tokens in the batch, B·L. A prefill of 512 sequences
# of 2048 tokens is a million tokens; its activations are far larger than the weights. Then
# it is cheaper to move the weights instead.
#
# The **weight-gathered** layouts store the weights exactly as 2D weight-stationary does
# (`E_xF_yz`) and, just before each layer, all-gather them over some of the axes:
#
# | layout | weights gathered over | each chip then holds | activations |
# |---|---|---|---|
# | X-weight-gathered (`wg-x`) | x | `EF_yz` | `B_xLE_yz` |
# | XY-weight-gathered (`wg-xy`) | x, y | `EF_z` | `B_xyLE_z` |
# | XYZ-weight-gathered (`wg-xyz`) | x, y, z | `EF` (whole) | `B_xyzLE` |
#
# The batch is split over the axes the weights were gathered over, and the remaining axes run
# 1D weight-stationary. Gathering over more chips moves more weight bytes but fewer activation
# bytes; XYZ-weight-gathered moves no activations at all, since every chip owns whole
# sequences. So for every B·L there is a best layout, and the best moves from 2D
# weight-stationary to X-, XY- and XYZ-weight-gathered as B·L grows: the paper's Figure 3.
#
# Because all of them *store* the weights as 2D weight-stationary, one copy of the weights
# serves a weight-gathered prefill and a weight-stationary decode.

# %%
import tpuinfer as ti
ti.emulate(256)

# %%
import inspect

import plotly.graph_objects as go

import booktools as bt
from tpuinfer import sweeps
from tpuinfer.layouts import FFN_LAYOUTS, _common, _one_dim, wg_x, wg_xy, wg_xyz
from tpuinfer.layouts.registry import param_specs
from tpuinfer.measure import measure

# %% [markdown]
# ## The layout files
#
# Each weight-gathered file states its layout; the body is 1D weight-stationary's (chapter 3)
# with step 0, the weight all-gather, in front.

# %%
for module in (wg_x, wg_xy, wg_xyz):
    print(module.__doc__)

# %%
print(inspect.getsource(_one_dim._gather))
print(inspect.getsource(_common.gather_weight))

# %% [markdown]
# ## One stored layout, two ways to use it
#
# The stored weight specs of every weight-gathered layout equal 2D weight-stationary's (only
# the norm scales, which are tiny, are kept whole):

# %%
# NBVAL_CHECK_OUTPUT
cfg = ti.MODELS["tiny"]
stored = {ffn: param_specs(cfg, ti.Layout(ffn))["layers"][0] for ffn in FFN_LAYOUTS}
for ffn in ("wg-x", "wg-xy", "wg-xyz"):
    same = all(stored[ffn][k] == stored["ws2d"][k] for k in stored["ws2d"] if "norm" not in k)
    print(f"{ffn:7s} stores its weight matrices as ws2d does: {same}")

# %% [markdown]
# Stored, W_up is `E_xF_yz`; after X-weight-gathered's step 0 each chip holds `EF_yz`: the x
# blocks of a column have been gathered. On a 2×2×2 mesh:

# %%
small = ti.make_mesh((2, 2, 2))
spec = stored["wg-x"]["w_up"]
bt.ownership_figure(small, spec, (cfg.E, cfg.F), "W_up as stored: E_xF_yz", ("E", "F")).show()
bt.ownership_figure(small, _common.drop_axes(spec, ("x",)), (cfg.E, cfg.F),
                    "W_up after all-gather(x) in wg-x: EF_yz", ("E", "F")).show()

# %% [markdown]
# The paper's high-throughput configuration uses exactly this: XYZ-weight-gathered prefill,
# then 2D weight-stationary decode, from one copy of the weights. Chapter 7 runs it.

# %% [markdown]
# ## The crossover: Figure 3
#
# Communication per chip for one prefill step of PaLM 540B (heads padded to 64) on 64 chips
# (4×4×4), against the tokens in the batch, for every feed-forward layout. The numbers come
# from `tpuinfer.sweeps.crossover`, which calls each layout's `step_terms`: the same function
# the widget below draws. A layout that cannot split the batch (B smaller than the chips it
# splits it over) has no point there.

# %%
tokens = [2**k for k in range(21)]  # 1 .. 1M tokens per batch
curves = sweeps.crossover("palm-540b-64heads", (4, 4, 4), tokens, weights="bf16")
fig = go.Figure()
for ffn, ys in curves["comm_bytes"].items():
    fig.add_trace(go.Scatter(x=tokens, y=[None if y is None else y / 2**30 for y in ys],
                             mode="lines+markers", name=ffn))
fig.update_xaxes(type="log", title="tokens per batch (B·L)")
fig.update_yaxes(type="log", title="GiB moved per chip in one prefill")
fig.update_layout(title="PaLM 540B prefill on 64 chips: communication per layout",
                  height=420, width=760)
fig.show()

# %%
# NBVAL_CHECK_OUTPUT
best = {}
for i, n in enumerate(tokens):
    ranked = sorted((ys[i], ffn) for ffn, ys in curves["comm_bytes"].items() if ys[i] is not None)
    best[n] = ranked[0][1]
rows, last = [], None
for n, ffn in best.items():
    if ffn != last:
        rows.append([f"{n:,}", ffn])
        last = ffn
print("fewest bytes per chip, from this many tokens per batch on:")
print(bt.table(["tokens per batch", "layout"], rows))

# %% [markdown]
# The weight-stationary layouts' lines rise in proportion to B·L; the weight-gathered ones
# start from a floor (the weights they gather, the same at any batch) and rise more slowly.
# 2D weight-stationary moves the fewest bytes up to 16k tokens, X-weight-gathered from 32k,
# XY-weight-gathered from 128k. Up to a million tokens XYZ-weight-gathered never moves the fewest bytes here: its
# floor is the whole model, about 1 TB per chip per prefill. The paper nevertheless ran its
# million-token prefill in XYZ-weight-gathered: fewest bytes is not the whole story. A layout
# whose collectives move more bytes may still finish first if they are looped and hide
# behind its compute (chapter 8) or if its other terms are smaller. Chapter 10 asks the planner, which prices
# time, not bytes.
#
# ## Measured
#
# The same comparison on the emulated mesh, with real steps: every layout's prefill of the
# tiny model on 2×2×2 at 2048 tokens per batch (64 sequences of 32: the bytes depend on B·L,
# and short sequences keep the CPU's attention work small), read back from the compiled
# programs. At this size X-weight-gathered has just overtaken 1D weight-stationary.

# %%
params = ti.init_params(cfg, seed=0)
measured = {ffn: measure(cfg, small, ti.Layout(ffn, "heads"), phase="prefill", batch=64,
                         tokens=32, params=params, repeats=1) for ffn in FFN_LAYOUTS}

# %%
# NBVAL_CHECK_OUTPUT
rows = [[ffn, f"{m.predicted.comm_bytes:,.0f}", f"{m.measured.comm_bytes:,.0f}",
         "yes" if m.predicted.comm_bytes == m.measured.comm_bytes else "NO"]
        for ffn, m in sorted(measured.items(), key=lambda kv: kv[1].measured.comm_bytes)]
print(bt.table(["layout", "predicted bytes/device", "measured bytes/device", "equal"], rows))

# %%
# NBVAL_CHECK_OUTPUT
print(bt.collectives_table(measured["wg-xy"]))

# %% [markdown]
# In the wg-xy table, step 0 shows up as one all-gather over (x, y) per weight matrix per
# layer, and the activations' all-gather and reduce-scatter run over z alone.
#
# ## Explore
#
# The crossover explorer draws these curves for any chip count and model dimensions (and,
# with "overlay real steps", measures the tiny model's layouts on the emulated mesh).

# %%
from tpuinfer_widgets import CrossoverExplorer

explorer = CrossoverExplorer(model="palm-540b-64heads", chips=64, weights="bf16")
explorer

# %%
explorer.snapshot()

# %% [markdown]
# ## Exercises
#
# 1. For PaLM 540B on 64 chips, from how many tokens per batch (a power of two) does some
#    weight-gathered layout move fewer bytes than 2D weight-stationary?
# 2. Which layout moves the fewest bytes at a million (2²⁰) tokens per batch?
# 3. Which layout's communication does not depend on the number of tokens at all?
#
# The answers ship filled in so that the book runs green: replace them with yours.

# %%
answer_1 = 32768
answer_2 = "wg-xy"
answer_3 = "wg-xyz"

# %%
# NBVAL_CHECK_OUTPUT
bt.check("exercise 1", answer_1, next(n for n, ffn in best.items() if ffn.startswith("wg")))
bt.check("exercise 2", answer_2, best[2**20])
flat = [ffn for ffn, ys in curves["comm_bytes"].items() if len({y for y in ys if y}) == 1]
bt.check("exercise 3", answer_3, flat[0])
