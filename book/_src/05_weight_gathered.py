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
# Because all of them *store* the weights as 2D weight-stationary does, one copy of the
# weights serves a weight-gathered prefill and a weight-stationary decode.
#
# **After this chapter you can** say when moving weights is cheaper than moving activations;
# derive the best number of chips to gather the weights over, and where one gather overtakes
# another; read the crossover between layouts as tokens per batch grow; and explain where the
# library's count of gathered weights differs from the paper's formula. (Paper:
# [Section 3.2.3](https://arxiv.org/abs/2211.05102), "Weight-gathered layouts", and
# Figure 3.)

# %%
import tpuinfer as ti
ti.emulate(256)

# %%
import inspect

import plotly.graph_objects as go

import booktools as bt
from tpuinfer import sweeps, theory
from tpuinfer.layouts import FFN_LAYOUTS, _common, _one_dim, _spmd, wg_x, wg_xy, wg_xyz
from tpuinfer.layouts.registry import param_specs
from tpuinfer.measure import measure
from tpuinfer.paper import TABLE2
from tpuinfer.theory import ws2d_crossover_chips

# %% [markdown]
# ## The layout files
#
# Each weight-gathered file states its layout; the body is 1D weight-stationary's (chapter 3)
# with step 0, the weight all-gather, in front.

# %%
for module in (wg_x, wg_xy, wg_xyz):
    print(module.__doc__)

# %%
print(inspect.getsource(_one_dim.block))

# %% [markdown]
# Step 0 itself, one weight at a time (each array's all-gather, and putting the gathered
# blocks in place):

# %%
print(inspect.getsource(_spmd.gather_param))
print(inspect.getsource(_spmd.gather_weight))

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
# splits it over) has no point there. First, what the paper's formula says.
#
# **Exercise 05.1 · Derive.** The paper's formula for a weight-gathered layer is
# 2·E·F·N/n + 2·B·L·E/N elements per chip: two E×F matrices gathered over N of the n chips,
# and the activations split over the other n/N. On the 4×4×4 slice XY-weight-gathered
# gathers over N = 16 chips, XYZ over all 64. Above how many tokens per batch B·L does XYZ
# move fewer bytes than XY, for PaLM 540B (F = 73728)?

# %%
answer_1 = 1_179_648

# %% [markdown] tags=["solution"]
# **Solution 05.1.** Write C(N) = 2·E·F·N/n + 2·B·L·E/N. XYZ beats XY when C(64) < C(16):
# 2·E·F·(64 − 16)/n < 2·B·L·E·(1/16 − 1/64), that is F·48/n < B·L·3/64, so
# **B·L > F·N₁·N₂/n**: the weights' extra gather against the activations' smaller share.
# With N₁ = 16, N₂ = 64 and n = 64 that is B·L > 16F = 1,179,648 tokens, about 1.2M: the
# paper's million-token prefill sits just below it. The same rule gives every crossover
# between two gathers (X against XY: 4·16/64·F = F).

# %% tags=["solution"]
print(f"{theory.wg_crossover_tokens(64, ti.MODELS['palm-540b'].F, 16, 64):,.0f} tokens")

# %%
# NBVAL_CHECK_OUTPUT
bt.check("05.1", answer_1)

# %% [markdown]
# The library does not count what the formula counts: it gathers what the layer holds,
# SwiGLU's three matrices (W_gate, W_up, W_down) and the attention projections, about 1.7
# times the formula's two E×F matrices, and that raises every weight-gathered floor.
#
# **Exercise 05.2 · Predict, then run.** In the library's count, from which power of two
# tokens per batch on will XYZ-weight-gathered move the fewest bytes of all five layouts? The
# next cells sweep every layout and list where each takes over.

# %%
answer_2 = 2_097_152

# %%
tokens = [2**k for k in range(23)]  # 1 .. 4M tokens per batch
curves = sweeps.crossover("palm-540b-64heads", (4, 4, 4), tokens, weights="bf16")
fig = go.Figure()
for ffn, ys in curves["comm_bytes"].items():
    fig.add_trace(go.Scatter(x=tokens, y=[None if y is None else y / 2**30 for y in ys],
                             mode="lines+markers", name=ffn))
fig.update_xaxes(type="log", title="tokens per batch (B·L)")
fig.update_yaxes(type="log", title="GiB per chip in one prefill (chapter 2's convention)")
fig.update_layout(title="PaLM 540B prefill on 64 chips: collective bytes per layout "
                  "(predicted by each layout's step_terms)", height=420, width=800)
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

# %%
# NBVAL_CHECK_OUTPUT
bt.check("05.2", answer_2)

# %% [markdown]
# The weight-stationary layouts' lines rise in proportion to B·L; the weight-gathered ones
# start from a floor (the weights they gather, the same at any batch) and rise more slowly.
# 2D weight-stationary moves the fewest bytes at small batches, then X-, XY- and
# XYZ-weight-gathered take over in turn: the order of the paper's Figure 3. XYZ's floor is
# every weight of the model gathered onto every chip, about 1 TB per chip per prefill in
# bf16, and the library's larger count of those weights moves its takeover from the
# formula's 1.2M tokens to the power of two the table shows. By either count, XY moves fewer
# bytes than XYZ at the paper's million-token prefill. Bytes are not time: hiding the gathers
# behind compute (chapter 8) is a separate question, and chapter 7's planner, pricing time,
# runs that prefill in XYZ-weight-gathered, as the paper did.
#
# ## Prefill MFU against the batch
#
# Time, not bytes: the MFU of a whole 2048-token prefill of PaLM 540B on the 4×4×4 slice,
# against the batch, per feed-forward layout, each with the attention layout and schedule
# the planner prefers for it (`sweeps.prefill_mfu`, which calls `planner.plan`). Solid: the
# `tpu-v4` datasheet, a bound. Dashed: `tpu-v4-calibrated`, whose constants were fitted to
# Table 2, these two stars among its four columns, so its agreement with them is no
# evidence. The stars are the paper's measurements (Table 2): batch 1 in 2D weight-stationary
# with int8 weights, batch 512 in XYZ-weight-gathered in bf16.

# %%
batches = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512]
mfu = {hw: sweeps.prefill_mfu("palm-540b", (4, 4, 4), batches, weights="bf16", hardware=hw)
       for hw in ("tpu-v4", "tpu-v4-calibrated")}
colours = dict(zip(FFN_LAYOUTS, ("#636efa", "#ef553b", "#00cc96", "#ab63fa", "#ffa15a")))
fig = go.Figure()
for hw, dash in (("tpu-v4", "solid"), ("tpu-v4-calibrated", "dash")):
    for ffn, ys in mfu[hw]["mfu"].items():
        fig.add_trace(go.Scatter(x=mfu[hw]["tokens"], y=ys, mode="lines+markers",
                                 name=f"{ffn} ({hw})", line=dict(dash=dash,
                                 color=colours[ffn]), customdata=mfu[hw]["layouts"][ffn],
                                 hovertemplate="%{x} tokens: MFU %{y:.0%}, %{customdata}"))
prefills = [c for c in TABLE2 if c.phase == "prefill"]
fig.add_trace(go.Scatter(x=[c.tokens for c in prefills], y=[c.mfu for c in prefills],
                         mode="markers+text", marker=dict(symbol="star", size=14, color="black"),
                         text=[f"paper: {c.ffn}, {c.weights}" for c in prefills],
                         textposition=["top right", "bottom left"],
                         name="paper, measured (Table 2)"))
fig.update_xaxes(type="log", title="tokens per prefill (batch × 2048)")
fig.update_yaxes(title="MFU", tickformat=".0%", range=[0, 1.05])
fig.update_layout(title="PaLM 540B prefill on 4×4×4 (bf16 lines): MFU by feed-forward layout, "
                  "predicted", height=480, width=900)
fig.show()

# %%
# NBVAL_CHECK_OUTPUT
rows = [[f"{b:,}", f"{b * 2048:,}"] + [
            "-" if mfu["tpu-v4"]["mfu"][ffn][i] is None else f"{mfu['tpu-v4']['mfu'][ffn][i]:.0%}"
            for ffn in FFN_LAYOUTS] for i, b in enumerate(batches)]
print("predicted MFU of a 2048-token prefill, tpu-v4 datasheet, bf16 ('-': cannot run there)")
print(bt.table(["batch", "tokens"] + list(FFN_LAYOUTS), rows))

# %% [markdown]
# Read the 100% entries for what they are: not a promise, but the `overlap` rule hiding every
# term but compute. A looped weight-gathered prefill passes its weights round rings beside
# the partial matmuls they feed, and each round hides behind its matmul; HBM streams beside
# the matrix units; and the datasheet profile charges nothing else (no time between the
# matmuls, no launch cost). What is left is the FLOPs at peak: MFU 1, less the padded heads'
# extra work where there is any. The paper measured 76% (Table 2): what a real chip loses to
# everything the datasheet leaves out.
#
# Weight-stationary MFU is flat in the batch: its communication grows with the tokens just as
# its compute does. Each weight-gathered layout runs only from the batch that fills the
# chips it splits the batch over, and climbs as the tokens amortise the weights it gathers,
# past weight-stationary: the more it gathers, the later it starts and the higher it ends.
# Where a layout's line stops, it no longer fits in memory (the planner's own check). The
# paper's two
# measurements sit on the two ends of this picture: 43% in weight-stationary at one
# sequence, 76% in XYZ-weight-gathered at 512.
#
# ## Measured
#
# The same comparison on the emulated mesh, with real steps: every layout's prefill of the
# tiny model on 2×2×2 at 2048 tokens per batch (64 sequences of 32: the bytes depend on B·L,
# and short sequences keep the CPU's attention work small), read back from the compiled
# programs. At this size X-weight-gathered has just overtaken 1D weight-stationary, and 2D
# weight-stationary moves the most: 8 chips is below its crossover with 1D (for the tiny
# model's F = 4E, 4F/E = 16 chips: exercise 04.2), so splitting E as well as F
# only adds collectives here.

# **Exercise 05.3 · Predict, then run.** XYZ-weight-gathered gathers every weight matrix of
# each layer whole onto every chip, and moves no activations inside its layers. Besides its
# weight gathers, this step runs one small all-gather, of the batch's token ids (8,192 bytes
# per device). From the tiny model's dimensions (chapter 0's table) in f32, how many bytes per
# device will its all-gathers move, both layers together?

# %%
answer_3 = 14_721_024

# %%
from tpuinfer_widgets import PredictionLock

params = ti.init_params(cfg, seed=0)
lock = PredictionLock("05.3", "all-gather bytes per device, wg-xyz prefill of 64×32 tokens",
                      lambda: sweeps.step_quantity(cfg, small, ti.Layout("wg-xyz", "heads"),
                                                   phase="prefill", batch=64, tokens=32,
                                                   params=params, quantity="bytes:all-gather"),
                      guess=answer_3)
lock

# %%
lock.snapshot()

# %%
# NBVAL_CHECK_OUTPUT
bt.check("05.3", answer_3)

# %% [markdown]
# Every layout's step, compiled, predicted against measured:

# %%
measured = {ffn: measure(cfg, small, ti.Layout(ffn, "heads"), phase="prefill", batch=64,
                         tokens=32, params=params, repeats=3) for ffn in FFN_LAYOUTS}

# %%
# NBVAL_CHECK_OUTPUT
rows = [[ffn, f"{m.predicted.comm_bytes:,.0f}", f"{m.measured.comm_bytes:,.0f}",
         "yes" if m.predicted.comm_bytes == m.measured.comm_bytes else "NO"]
        for ffn, m in sorted(measured.items(), key=lambda kv: kv[1].measured.comm_bytes)]
print(bt.table(["layout", "predicted bytes/device", "measured bytes/device", "equal"], rows))
print(f"\n2D beats 1D above {ws2d_crossover_chips(cfg.E, cfg.F):g} chips (the paper's 4F/E); "
      f"this mesh has {small.size}")

# %%
# NBVAL_CHECK_OUTPUT
print(bt.collectives_table(measured["wg-xy"]))

# %% [markdown]
# Bytes are exact; time on this CPU is a prediction to be tested. With a host profile
# (`tpuinfer calibrate`), each of the five prefill steps above carries the cost model's
# prediction of its time here, set beside the time measured (the median of three timed
# runs each, after a warm-up):

# %%
print(bt.host_times(measured))
bt.time_figure(measured, "Tiny model, prefill of 64×32 tokens on 2×2×2, by layout: this CPU")

# %% [markdown]
# These steps process 2,048 tokens each, as many as the largest steps the calibration times:
# it fits two prefills of 64 sequences of 32 tokens on 1×4×2 (`tpuinfer/calibrate.py` lists its
# steps), the same size on as many devices, but not these 2×2×2 steps, which stay held out. The
# table says how far off the prediction was for each layout in the stored run: a test of how
# far the host model reaches, and no ranking of the layouts to trust where its errors differ
# by more than the layouts do. The "x drift" column is this machine's speed beside each step
# against its speed at calibration (chapter 11), by which the model's time is scaled.
# Chapters 1, 7 and 8 time steps the size of the calibration's;
# `benchmarks/bench_measure.py` prints the error to expect at that size, per mesh and phase,
# and how much this machine drifts meanwhile.

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
# ## Recap
#
# - Weight-gathered layouts store the weights as 2D weight-stationary does and all-gather
#   them over N chips before each layer; the batch is split over those N chips.
# - Activation bytes fall as 1/N, weight bytes grow as N: the best N grows as the square root
#   of the tokens per batch, and two gathers N₁ < N₂ cross where B·L = F·N₁·N₂/n.
# - As tokens per batch grow, the best layout moves from 2D weight-stationary to X-, XY- and
#   XYZ-weight-gathered; where exactly depends on what is counted as the layer's weights.
#
# ## Exercises
#
# Exercises 05.1 to 05.3 are above, with the crossover and the measured steps.
#
# **Exercise 05.4 · Derive.** Minimise the paper's 2·E·F·N/n + 2·B·L·E/N over N, the chips the
# weights are gathered over. What N does it give for PaLM 540B (F = 73728) on 64 chips at
# B·L = 2²⁰ tokens? (Three significant digits.) Between which two of the layouts' N does it
# fall?

# %%
answer_4 = 30.2

# %% [markdown] tags=["solution"]
# **Solution 05.4.** d/dN of 2·E·F·N/n + 2·B·L·E/N is 2·E·F/n − 2·B·L·E/N², zero at
# **N = √(B·L·n/F)**; there the two terms are equal and the communication is
# 4·E·√(B·L·F/n). At B·L = 2²⁰, n = 64, F = 73728: N = √(2²⁰·64/73728) = √910.2 = 30.2,
# between XY's 16 and XYZ's 64, and on a log scale nearer 16·2 = 32 than either: the two
# layouts' costs are close there, which is why the crossover of exercise 05.1 sits near a
# million tokens.

# %% tags=["solution"]
print(f"N = {theory.wg_optimal_gather(2**20, 64, ti.MODELS['palm-540b'].F):.3g}")

# %%
# NBVAL_CHECK_OUTPUT
bt.check("05.4", answer_4)
