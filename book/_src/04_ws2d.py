# ---
# jupyter:
#   jupytext:
#     formats: ipynb,_src//py:percent
# ---

# %% [markdown]
# # 4 · 2D weight-stationary
#
# 1D weight-stationary gathers the whole activation onto every chip, so its communication
# never shrinks. The fix is to cut *both* dimensions of each weight: E over the x axis and F
# over y and z. W_in becomes `E_xF_yz`: chip (x, y, z) holds the block of rows x and columns
# (y, z). Now no chip needs the whole activation. It needs the slice of E matching its rows,
# gathered only over y and z, and produces a partial sum over x of its F columns.
#
# The price is a second pair of collectives, but every one of them runs over a *part* of the
# mesh and moves a *part* of the activation:
#
# ```mermaid
# flowchart LR
#   A["BLE_xyz"] -- "1 all-gather(yz)" --> B["BLE_x"]
#   B -- "2 · E_xF_yz" --> C["BLF_yz<br/>partial-sum(x)"]
#   C -- "3 reduce-scatter(x)" --> D["BLF_xyz"]
#   D -- "4 SwiGLU" --> E2["BLF_xyz"]
#   E2 -- "5 all-gather(x)" --> F2["BLF_yz"]
#   F2 -- "6 · F_yzE_x" --> G["BLE_x<br/>partial-sum(yz)"]
#   G -- "7 reduce-scatter(yz)" --> H["BLE_xyz"]
# ```
#
# In the paper's idealised feed-forward (two matrices, W_in and W_out, no attention), steps 1
# and 7 move E/X per token and steps 3 and 5 move F/(YZ): per layer 2·B·L·(E/X + F/(YZ))
# elements. Exercises 04.1 and 04.2 derive from it the best X and the chip count where 2D
# beats 1D; the library's code and cost model count what the real layer moves, and the
# chapter then compares the two.
#
# **After this chapter you can** read `E_xF_yz` and its seven steps; derive the X that
# minimises 2D weight-stationary's communication and the chip count above which it beats 1D;
# and account for every byte the library's count adds to the paper's formula, under both
# ways of counting a collective's bytes. (Paper:
# [Section 3.2.2](https://arxiv.org/abs/2211.05102), "2D weight-stationary layout".)

# %%
import tpuinfer as ti
ti.emulate(256)

# %%
import numpy as np
import plotly.graph_objects as go

import booktools as bt
from tpuinfer import cost, sweeps
from tpuinfer.hardware import mesh_shapes
from tpuinfer.layouts import step_terms, ws2d
from tpuinfer.layouts.registry import param_specs
from tpuinfer.measure import measure
from tpuinfer.theory import bytes_sent, ws2d_crossover_chips, ws2d_optimal_x

# %% [markdown]
# ## The layout file

# %%
print(ws2d.__doc__)

# %% [markdown]
# W_up on a 2×2×2 mesh: two row blocks (E over x) times four column blocks (F over z, y).
# Each chip holds one of the eight blocks, and no block is held twice.

# %%
cfg = ti.MODELS["tiny"]
spec = param_specs(cfg, ti.Layout("ws2d"))["layers"][0]["w_up"]
bt.ownership_figure(ti.make_mesh((2, 2, 2)), spec, (cfg.E, cfg.F),
                    "W_up in 2D weight-stationary: E_xF_yz", ("E", "F")).show()

# %% [markdown]
# The body follows the seven steps. Here is its skeleton: the lines that run a collective, a
# matmul, attention or the nonlinearity, in the plain schedule (`inspect.getsource(ws2d._pass)`
# shows all of it, with the looped schedule of chapter 8). Two things in it go beyond the
# paper's sketch, both to save collectives: the RMS-norm's 1/rms (one number per token) is
# applied *after* the matmuls, so its sum of squares rides along in step 3's reduce-scatter;
# and multiquery's single K/V head, which every chip needs whole, rides along too. One
# reduce-scatter and one all-gather also serve attention and the feed-forward together (the
# parallel block).

# %%
print(bt.skeleton(ws2d._pass))


# %% [markdown]
# ## Run it on 32 devices, check it
#
# The tiny model on a 2×4×4 mesh: E split in 2, F in 16. Prefill and decode in 2D
# weight-stationary (attention by heads), against the reference.

# %%
mesh = ti.make_mesh((2, 4, 4))
params = ti.init_params(cfg, seed=0)
prompt_BL = np.random.default_rng(2).integers(0, cfg.V, (8, 8))
layout = ti.Layout("ws2d", "heads")
out = ti.generate(params, cfg, prompt_BL, steps=4, mesh=mesh, prefill=layout, decode=layout)
ref = ti.generate(params, cfg, prompt_BL, steps=4)

# %%
# NBVAL_CHECK_OUTPUT
print("2D weight-stationary tokens equal the reference's:", bool((out.tokens == ref.tokens).all()))

# %% [markdown]
# The decode step `generate` just ran (batch 8, a cache of 12 positions), read back from the
# compiled program. Each collective's group is what the layout says: the all-gather and
# reduce-scatter of steps 1 and 7 over (y, z), 16 chips; those of steps 3 and 5 over x, 2
# chips.

# **Exercise 04.3 · Predict, then run.** From the seven steps, with the tiny model's
# dimensions (chapter 0's table) in f32: how many bytes per device will this decode step's
# all-gathers move, both layers together? Step 5 gathers the attention output beside the
# feed-forward's. Write your number before the lock runs the step.

# %%
answer_3 = 20_480

# %%
from tpuinfer import sweeps
from tpuinfer_widgets import PredictionLock

lock = PredictionLock("04.3", "all-gather bytes per device, decode at batch 8 on 2x4x4",
                      lambda: sweeps.step_quantity(cfg, mesh, layout, phase="decode", batch=8,
                                                   context=12, params=params,
                                                   quantity="bytes:all-gather"),
                      guess=answer_3)
lock

# %%
lock.snapshot()

# %%
# NBVAL_CHECK_OUTPUT
bt.check("04.3", answer_3)

# %% [markdown]
# The prediction is written beside the body in the same file, `ws2d.collectives`: one entry
# per collective of a layer, with its kind, axes, bytes and what it carries. For this step:

# %%
# NBVAL_CHECK_OUTPUT
listed = step_terms(cfg, layout, (2, 4, 4), batch=8, tokens=1, context=12, weights="f32",
                    act_bytes=4).collectives
print(bt.table(["collective", "axes", "calls", "bytes/call", "what"],
               [[c.kind, "".join(c.axes), f"{c.count:g}", f"{c.bytes:,.0f}",
                 c.what if len(c.what) <= 48 else c.what[:47] + "…"] for c in listed]))

# %% [markdown]
# And the whole step compiled, every collective against the prediction:

# %%
m = measure(cfg, mesh, layout, phase="decode", batch=8, context=12, params=params)

# %%
# NBVAL_CHECK_OUTPUT
print(bt.by_kind_table(m))
print()
print(bt.collectives_table(m))
print()
print(bt.sides_table(m))

# %% [markdown]
# ## Choosing X
#
# How should 64 chips be split between x and (y, z)? Every mesh the TPU v4 torus allows,
# priced by the cost model for PaLM 540B (heads padded to 64) decoding at batch 64 with a
# 2048-token context. Bytes depend only on X and YZ; time also depends on which links each
# group uses, and only the 4×4×4 cube has wraparound links (chapter 2). Times are predicted
# on the `tpu-v4` datasheet profile, rule `overlap`, plain schedule (the collectives add to
# the step; chapter 8 loops them).
#
# **Exercise 04.1 · Derive.** Write X·YZ = n and minimise the paper's 2·B·L·(E/X + F·X/n) over
# X. What X does it give for PaLM 540B (E = 18432, F = 73728) on 64 chips? The table and the
# figure below then price every X.

# %%
answer_1 = 4

# %% [markdown] tags=["solution"]
# **Solution 04.1.** With YZ = n/X the communication per layer is 2·B·L·(E/X + F·X/n). Its
# derivative in X is 2·B·L·(−E/X² + F/n), zero at X² = n·E/F, so **X = √(n·E/F)** (the second
# derivative, 4·B·L·E/X³, is positive: a minimum). Then YZ = n/X = √(n·F/E). For PaLM,
# F = 4E: X = √(64/4) = 4 and YZ = 16. At that X the two terms are equal,
# E/X = F·X/n = √(E·F/n), so the communication is **4·B·L·√(E·F/n)**, falling as 1/√n.

# %% tags=["solution"]
pal = ti.MODELS["palm-540b-64heads"]
print("X =", ws2d_optimal_x(64, pal.E, pal.F))

# %%
# NBVAL_CHECK_OUTPUT
bt.check("04.1", answer_1)

# %%
meshes = mesh_shapes("tpu-v4", 64)
by_mesh = {s: cost.estimate("palm-540b-64heads", layout, s, batch=64, tokens=1, context=2048)
           for s in meshes}
fastest = {}  # X -> the mesh with that X whose communication takes least time
for s, e in by_mesh.items():
    if s[0] not in fastest or e.comm_s < fastest[s[0]].comm_s:
        fastest[s[0]] = e
one_d = cost.estimate("palm-540b-64heads", ti.Layout("ws1d", "heads"), (4, 4, 4), batch=64,
                      tokens=1, context=2048)

# %%
# NBVAL_CHECK_OUTPUT
rows = [[x, "x".join(map(str, e.mesh_shape)), f"{e.terms.comm_bytes / 2**20:,.0f}",
         bt.seconds(e.comm_s), bt.seconds(e.step_s)] for x, e in sorted(fastest.items())]
print("PaLM 540B decode step, 2D weight-stationary: predicted on tpu-v4 (datasheet), overlap")
print(bt.table(["X", "fastest mesh with that X", "comm MiB/chip", "comm time", "step time"],
               rows))

# %%
xs = sorted(fastest)
fig = go.Figure(go.Scatter(x=xs, y=[fastest[x].terms.comm_bytes / 2**20 for x in xs],
                           mode="lines+markers", name="2D weight-stationary"))
fig.add_hline(y=one_d.terms.comm_bytes / 2**20, line_dash="dot",
              annotation_text="1D weight-stationary (the same bytes as X = 1)")
fig.update_xaxes(type="log", tickvals=xs, title="X (chips E is split over)")
fig.update_yaxes(title="MiB per chip per decode step")
fig.update_layout(title="PaLM 540B on 64 chips: communication against X", height=360,
                  width=700)
fig.show()

# %% [markdown]
# The minimum sits at X = 4, where exercise 04.1 put it: the paper's choice. The mesh the
# table names, 4×1×16, is the 4×4×4 cube with its y and z taken as one axis of 16; 4×4×4
# itself uses the same links and prices the same. At X = 1, 2D weight-stationary *is* 1D
# weight-stationary.
#
# ## Every byte accounted for
#
# The paper's formula says 2D at X = 4 on 64 chips moves half of 1D's 2·B·L·E (with F = 4E,
# E/4 + F/16 = E/2). The library's count saves only about a quarter. Here is every
# collective of both decode steps, from the layouts' own lists, counted two ways: by the
# library's convention (chapter 2: an all-gather's output, a reduce-scatter's input, per
# chip) and as the bytes a chip actually sends (`theory.bytes_sent`: its own 1/K stays).

# %%
# NBVAL_CHECK_OUTPUT
two_d = by_mesh[(4, 4, 4)]
rows, totals = [], {}
for name, e in (("ws1d", one_d), ("ws2d", two_d)):
    for c in e.terms.collectives:
        rows.append([name, c.kind, "".join(c.axes), c.group,
                     c.what if len(c.what) <= 34 else c.what[:33] + "…",
                     f"{c.bytes * c.count / 2**20:,.1f}", f"{bytes_sent(c) / 2**20:,.1f}"])
    totals[name] = (e.terms.comm_bytes, sum(bytes_sent(c) for c in e.terms.collectives))
print("PaLM 540B (64 heads) decode step on 4x4x4, batch 64, bf16: MiB per chip per step")
print(bt.table(["layout", "collective", "axes", "group", "what", "convention", "sent"], rows))
print()
for i, how in enumerate(("convention", "sent")):
    print(f"ws2d / ws1d, counted as {how}: {totals['ws2d'][i] / totals['ws1d'][i]:.2f}")

# %% [markdown]
# Read the ws2d rows against the paper's formula:
#
# - **Steps 1 and 7** move exactly the paper's E/X per token: a quarter of 1D's rows each.
# - **Step 3** carries well over twice the paper's F/(YZ). SwiGLU has two input matrices,
#   W_gate and W_up, so the reduce-scatter sums 2F columns, not F; the attention's query
#   projection rides in the same reduce-scatter (the parallel block fuses W_q with W_in); and
#   the layout tiles X copies of each token's norm statistic and multiquery K and V into it
#   (the `whole` term of `ws2d.collectives` above). Those copies all cross the links: at
#   X = 4 they send more than an all-reduce of the same values over x would.
# - **Step 5** gathers the attention output beside the hidden activation: F + H·D, not F.
# - The **output projection's** reduce-scatter is the same in both layouts and never shrinks.
#
# Counted as bytes sent, the ratio is lower than by the convention: 1D's groups are 64 chips
# (a chip keeps only 1/64 of each gather), while 2D's steps 3 and 5 run over groups of 4,
# where a chip keeps a quarter. Neither count is wrong; say which one you mean.
#
# ## Scaling past 64 chips
#
# PaLM 540B's 64 heads cap head-sharded layouts at 64 chips. MT-NLG 530B, the model of the
# paper's GPU comparison, has 128 heads, so it shows the trend further: for each chip
# count, the mesh with the least communication for each layout.
#
# **Exercise 04.2 · Derive.** At the optimal X, 2D weight-stationary moves 4·B·L·√(E·F/n)
# per layer (the solution of 04.1 shows why). Above how many chips does that fall below 1D's
# 2·B·L·E, for a model with F = 4E (PaLM, and MT-NLG too)?

# %%
answer_2 = 16

# %% [markdown] tags=["solution"]
# **Solution 04.2.** 4·B·L·√(E·F/n) < 2·B·L·E ⟺ 2·√(E·F/n) < E ⟺ 4·E·F/n < E² ⟺
# **n > 4F/E**. With F = 4E: n > 16. At n = 16 exactly the two are equal (X = 2, YZ = 8 moves
# E/2 + F/8 = E per token each way, 1D's E); past it 2D's bytes keep falling as 1/√n while
# 1D's stay.

# %% tags=["solution"]
print("2D beats 1D above", ws2d_crossover_chips(pal.E, pal.F), "chips")

# %%
# NBVAL_CHECK_OUTPUT
bt.check("04.2", answer_2)

# %%
scaling = {}
for n in (8, 16, 32, 64, 128):
    for ffn in ("ws1d", "ws2d"):
        scaling[n, ffn] = min((cost.estimate("mt-nlg-530b", ti.Layout(ffn, "heads"), s,
                                             batch=64, tokens=1, context=2048)
                               for s in mesh_shapes("tpu-v4", n)),
                              key=lambda e: e.terms.comm_bytes)

# %%
fig = go.Figure()
for ffn in ("ws1d", "ws2d"):
    ns = [n for n, f in scaling if f == ffn]
    fig.add_trace(go.Scatter(x=ns, y=[scaling[n, ffn].terms.comm_bytes / 2**20 for n in ns],
                             mode="lines+markers", name=ffn,
                             text=["x".join(map(str, scaling[n, ffn].mesh_shape)) for n in ns],
                             hovertemplate="%{x} chips, mesh %{text}: %{y:.0f} MiB"))
fig.update_xaxes(type="log", title="chips", tickvals=[8, 16, 32, 64, 128])
fig.update_yaxes(type="log", title="MiB per chip per decode step")
fig.update_layout(title="MT-NLG 530B decode, batch 64: 1D stays flat, 2D keeps falling",
                  height=360, width=700)
fig.show()

# %% [markdown]
# Bytes are not yet latency. The paper's Figure 6 sets the two layouts' latency per generated
# token side by side as chips are added. Here is the cost model's version of that comparison
# (a prediction, not the paper's measurements): PaLM 540B decoding 64 tokens after a
# 2048-token context at batch 512 in bf16, for each chip count the planner's best mesh,
# attention layout and schedule with each feed-forward layout (`sweeps.ffn_scaling`; heads
# padded where a layout needs it), on the `tpu-v4` datasheet, rule `overlap`. Hollow markers:
# nothing with that layout fits in memory there.

# %%
scaling_latency = sweeps.ffn_scaling("palm-540b", [16, 32, 64, 128, 256], batch=512)
fig = go.Figure()
for ffn, c in scaling_latency["ffn"].items():
    fig.add_trace(go.Scatter(
        x=scaling_latency["chips"], y=[t * 1e3 for t in c["per_token_s"]], name=ffn,
        mode="lines+markers", text=[f"{lay} on {'x'.join(map(str, mh))}"
                                    for lay, mh in zip(c["layout"], c["mesh"])],
        marker=dict(size=9, symbol=["circle" if f else "circle-open" for f in c["fits"]]),
        hovertemplate="%{x} chips: %{y:.1f} ms, %{text}"))
fig.update_xaxes(type="log", title="chips", tickvals=scaling_latency["chips"])
fig.update_yaxes(type="log", title="ms per generated token")
fig.update_layout(title="The cost model's Figure 6: PaLM 540B decode, batch 512, bf16, 1D "
                  "against 2D<br><sup>predicted on tpu-v4 (datasheet), rule overlap; hollow: "
                  "does not fit</sup>", height=400, width=760, margin=dict(t=80))
fig.show()

# %% [markdown]
# Where both fit, 2D's latency keeps falling faster than 1D's as chips are added: its
# communication shrinks with n, 1D's does not. The gap is smaller than the bytes alone
# suggest, because the planner loops both layouts' collectives behind their matmuls
# (chapter 8) where that pays, and reading the weights, which both divide by n alike, is
# much of a decode step.

# %% [markdown]
# ## Explore
#
# The layout explorer runs the real step for any mesh, layout, batch and context you choose,
# and draws the prediction beside the measurement: collective bytes by kind, FLOPs, memory
# and time (with a hardware prediction beside this CPU). Try `ws1d` against `ws2d` on the
# same mesh, or a mesh of 256. A mesh that does not divide a dimension is explained in the
# message line, and the last good plot stays.
#
# Its three collective bars differ for a reason worth knowing. The two "this CPU" sides count
# the step compiled here, with the tiny model's f32 activations: 4 bytes an element. The
# `tpu-v4` side prices the same step as a TPU would run it, with bf16 activations: the same
# elements at 2 bytes, so half the bytes. And in bf16 the norm's sum of squares cannot ride
# in step 3's reduce-scatter (it would be rounded to bf16), so each layer adds a small f32
# all-reduce of its own: that side shows more all-reduce bytes, not fewer.

# %%
from tpuinfer_widgets import LayoutExplorer

explorer = LayoutExplorer(mesh=(2, 4, 4), phase="decode", batch=8, context=12,
                          decode=ti.Layout("ws2d", "heads"))
explorer

# %% [markdown]
# A snapshot of the plot as it was when this chapter was last run, for readers without a
# kernel:

# %%
explorer.snapshot()

# %% [markdown]
# ## Recap
#
# - 2D weight-stationary stores `E_xF_yz`: four collectives per layer, each over part of the
#   mesh and part of the activation.
# - The paper's formula 2·B·L·(E/X + F/(YZ)) is smallest at X = √(n·E/F) and beats 1D once
#   n > 4F/E; past that, communication falls as 1/√n.
# - The library counts what the code moves (SwiGLU's gate, the fused attention projections,
#   the tiled norm statistic and K/V), so its saving at 64 chips is smaller than the
#   formula's; and bytes by convention differ from bytes sent.
#
# ## Exercises
#
# Exercises 04.1, 04.2 and 04.3 are above, where X, the crossover and the measured step are.
#
# **Exercise 04.4 · Derive.** By what factor does 2D weight-stationary's communication at the
# optimal X shrink when a model's chips go from 64 to 256 (same batch, same model)? Compare
# what happens to 1D's.

# %%
answer_4 = 2

# %%
# NBVAL_CHECK_OUTPUT
bt.check("04.4", answer_4)
