# ---
# jupyter:
#   jupytext:
#     formats: ipynb,_src//py:percent
# ---

# %% [markdown]
# # 3 · 1D weight-stationary
#
# The simplest way to spread a feed-forward layer over n chips is Megatron's: cut its hidden
# dimension F into n pieces. Chip i keeps columns i of W_in (`EF_xyz`: [E, F/n]) and rows i
# of W_out (`F_xyzE`: [F/n, E]) for good: the weights are **stationary**, they never move.
# Each chip can then compute its slice of the hidden activation from the *whole* input, apply
# the nonlinearity (elementwise, so no communication), and multiply by its rows of W_out. The
# result is a partial sum: every chip holds a full [B, L, E] tensor that must be summed over
# all chips.
#
# So one layer needs two collectives, one on each side of the matmuls:
#
# ```mermaid
# flowchart LR
#   A["BLE_xyz"] -- "all-gather(xyz)" --> B["BLE"]
#   B -- "· EF_xyz" --> C["BLF_xyz"]
#   C -- "SwiGLU" --> D["BLF_xyz"]
#   D -- "· F_xyzE" --> E["BLE partial-sum(xyz)"]
#   E -- "reduce-scatter(xyz)" --> F["BLE_xyz"]
# ```
#
# Attention is partitioned the same way, over heads instead of F, and fused into the same two
# collectives (the PaLM parallel block, chapter 7). Between layers the residual stream stays
# split, `BLE_xyz`, so that the norm and the residual add cost 1/n each.
#
# **After this chapter you can** read a layout file (docstring, partition specs, body,
# predicted collectives); run 1D weight-stationary and check it against the reference;
# derive its communication per layer from the shapes; and explain why it stops scaling.
# (Paper: [Section 3.2.1](https://arxiv.org/abs/2211.05102), "1D weight-stationary layout".)

# %%
import tpuinfer as ti
ti.emulate(256)

# %%
import numpy as np
import plotly.graph_objects as go

import booktools as bt
from tpuinfer import cost
from tpuinfer.hardware import PAPER_MESHES
from tpuinfer.layouts import _one_dim, ws1d
from tpuinfer.layouts.registry import param_specs
from tpuinfer.measure import measure

# %% [markdown]
# ## The layout file
#
# Each layout is one file of `tpuinfer/layouts/`. Its docstring states the layout in the
# paper's notation, with numbered steps; its partition specs say where every weight lives;
# its body follows the numbered steps line by line.

# %%
print(ws1d.__doc__)

# %% [markdown]
# Here is where W_up lives on a 2×2×2 mesh, as JAX places it from the layout's spec: F is cut
# into eight column blocks, one per chip, and every chip holds all of E.

# %%
cfg = ti.MODELS["tiny"]
small = ti.make_mesh((2, 2, 2))
spec = param_specs(cfg, ti.Layout("ws1d"))["layers"][0]["w_up"]
print("w_up spec:", spec)
bt.ownership_figure(small, spec, (cfg.E, cfg.F), "W_up in 1D weight-stationary: EF_xyz",
                    ("E", "F")).show()

# %% [markdown]
# 1D weight-stationary shares its body with the weight-gathered layouts of chapter 5 (they are
# 1D weight-stationary over some axes, with weights gathered over the others). Here is that
# body's skeleton, steps 1 to 4 (the lines that run a collective, a matmul, attention or the
# nonlinearity; `inspect.getsource(_one_dim._pass)` shows all of it, with the looped schedule
# of chapter 8). In 1D weight-stationary the batch axes b are empty and the model axes m are
# all of x, y, z:

# %%
print(bt.skeleton(_one_dim._pass))

# %% [markdown]
# And next to the body, the list of collectives it runs, which is what the cost model and
# `measure` use as the prediction (its activations' part; before it, the weight-gathered
# layouts' weight gathers of chapter 5; `rows` is the tokens each chip holds, B/|b|·L):

# %%
print(bt.excerpt(_one_dim.collectives, "for attn, ffn in c.passes(cfg):"))

# %% [markdown]
# ## Run it, check it
#
# Generate with 1D weight-stationary in both phases on the 2×2×2 mesh, and compare with the
# unsharded reference: with f32 parameters the tokens must be identical.

# %%
params = ti.init_params(cfg, seed=0)
prompt_BL = np.random.default_rng(1).integers(0, cfg.V, (8, 8))
layout = ti.Layout("ws1d", "heads")
out = ti.generate(params, cfg, prompt_BL, steps=4, mesh=small, prefill=layout, decode=layout)
ref = ti.generate(params, cfg, prompt_BL, steps=4)

# %%
# NBVAL_CHECK_OUTPUT
print("1D weight-stationary tokens equal the reference's:",
      bool((out.tokens == ref.tokens).all()))
print("logits agree to 1e-4:", float(np.abs(out.step_logits - ref.step_logits).max()) < 1e-4)

# %% [markdown]
# Now the prefill step that `generate` just ran (batch 8, 8 tokens, a cache of 12 positions),
# compiled and read by `measure`: two collectives per layer, plus two small ones at the end
# (the final norm's all-reduce and the output projection's reduce-scatter), exactly as
# predicted. Because `measure` asks for the very configuration `generate` compiled, it reuses
# the compiled program.

# %%
m = measure(cfg, small, layout, phase="prefill", batch=8, tokens=8, context=12, params=params)

# %%
# NBVAL_CHECK_OUTPUT
print(bt.by_kind_table(m))
print()
print(bt.collectives_table(m))

# %% [markdown]
# **Exercise 03.1 · Predict, then run.** The same prefill with 16 sequences instead of 8 (8
# tokens each, f32, on the same mesh): how many bytes per device will the step's all-gathers
# move, all layers together? Write your number in `answer_1` or type it into the lock; the
# lock compiles that step and reads its all-gathers once your number is locked.

# %%
answer_1 = 262_144

# %%
from tpuinfer import sweeps
from tpuinfer_widgets import PredictionLock

lock = PredictionLock("03.1", "all-gather bytes per device at batch 16", lambda: (
    sweeps.step_quantity(cfg, small, layout, phase="prefill", batch=16, tokens=8, context=12,
                         params=params, quantity="bytes:all-gather")), guess=answer_1)
lock

# %%
lock.snapshot()

# %%
# NBVAL_CHECK_OUTPUT
bt.check("03.1", answer_1)

# %% [markdown]
# ## Why 1D stops scaling
#
# The all-gather hands every chip the *whole* activation, [B, L, E], and the reduce-scatter
# starts from a whole one: the bytes each chip moves do not depend on n. Add chips and each
# chip's weights and FLOPs shrink as 1/n, but its communication stays. Below: PaLM 540B
# (heads padded to 64) decoding at batch 64 with a 2048-token context, on the paper's meshes
# of 8 to 64 chips; per chip and per step, from the cost model.

# %%
sweep = {n: cost.estimate("palm-540b-64heads", layout, PAPER_MESHES[n], batch=64, tokens=1,
                          context=2048) for n in (8, 16, 32, 64)}

# %%
# NBVAL_CHECK_OUTPUT
rows = [[n, "x".join(map(str, e.mesh_shape)), f"{e.terms.comm_bytes / 2**20:,.0f}",
         f"{e.terms.weight_bytes / 2**20:,.0f}", bt.seconds(e.comm_s), bt.seconds(e.weights_s),
         f"{e.terms.stored_kv_bytes / 2**30:.1f}", f"{e.memory_per_chip_bytes / 2**30:.1f}",
         "yes" if e.fits else "no"] for n, e in sweep.items()]
print("PaLM 540B decode step, ws1d/heads, per chip: predicted on tpu-v4 (datasheet), overlap")
print(bt.table(["chips", "mesh", "comm MiB", "weights MiB", "comm time", "weight time",
                "KV GiB", "memory GiB", "fits 32 GiB"], rows))

# %%
fig = go.Figure()
for name, attr in [("communication", "comm_s"), ("reading the weights", "weights_s"),
                   ("compute", "compute_s")]:
    fig.add_trace(go.Scatter(x=list(sweep), y=[getattr(e, attr) * 1e3 for e in sweep.values()],
                             name=name, mode="lines+markers"))
fig.update_xaxes(type="log", title="chips", tickvals=list(sweep))
fig.update_yaxes(type="log", title="ms per decode step (tpu-v4 datasheet)")
fig.update_layout(title="1D weight-stationary: weights shrink with n, communication does not",
                  height=360, width=700)
fig.show()

# %% [markdown]
# No chip count fits (last column). At 8 chips the bf16 weights alone are over 130 GiB per
# chip against 32 GiB of HBM. At 64 they shrink to 18 GiB, but attention by heads keeps the
# multiquery KV cache whole on every chip (chapter 6): at batch 64 and 2048 tokens that
# adds almost 15 GiB, and the total still does not fit. The cost model prices each step
# anyway and says so; chapter 6's attention by batch is what makes this request fit.
# The step is memory-bound throughout: reading the weights takes longest. But that time
# halves with every doubling of the chips, while the communication stays put: at 8 chips it
# is about a tenth of the weight time, at 64 about half. Its time moves a little from mesh
# to mesh with the links each one offers (chapter 2: only the 4×4×4 cube has wraparound; the
# smaller slices' sides are lines), but its *bytes* do not shrink. The next chapter cuts E as
# well as F so that communication shrinks as 1/√n.
#
# ## Recap
#
# - 1D weight-stationary splits F (and the heads) over all n chips: `EF_xyz`, `F_xyzE`.
# - Per layer: one all-gather to `BLE`, one reduce-scatter back to `BLE_xyz`; each chip moves
#   the whole activation, so communication does not shrink as chips are added.
# - The weights per chip shrink as 1/n; so past some n communication dominates.
#
# ## Exercises
#
# Exercise 03.1 is above, with the measured prefill.
#
# **Exercise 03.2 · Derive.** Suppose the pattern of the sweep held past 64 chips: the weight
# time halving with every doubling, the communication time staying what it is at 64 chips.
# From the table's 64-chip row, past how many chips (a power of two) would the communication
# take longer than reading the weights?
#
# **Exercise 03.3 · Derive.** From 1D weight-stationary's two collectives per layer, derive
# the bytes per chip one layer of PaLM 540B's decode step moves at batch 64 with bf16
# activations (E = 18432), under the library's convention (chapter 2). Then check it against
# the layout's own list for the sweep's 64-chip step.

# %%
answer_2 = 256
answer_3 = 4_718_592

# %%
# NBVAL_CHECK_OUTPUT
bt.check("03.2", answer_2)
bt.check("03.3", answer_3)
