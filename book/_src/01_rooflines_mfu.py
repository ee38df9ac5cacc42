# ---
# jupyter:
#   jupytext:
#     formats: ipynb,_src//py:percent
# ---

# %% [markdown]
# # 1 · Rooflines and MFU
#
# Before choosing how to cut a model, ask what limits one step. A chip can be busy doing
# three things, and a step takes at least as long as the longest of them:
#
# - **compute**: the matrix units perform the step's FLOPs at a peak rate
#   (275 TFLOP/s of bf16 on a TPU v4);
# - **memory**: the chip streams its share of the weights (and of the KV cache) out of HBM
#   (1.2 TB/s on a TPU v4), once per step, however many tokens the step processes;
# - **communication**: the chips exchange activations or weights over the interconnect.
#
# Compute grows with the number of tokens in the step; reading the weights does not. So a
# decode step at small batch, which processes one token per sequence, spends its time reading
# weights and leaves the matrix units idle: it is **memory-bound**. A prefill of 2048 tokens
# per sequence does 2048× the arithmetic for the same weight reads: it is **compute-bound**.
# The "roofline" is the picture of this: the step's time follows whichever bound is higher.
#
# The paper measures efficiency as **MFU**, model FLOPs utilisation: the FLOPs the model
# *must* do (2 per parameter per token: only the weight matmuls count) over what the chips
# could have done in the time taken.
#
# **After this chapter you can** say whether a step is compute-, memory- or
# communication-bound; compute MFU and cost per token from a latency; derive the batch at
# which decode turns compute-bound on a given chip; and tell a prediction on a datasheet
# profile from a measurement. (Paper: [Section 2](https://arxiv.org/abs/2211.05102),
# "Inference cost tradeoffs".)

# %%
import tpuinfer as ti
ti.emulate(256)

# %%
import inspect

import plotly.graph_objects as go
from plotly.subplots import make_subplots

import booktools as bt
from tpuinfer import cost
from tpuinfer.hardware import PROFILES
from tpuinfer.measure import PRECISE, measure
from tpuinfer.paper import TABLE2
from tpuinfer.theory import decode_ridge_batch

# %% [markdown]
# Both definitions live in the library, each once. The FLOPs per token sit beside the model's
# parameter count; MFU sits in the cost model:

# %%
print(inspect.getsource(ti.ModelConfig.flops_per_token))
print(inspect.getsource(cost.mfu))

# %% [markdown]
# ## The chips
#
# Each hardware profile is one row of a table in `tpuinfer/hardware.py`, every constant with
# its source. The ratio of peak FLOP/s to HBM bandwidth says how many FLOPs a chip can do per
# byte it reads: a step with fewer FLOPs per weight byte than that waits on memory.

# %%
# NBVAL_CHECK_OUTPUT
rows = [[p.name, f"{p.peak_flops / 1e12:g}", f"{p.hbm_bandwidth / 1e12:g}",
         f"{p.hbm_bytes / 2**30:.0f}", f"{p.link_bandwidth / 1e9:g}", p.interconnect, p.rule]
        for p in PROFILES.values()]
print(bt.table(["profile", "peak TFLOP/s", "HBM TB/s", "HBM GiB", "link GB/s", "interconnect",
                "rule"], rows))

# %% [markdown]
# ## The roofline of a decode step, in time
#
# PaLM 540B (heads padded to 64, as the paper runs it) on 64 TPU v4 chips in the paper's
# decode layout, 2D weight-stationary (chapter 4). To isolate the weights from the KV cache,
# the context here is a single token; chapter 6 brings the cache back. For each batch size
# the cost model (`cost.estimate`) returns the step's named terms: the time to do its FLOPs,
# to read its weights, to communicate. A **combination rule** turns the terms into a step
# time, and every profile states its rule: `sum` adds them all (nothing runs at once);
# `overlap`, the datasheet profile's, lets HBM stream the weights while the matrix units run,
# so the step takes the longer of compute and memory, and adds the communication that
# nothing hides (chapter 10 shows the rule's code). Here that is all of it: this is the plain
# schedule, whose collectives sit between the matmuls (chapter 8 loops them).

# %%
batches = [2**k for k in range(13)]  # 1 .. 4096
decode = {b: cost.estimate("palm-540b-64heads", ti.Layout("ws2d", "heads"), (4, 4, 4),
                           batch=b, tokens=1, context=1) for b in batches}
fig = make_subplots(rows=1, cols=2, subplot_titles=("time per decode step", "MFU"))
for name, attr in [("compute", "compute_s"), ("weights", "weights_s"),
                   ("communication", "comm_s"), ("step (overlap rule)", "step_s")]:
    fig.add_trace(go.Scatter(x=batches, y=[getattr(e, attr) * 1e3 for e in decode.values()],
                             name=name, mode="lines+markers",
                             line=dict(dash="dot" if attr != "step_s" else "solid")), 1, 1)
fig.add_trace(go.Scatter(x=batches, y=[e.mfu for e in decode.values()], name="MFU",
                         mode="lines+markers", showlegend=False), 1, 2)
fig.update_xaxes(type="log", title="batch (sequences, one token each)")
fig.update_yaxes(type="log", title="ms", row=1, col=1)
fig.update_yaxes(title="MFU", range=[0, 1], row=1, col=2)
fig.update_layout(height=380, width=900,
                  title="PaLM 540B decode on 64 TPU v4 chips (2D weight-stationary), "
                        "predicted: tpu-v4 datasheet, overlap")
fig.show()

# %% [markdown]
# Read the left panel from the left. At batch 1 the step costs the time to read 1/64 of
# 540B bf16 parameters on each chip, about 15 ms, and compute is two orders of magnitude
# below it: MFU is well under 1%. Doubling the batch doubles the compute and leaves the
# weight reads alone, so the step time stays nearly flat and MFU nearly doubles. Past the
# batch where the two lines cross, compute dominates and MFU levels off, well short of 100%:
# communication grows with the batch too (activations are what moves in this layout), and in
# this plain schedule it adds to the step instead of hiding behind compute. Hiding it is
# chapter 8's subject.
#
# The batch where compute first overtakes weight loading in the sweep:

# %%
# NBVAL_CHECK_OUTPUT
crossover = next(b for b, e in decode.items() if e.compute_s >= e.weights_s)
print("compute first exceeds weight loading at batch", crossover)

# %% [markdown]
# ## The ridge point
#
# The sweep only tried powers of two. Where exactly do the two lines cross?
#
# **Exercise 01.1 · Derive.** The batch at which a decode step's weight matmuls take exactly
# as long as reading the weights is the decode **ridge point**. Per chip, compute takes
# 2·N·B / (n·peak) and the weight reads N·b / (n·HBM bandwidth), with N parameters, n chips
# and b bytes per weight. Solve for B, with bf16 weights on TPU v4 (the chip table above has
# its peak and bandwidth), and check that the sweep's crossover is the first power of two
# past it.

# %%
answer_1 = 229

# %% [markdown] tags=["solution"]
# **Solution 01.1.** Set the two times equal: 2·N·B / (n·peak) = N·b / (n·bandwidth). N and n
# cancel (every chip holds 1/n of the weights and does 1/n of the FLOPs), so
# B = peak·b / (2·bandwidth): the FLOPs the chip can do per byte it reads (peak / bandwidth,
# 229 on TPU v4), times the bytes per weight, over the 2 FLOPs each weight costs a sequence.
#
# - TPU v4, bf16 (b = 2): 275e12 · 2 / (2 · 1.2e12) = 229.2 sequences; int8 (b = 1): 114.6.
# - A100 80 GB (312 TFLOP/s, 2.039 TB/s), bf16: 153.0; int8: 76.5.
#
# 229 lies between the sweep's 128 and 256, so the sweep's step crosses at 256. int8 halves
# the bytes and so halves the ridge point: a smaller batch already turns compute-bound. The
# library's `theory.decode_ridge_batch` computes the same:

# %% tags=["solution"]
for hw in ("tpu-v4", "a100-80g"):
    print(hw, {w: round(decode_ridge_batch(hw, w), 1) for w in ("bf16", "int8")})

# %%
# NBVAL_CHECK_OUTPUT
bt.check("01.1", answer_1)

# %% [markdown]
# That batch is the **ridge point** the later chapters refer to: below it a decode step is
# memory-bound and adding sequences is nearly free; above it every sequence costs its FLOPs.
# For TPU v4 in bf16 it is 229 sequences (`theory.decode_ridge_batch`). It counts only the
# weights: chapter 9 asks what int8 does to it, chapter 7 and chapter 12 add the reads of the
# KV cache, which grow with the batch and push it further out.

# %% [markdown]
# ## Prefill is a different animal
#
# A prefill of L tokens per sequence reads the same weights once for B·L tokens. Even a
# single 2048-token prompt puts it far right on the roofline:

# %%
# NBVAL_CHECK_OUTPUT
rows = []
for b in (1, 8, 64):
    e = cost.estimate("palm-540b-64heads", ti.Layout("ws2d", "heads"), (4, 4, 4), batch=b,
                      tokens=2048, context=2048)
    rows.append([b, b * 2048, bt.seconds(e.compute_s), bt.seconds(e.weights_s),
                 bt.seconds(e.comm_s), bt.seconds(e.step_s), f"{e.mfu:.0%}"])
print("PaLM 540B prefill, ws2d (plain) on 4x4x4: predicted on tpu-v4 (datasheet), overlap")
print(bt.table(["batch", "tokens", "compute", "weights", "comm", "step", "MFU"], rows))
low = TABLE2[0]
print(f"\npaper, measured (Table 2, {low.name}): batch {low.batch}, {low.weights}, "
      f"{low.ffn}/{low.attention}, looped: {bt.seconds(low.latency_s)}, MFU {low.mfu:.0%}")

# %% [markdown]
# Compute-bound, but not at peak: in this plain schedule the step waits for its collectives,
# which grow with the tokens as the FLOPs do. Set the batch-1 row beside the paper's
# measurement of the same request: the datasheet prediction is faster and reaches a higher
# MFU than the paper's 43%. A datasheet profile assumes peak FLOP/s and full HBM bandwidth,
# and charges nothing for the work between the matmuls: a lower bound on time, an upper
# bound on MFU. The paper measured 76% MFU for large-batch
# prefill (Table 2) with a weight-gathered layout (chapter 5) whose communication is looped
# behind the matmuls (chapter 8); chapter 10 compares the model with every number in its
# Table 2.
#
# ## Read from the compiled step: FLOPs grow with tokens, the weights held do not
#
# On the emulated mesh, wall time means little, but FLOPs are exact: `measure` counts every
# matmul of the compiled step that reads a weight, and reads the weight bytes each device
# *holds* from the compiled program's arguments. How many bytes a step *reads* from memory is
# not something the CPU can measure; the cost model's "weight bytes read" is the layout's
# count. A decode step of the tiny model on a 2×2×2 mesh at batch 8, timed as
# `benchmarks/bench_measure.py` times its steps (`measure.PRECISE`: a warm-up, then at least
# 15 runs, the median kept):

# %%
cfg = ti.MODELS["tiny"]
params = ti.init_params(cfg, seed=0)
mesh = ti.make_mesh((2, 2, 2))
layout = ti.Layout("ws2d", "heads")
steps = {8: measure(cfg, mesh, layout, phase="decode", batch=8, context=16, params=params,
                    **PRECISE)}

# %%
# NBVAL_CHECK_OUTPUT
m8 = steps[8]
print(f"weight-matmul FLOPs per device: {m8.predicted.flops:,.0f} predicted, "
      f"{m8.measured.flops:,.0f} in the compiled step")
print(f"weight bytes per device: {m8.terms.weight_bytes:,.0f} read (predicted), "
      f"{m8.measured.weight_bytes_per_device:,.0f} held (compiled)")

# %% [markdown]
# **Exercise 01.2 · Predict, then run.** The same decode step with 64 sequences instead of 8:
# how many weight-matmul FLOPs will each device do? Write your number in `answer_2` (or type
# it into the lock); the lock compiles the step and reads its matmuls only once it is locked.

# %%
answer_2 = 61_341_696

# %%
from tpuinfer import sweeps
from tpuinfer_widgets import PredictionLock

lock = PredictionLock("01.2", "weight-matmul FLOPs per device at batch 64", lambda: (
    sweeps.step_quantity(cfg, mesh, layout, phase="decode", batch=64, context=16,
                         params=params, quantity="flops")), guess=answer_2)
lock

# %%
lock.snapshot()

# %%
# NBVAL_CHECK_OUTPUT
bt.check("01.2", answer_2)

# %% [markdown]
# Both steps side by side: eight times the FLOPs, the same weights held.

# %%
steps[64] = measure(cfg, mesh, layout, phase="decode", batch=64, context=16, params=params,
                    **PRECISE)

# %%
# NBVAL_CHECK_OUTPUT
rows = [[b, f"{m.predicted.flops:,.0f}", f"{m.measured.flops:,.0f}",
         f"{m.terms.weight_bytes:,.0f}", f"{m.measured.weight_bytes_per_device:,.0f}"]
        for b, m in steps.items()]
print(bt.table(["batch", "FLOPs predicted", "FLOPs compiled", "weight bytes read (predicted)",
                "held (compiled)"], rows))

# %% [markdown]
# And the TPU v4 prediction for the same two tiny steps: a tiny model on 8 chips has so few
# weights per chip that fixed latencies dominate. A prediction, labelled as such; the CPU
# timing beside it is this laptop emulating 8 devices.

# %%
for b, m in steps.items():
    print(f"batch {b:3d}: TPU v4 predicted {bt.seconds(m.tpu_time_s)}, "
          f"this CPU measured {bt.seconds(m.measured.time_s)}")

# %% [markdown]
# The same cost model prices this CPU once it has measured it: `tpuinfer calibrate` fits a
# `host` profile (the emulated devices are threads sharing two cores, so its FLOP/s and
# bytes/s are the machine's, divided among the mesh's devices; chapter 11 says more). Each
# step measured after that carries the host profile's prediction of its own time, scaled by
# how much slower or faster the machine runs now than when it was calibrated ("x drift",
# chapter 11). Both numbers are this machine's, the first a prediction and the second a
# measurement. Eight
# times the FLOPs do not take eight times as long here either: the tiny model's collectives
# and per-layer overheads do not grow with the batch.

# %%
timed = {f"decode, batch {b}": m for b, m in steps.items()}
print(bt.host_times(timed))
bt.time_figure(timed, "Tiny model, ws2d/heads decode on 2×2×2: this CPU")

# %% [markdown]
# ## Recap
#
# - A step takes at least its compute time, its memory time and its exposed communication;
#   the profile's rule (`sum` or `overlap`) says how they combine.
# - Decode at small batch is memory-bound: the weights are read once per step whatever the
#   batch. Prefill's many tokens make it compute-bound.
# - MFU = 2·N·tokens / (chips · peak · time); cost = chips · time / tokens.
# - A datasheet prediction is a bound, not a measurement: set it beside the paper's figure.
# - The decode ridge point B = peak·b / (2·HBM bandwidth) is where a step's weight matmuls
#   outlast its weight reads: 229 sequences in bf16 on TPU v4.
#
# ## Exercises
#
# Exercises 01.1 and 01.2 are above, where the ridge point and the FLOPs are taught.
#
# **Exercise 01.3 · Derive.** The paper's low-latency decode (Table 2) generated 64 tokens for
# each of 64 sequences with PaLM 540B (the paper counts N = 540e9) on 64 TPU v4 chips in
# 1.82 s. What MFU is that? (A fraction, to two significant digits.)
#
# **Exercise 01.4 · Derive.** The ridge point for int8 weights on an A100 (`a100-80g` in the
# chip table). Does int8 raise or lower the batch where decode turns compute-bound?
#
# **Exercise 01.5.** The paper's cost metric is chip-seconds per token. What did a token of
# that same low-latency decode cost?

# %%
answer_3 = 0.14
answer_4 = 77
answer_5 = 0.0284

# %%
# NBVAL_CHECK_OUTPUT
bt.check("01.3", answer_3)
bt.check("01.4", answer_4)
bt.check("01.5", answer_5)
