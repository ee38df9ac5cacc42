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
import math

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
# `overlap` lets HBM reads run beside the matrix units, so the step takes the longer of
# compute and memory, and adds the communication that nothing hides (chapter 10 shows the
# rule's code). Under the datasheet profile's `overlap` rule the step
# takes the longer of compute and memory (HBM streams the weights while the matrix units
# run), plus the communication: this is the plain schedule, whose collectives sit between
# the matmuls where nothing hides them (chapter 8 loops them).

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
# The batch where compute first overtakes weight loading in the sweep (exercise 2 derives
# where it must be):

# %%
# NBVAL_CHECK_OUTPUT
crossover = next(b for b, e in decode.items() if e.compute_s >= e.weights_s)
print("compute first exceeds weight loading at batch", crossover)

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
print("PaLM 540B prefill, 2D weight-stationary (plain) on 4x4x4: predicted on tpu-v4 "
      "(datasheet), rule overlap")
print(bt.table(["batch", "tokens", "compute", "weights", "comm", "step", "MFU"], rows))
low = TABLE2[0]
print(f"\npaper, measured (Table 2, {low.name}: batch {low.batch}, {low.weights}, "
      f"{low.ffn}/{low.attention}, looped): {bt.seconds(low.latency_s)}, MFU {low.mfu:.0%}")

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
# count. Two decode steps of the tiny model on a 2×2×2 mesh, batch 8 and batch 64: eight
# times the FLOPs, the same weights held.

# %%
cfg = ti.MODELS["tiny"]
params = ti.init_params(cfg, seed=0)
mesh = ti.make_mesh((2, 2, 2))
steps = {b: measure(cfg, mesh, ti.Layout("ws2d", "heads"), phase="decode", batch=b,
                    context=16, params=params, **PRECISE) for b in (8, 64)}

# %%
# NBVAL_CHECK_OUTPUT
rows = [[b, f"{m.predicted.flops:,.0f}", f"{m.measured.flops:,.0f}",
         f"{m.terms.weight_bytes:,.0f}", f"{m.measured.weight_bytes_per_device:,.0f}"]
        for b, m in steps.items()]
print(bt.table(["batch", "FLOPs predicted", "FLOPs in the compiled step",
                "weight bytes read (predicted)", "weight bytes held (compiled)"], rows))

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
# step measured after that carries the host profile's prediction of its own time. Both
# numbers are this machine's, the first a prediction and the second a measurement (the two
# steps above were timed as `benchmarks/bench_measure.py` times its steps, `measure.PRECISE`:
# a warm-up, then at least 15 runs, the median kept). Eight times the FLOPs do not take
# eight times as long here either: the tiny model's collectives and per-layer overheads do
# not grow with the batch.

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
#
# ## Exercises
#
# 1. The paper's high-throughput prefill processed 512 sequences of 2048 tokens with PaLM 540B
#    (the paper counts N = 540e9) on 64 TPU v4 chips in 85.2 s. What MFU is that? (A fraction,
#    to two significant digits.)
# 2. **Derive** the batch at which a decode step's weight matmuls take as long as reading
#    the weights. Per chip, compute takes 2·N·B / (n·peak) and the weight reads N·b /
#    (n·HBM bandwidth), with b bytes per weight. Solve for B with bf16 weights on TPU v4
#    (the chip table above has its peak and bandwidth). Then check that the sweep's
#    crossover, 256, is the first power of two above it.
# 3. **Derive** the same batch for int8 weights on an A100 (`a100-80g` in the table). Does
#    int8 raise or lower the batch where decode turns compute-bound?
# 4. The paper's cost metric is chip-seconds per token. Its low-latency decode generated
#    64 tokens for each of 64 sequences in 1.82 s on 64 chips. What did a token cost, in
#    chip-seconds?

# %%
answer_1 = 0.76
answer_2 = 229
answer_3 = 77
answer_4 = 0.0284

# %%
# NBVAL_CHECK_OUTPUT
bt.check("exercise 1", answer_1, cost.mfu("palm-540b", 512 * 2048, 64, "tpu-v4", 85.2), rel=0.01,
         hint="2·N FLOPs per token, every token of every sequence, over 64 chips at peak "
              "for 85.2 s")
bt.check("exercise 2", answer_2, decode_ridge_batch("tpu-v4", "bf16"), rel=0.01,
         hint="N and n cancel: B = peak·b / (2·bandwidth), b = 2 bytes")
assert crossover == 2 ** math.ceil(math.log2(decode_ridge_batch("tpu-v4", "bf16")))
bt.check("exercise 3", answer_3, decode_ridge_batch("a100-80g", "int8"), rel=0.02,
         hint="the same formula, b = 1 byte; an A100 has 312 TFLOP/s and 2.039 TB/s")
bt.check("exercise 4", answer_4, cost.cost_per_token(64, 1.82, 64 * 64), rel=0.01,
         hint="chips times seconds, over the tokens generated (64 sequences x 64 tokens)")
