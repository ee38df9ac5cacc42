# ---
# jupyter:
#   jupytext:
#     formats: ipynb,_src//py:percent
# ---

# %% [markdown]
# # 14 · How far to trust the model
#
# Every chapter so far has printed the cost model's predictions. A prediction is worth what
# it gets right on data it has never seen. This chapter puts the model beside every public
# measurement the project knows of: the paper's own tables on TPU v4, a Llama 3.1 70B
# benchmark on a TPU v5e-16, and NVIDIA's Llama 3 70B serving numbers on H100. Each chip has
# a *calibrated* profile whose constants were fitted to a few named rows; every other row is
# **held out**: it entered no fit, no default and no tolerance. How close the held-out rows
# come is how far to trust the model.
#
# **After this chapter you can** say which public rows the model was fitted to and which it
# was not; read the accuracy board and its predicted-against-measured plot; name the term of
# the model behind each large miss; derive a profile's efficiency from one measurement; and
# predict a configuration nobody has measured, knowing how far to believe it. (Paper:
# [Sections 3.1, 4 and Table 2](https://arxiv.org/abs/2211.05102); the other sources are
# named in every row.)

# %%
import tpuinfer as ti
ti.emulate(256)

# %%
import inspect
import statistics

import booktools as bt
from tpuinfer import accuracy, cost, planner, slices
from tpuinfer.hardware import get_hardware
from tpuinfer.layouts import Layout

# %% [markdown]
# ## The measurements, and which fit saw them
#
# One data file, `tpuinfer/data/measurements.json`, holds every row: where it was published,
# the system and configuration that ran, what was measured, and `fitted_by`, the calibrated
# profile whose fit used it (none: held out). `tpuinfer accuracy` prints the board built from
# it; here is what it holds.

# %%
# NBVAL_CHECK_OUTPUT
rows = accuracy.rows()
summary = []
for family, (datasheet, calibrated) in accuracy.FAMILIES.items():
    mine = [r for r in rows if r.family == family]
    summary.append([family, len(mine), sum(not r.held_out for r in mine),
                    sum(r.held_out for r in mine), calibrated,
                    len({r.source for r in mine})])
print(bt.table(["chip family", "rows", "fitted", "held out", "calibrated profile", "sources"],
               summary))
for r in accuracy.rows(fitted_by="tpu-v5e-calibrated"):
    print(f"fitted to {r.id}: {bt.seconds(r.measured)} ({r.source.split(',')[0]})")

# %% [markdown]
# The v5e fit uses exactly three rows: Llama 3.1 70B on a TPU v5e-16 (a 4×4 slice), tensor
# parallel over all 16 chips, int8 weights and an int8 KV cache, batch 8, 32 and 128 at
# 2,048 tokens of context. Reading that benchmark as it ran took two decisions, both written
# in the data file. Its "tok / s" is decode steps per second per sequence, so a step is
# 1 / (tok/s). Its "context length" is the cache each sequence is given, not the positions a
# step reads: the prefill column barely moves with it (0.496 s to 0.501 s), so the prompt is
# fixed, and the README's ragged decode kernel reads the cache only up to the filled
# positions. Every row is priced with the cache filled to the same 1,024 positions; the
# context length enters no price.
#
# ## What the model says overlaps, and what each profile fitted
#
# The rule is stated once, in `tpuinfer/cost.py`:

# %%
doc = cost.__doc__
print(doc[doc.index("What overlaps"):doc.index("The step time under a rule")])

# %% [markdown]
# A collective's time is its hops times the latency of one, plus its bytes over the links
# its group uses, axis by axis of the physical slice (`tpuinfer.slices`, chapter 2's meshes
# now placed on the slices each chip is sold in). Each calibrated profile is its datasheet
# chip with at most three of these constants fitted, by a script in `benchmarks/` that
# prints the fitted rows' residuals and then every held-out row:

# %%
# NBVAL_CHECK_OUTPUT
FITTABLE = ("flops_efficiency", "hbm_efficiency", "link_efficiency", "hop_latency_s")
profiles = []
for family, (datasheet, calibrated) in accuracy.FAMILIES.items():
    chip, cal = get_hardware(datasheet), get_hardware(calibrated)
    profiles.append([calibrated] + [
        f"{getattr(chip, f):.3g} -> {getattr(cal, f):.3g}" if getattr(cal, f) != getattr(chip, f)
        else f"{getattr(chip, f):.3g}" for f in FITTABLE])
print(bt.table(["profile (datasheet -> fitted)", "FLOP/s", "HBM", "links", "s a hop"],
               profiles))

# %% [markdown]
# None has a fixed time per layer. The old `tpu-v4-calibrated` put 141 µs per layer of every
# model into one constant fitted to PaLM 540B; carried to PaLM 62B's batch-32 decode it was
# two thirds of the prediction. Now a chip's fixed costs are its collectives' hops, which
# scale with the layout's calls and the slice's shape.
#
# ## The board
#
# Every row, priced on its chip's datasheet and on its calibrated profile. Move the slider to
# see the datasheets' predictions; hover a point for its row.

# %%
board = accuracy.board()
bt.accuracy_figure(board).show()

# %%
# NBVAL_CHECK_OUTPUT
lines = []
for family, s in board["families"].items():
    for which in ("calibrated", "datasheet"):
        h = s[f"{which}_held_out"]
        lines.append([family, which, h["rows"], f"{h['median']:.1%}", f"{h['worst']:.1%}"])
print(bt.table(["family", "profile", "held-out rows", "median |error|", "worst |error|"],
               lines, "llrrr"))

# %% [markdown]
# On held-out rows the calibrated v5e profile is within 19% everywhere, 7.8% at the median;
# the H100 profile within 6%; the TPU v4 profile within 15% on the PaLM 62B table priced as
# the paper ran it, the other paper's results ranging wider. Two things on this board deserve
# suspicion before any conclusion. The v5e datasheet's median is *smaller* than the
# calibrated profile's: not because the datasheet is right (its batch-8 step is 29% slow,
# its batch-128 step 23% fast) but because its errors of both signs happen to straddle the
# two-replica table. And the held-out v5e rows lean one way: the calibrated profile is fast
# on every one of them. A median hides a bias; look at the signs.
#
# ## Each large miss, by the model's terms
#
# A miss is only useful when it says which term is wrong. Here are the rows the calibrated
# profiles miss by more than 13%, and the datasheets' misses beyond 25% at the v5e and H100
# fitted rows, each with the priced phases' named terms (compute, weight and KV reads, and
# every collective's full time, before any overlap hides part of it).

# %%
# NBVAL_CHECK_OUTPUT
by_id = {r.id: r for r in accuracy.rows()}
large = [(r, "calibrated") for r in board["rows"] if abs(r["error_calibrated"]) > 0.13]
large += [(r, "datasheet") for r in board["rows"] if not r["held_out"]
          and r["family"] != "tpu-v4" and abs(r["error_datasheet"]) > 0.25]
for r, which in large:
    hw = r[f"{which}_profile"]
    print(f"{r['id']} on {hw}: {r[f'error_{which}']:+.0%}")
    for p in accuracy.phases(by_id[r["id"]], hw):
        terms = ", ".join(f"{k[:-2]} {bt.seconds(v / p.steps)}" for k, v in p.times().items())
        print(f"    {p.phase} step, {p.layout} on {'x'.join(map(str, p.mesh_shape))}: "
              f"{bt.seconds(p.latency_s / p.steps)}; {terms}")

# %% [markdown]
# What each says:
#
# - **The serial block's slowdown (+19%).** Its decode step has two all-gathers and two
#   reduce-scatters a layer where the parallel block has one each, and at batch 512 the
#   model exposes most of them: communication is 116 ms of a 126 ms step against 79 of 93.
#   The paper measured 14%; its schedule hid more of the extra communication than the
#   model's rule lets a looped ring hide (a round hides behind one partial matmul only).
# - **The chatbot (−50%).** The paper gives no batch; the row prices one conversation. At
#   batch 1 the planner picks 1D weight-stationary with attention by heads on all 64 chips,
#   15 ms a step, half of the batch-64 step the paper measured in Table 2 (28.5 ms): at
#   batch 1 there is no all-to-all and no batch to split. The 1.9 s reported is 64 of those
#   28.5 ms steps and a short prefill: the paper's chatbot ran a batch, not one sequence.
#   The miss is in the row's configuration, not the terms; it stays on the board because
#   the configuration is the data file's honest reading.
# - **PaLM 62B's high-throughput decode (+14.5%).** On 8 chips the 2×2×2 slice is three
#   lines of two: each collective runs over one link, and the looped rings hide almost
#   nothing (communication 60 ms of a 91 ms step). The fitted link efficiency (0.65, from 64 chips
#   with rings) is likely too pessimistic for these short lines.
# - **The two-replica table at 32 sequences a replica (−16%).** The measured step jumps
#   3.7 ms from 16 to 32 sequences a replica, then 2.8 ms from 32 to 64. No term of the model
#   has that shape (each grows with the batch or saturates), and it splits the difference.
# - **Context length on the v5e (−13% to −18%).** The model prices no growth with the
#   context length: under the data file's reading the filled positions are the same. The
#   measurements grow 5% to 15% from 2,048 to 8,192 at a batch; the README's kernel walks
#   its grid over the whole cache even where it loads nothing, a cost per block the model
#   has no term for.
# - **The v5e datasheet's batch-8 step (+29%).** 2.5 ms of communication, most of it hops:
#   the datasheet charges 1 µs a hop, and the step's collectives wait for about two
#   thousand of them. The measured step leaves 0.9 ms for everything beyond the weight
#   reads, so the fit puts the hop latency at zero (its lower bound). On this slice and
#   software, hops are not what a small collective waits for.
# - **The H100 datasheet (−39% and −31%).** The concurrency-1 step is a weight read: 10.4
#   ms at 3.35 TB/s against 18.6 ms measured. The served engine reads its fp8 weights at
#   about 60% of the datasheet's bandwidth, and at concurrency 50 each step also waits for a
#   tenth of a 5,000-token prefill, at 74% of the fp8 peak. Those two constants, fitted to
#   these two rows, carry the held-out rows to within 6%.
#
# ## The planner on a table it never saw
#
# Pricing the paper's layouts is one test; choosing them is another. Table 2's four
# columns are chosen by the planner on both TPU v4 profiles (tests/test_planner.py). On the
# PaLM 62B table, held out, the calibrated planner's own choices:

# %%
# NBVAL_CHECK_OUTPUT
rows62 = []
for r in accuracy.rows("tpu-v4"):
    if not r.id.startswith("palm62b"):
        continue
    c = dict(r.config)
    paper = f"{c.pop('ffn')}/{c.pop('attention')}"
    c.pop("mesh")
    chosen = accuracy.phases(accuracy.Row(**{**vars(r), "config": c}), "tpu-v4-calibrated")[0]
    rows62.append([r.id.removeprefix("palm62b-"), c["chips"], paper,
                   f"{chosen.layout.ffn}/{chosen.layout.attention}",
                   "x".join(map(str, chosen.mesh_shape)), bt.seconds(r.measured),
                   bt.seconds(chosen.latency_s), f"{chosen.latency_s / r.measured - 1:+.0%}"])
print(bt.table(["column", "chips", "paper ran", "planner chooses", "mesh", "measured",
                "chosen, predicted", "vs measured"], rows62))

# %% [markdown]
# Two of four. The decode at batch 32 and the weight-gathered prefill match; on 16 and 8
# chips the planner prefers 1D weight-stationary (2D with X = 1), which it prices 28% to
# 40% faster than the paper's measured 2D. Is the paper's choice or the model wrong? The
# paper's crossover, 2D beating 1D once n > 4F/E = 16 chips (Section 3.2), counts one
# F-wide reduce-scatter over x. A SwiGLU layer reduces both W_gate's and W_up's outputs
# there, 2F, which moves the crossover to 8F/E = 32 chips: at 16 and 8 chips 1D moves fewer
# bytes. The model cannot say whether 1D would have been faster on the paper's machine;
# nobody measured it. A planner choice the data cannot check is a prediction, and this one
# is labelled as such.
#
# ## Recap
#
# - Every public measurement lives in one data file with its source, its configuration and
#   the fit that used it; `tpuinfer accuracy` prints the board.
# - Three calibrated profiles, each its datasheet chip with two or three fitted constants
#   and no fixed cost per layer: held-out rows within 19% on v5e (median 7.8%), 6% on
#   H100, 15% on the PaLM 62B table as the paper ran it.
# - Overlap is one rule: HBM reads beside the matrix units, plain collectives exposed, a
#   looped ring's rounds behind its partial matmuls, launches never hidden.
# - Large misses name their term: a configuration the source does not give (the chatbot's
#   batch), a cost the model has no term for (a kernel's walk over an empty cache), a
#   constant fitted on rings carried to lines.
# - The planner's choices on a table it never saw match in two of four columns; where they
#   differ, the model's reason (SwiGLU's 2F reduce-scatter) is stated and unchecked.
#
# ## Exercises
#
# 1. **Derive** the H100's HBM efficiency from one row: the concurrency-1 inter-token
#    latency (18.58 ms) as nothing but the read of each GPU's fp8 weights (the terms of the
#    board's H100 step, on the datasheet) at 3.35 TB/s. Answer as a fraction, three figures.
# 2. **Derive** how many hop latencies one decode step of the v5e benchmark waits for: Llama
#    3 70B, 1D weight-stationary, plain collectives, the 1x8x2 mesh on the 4x4 slice (every
#    collective's calls times its hops, from `slices.group_links`).
# 3. **Predict**, then run: the calibrated v5e's decode step for Llama 3 70B (int8 weights
#    and KV, 1,024 positions) at batch 16, tensor parallel over a v5e-32 (the 4×8 slice),
#    plain collectives: within 20%, in ms. Would you trust it to within 20% of a
#    measurement, and why?

# %%
answer_1 = 0.558
answer_2 = 1938
answer_3 = 4.6e-3

# %%
# NBVAL_CHECK_OUTPUT
h100 = by_id["llama70b-h100x2-isl5000-osl500-c1"]
step = accuracy.phases(h100, "h100-sxm")[0]
bt.check("exercise 1", answer_1, round(step.weights_s / h100.measured, 3), rel=0.01,
         hint="the datasheet step's weight read over the measured latency")
tp16 = cost.estimate("llama-3-70b", Layout("ws1d", "heads"), (1, 8, 2), batch=8, tokens=1,
                     context=1025, weights="int8", hardware="tpu-v5e")
hops = sum(c.collective.count * slices.group_links("tpu-v5e", (1, 8, 2),
                                                   c.collective.axes).steps
           * (2 if c.collective.kind == "all-reduce" else 1) for c in tp16.collectives)
bt.check("exercise 2", answer_2, hops,
         hint="each collective's count times group_links(...).steps; an all-reduce twice")
v5e32 = planner.plan("llama-3-70b", "tpu-v5e-calibrated", 32, 16, input_len=0,
                     history_len=1024, gen_len=1, weights="int8", kv="int8", ffn="ws1d",
                     attention="heads", looped="no").decode.best
bt.check("exercise 3", answer_3, v5e32.latency_s, rel=0.2,
         hint="half the weights of the 16-chip step per chip, the same bytes a collective")
