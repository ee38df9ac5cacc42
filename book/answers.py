"""The book's answer key: for every exercise ("NN.k": chapter NN, exercise k), the library call
that computes its expected value, the relative tolerance a number may be off by, and the hint
a student's check prints while the answer is not right yet.

`booktools.check("04.1", answer_1)` asks `expected`; a chapter's check cell never shows how
the value is computed. An entry may read what its chapter ran (a measured step): it is handed
the chapter's namespace, `ns`. Every value comes from `tpuinfer` (the cost model, the planner,
`theory`, `measure`, `paper`, `accuracy`); nothing here is a formula of its own (03.2
extrapolates as its question says to; 10.4 reads 1D weight-stationary as 2D with X = 1). A
hint says where to look or what to set up, never the solved formula or the value.
"""
from __future__ import annotations

import tpuinfer as ti
from tpuinfer import accuracy, cost, experts, kv, paper, planner, sweeps, theory
from tpuinfer.hardware import get_hardware, group_links
from tpuinfer.terms import Collective

KEY: dict = {}


def key(label: str, rel: float = 1e-6, hint: str = ""):
    """Register the function below as exercise `label`'s expected value."""
    def register(fn):
        if label in KEY:
            raise ValueError(f"exercise {label} has two entries in the answer key")
        KEY[label] = (fn, rel, hint)
        return fn
    return register


def expected(label: str, ns: dict) -> tuple:
    """(expected value, relative tolerance, hint) of exercise `label`."""
    if label not in KEY:
        raise KeyError(f"exercise {label} is not in the answer key (book/answers.py)")
    fn, rel, hint = KEY[label]
    return fn(ns), rel, hint


# ---- 00 welcome -------------------------------------------------------------------------------
@key("00.1", hint="how many positions does a device have along y, and along z?")
def _(ns):
    return group_links("tpu-v4", (2, 4, 4), ("y", "z")).chips


@key("00.2", hint="read E and F off the table: what shape is each of the three matrices?")
def _(ns):
    return ti.MODELS["palm-8b"].ffn_params_per_layer()


@key("00.3", hint="one f32 number is 4 bytes; how many numbers does each device end with?")
def _(ns):
    return sweeps.step_quantity(ns["cfg"], ns["mesh"], ns["layouts"]["prefill"],
                                phase="prefill", batch=64, tokens=8, params=ns["params"],
                                quantity="bytes:all-reduce")["measured"]


# ---- 01 rooflines and MFU ---------------------------------------------------------------------
@key("01.1", rel=0.01, hint="write both times per chip, set them equal: N and n cancel")
def _(ns):
    return theory.decode_ridge_batch("tpu-v4", "bf16")


@key("01.2", hint="which of B, L, E, F grows the FLOPs of a weight matmul?")
def _(ns):
    return sweeps.step_quantity(ns["cfg"], ns["mesh"], ns["layout"], phase="decode", batch=64,
                                context=16, params=ns["params"], quantity="flops")["measured"]


@key("01.3", rel=0.02, hint="chapter 1's definition of MFU, with the tokens the decode "
                            "generated")
def _(ns):
    return cost.mfu("palm-540b", 64 * 64, 64, "tpu-v4", 1.82)


@key("01.4", rel=0.02, hint="exercise 01.1's result, with the A100's peak and bandwidth and "
                            "one byte per weight")
def _(ns):
    return theory.decode_ridge_batch("a100-80g", "int8")


@key("01.5", rel=0.01, hint="the paper's cost metric, as this chapter defines it")
def _(ns):
    return cost.cost_per_token(64, 1.82, 64 * 64)


# ---- 02 meshes and collectives ----------------------------------------------------------------
@key("02.1", hint="a reduce-scatter is charged its input: the block one device holds before "
                  "it starts")
def _(ns):
    return ns["compiled"]["reduce-scatter(yz)"][0].bytes


@key("02.2", hint="which part of the output block was already on the chip before the "
                  "all-gather started?")
def _(ns):
    from tpuinfer.measure import group_axes
    from tpuinfer.mesh import mesh_shape
    c = ns["compiled"]["all-gather(yz)"][0]
    return theory.bytes_sent(Collective(c.kind, group_axes(c.groups, mesh_shape(ns["mesh"])),
                                        c.group_size, c.bytes))


@key("02.3", hint="the table of ring steps: what does one wrapped axis take, and a group "
                  "over two of them?")
def _(ns):
    return group_links("tpu-v4", (4, 4, 8), ("x", "z")).steps


# ---- 03 1D weight-stationary ------------------------------------------------------------------
@key("03.1", hint="each chip ends an all-gather holding the whole activation; how many "
                  "all-gathers does a step run?")
def _(ns):
    return sweeps.step_quantity(ns["cfg"], ns["small"], ns["layout"], phase="prefill",
                                batch=16, tokens=8, context=12, params=ns["params"],
                                quantity="bytes:all-gather")["measured"]


@key("03.2", hint="how many halvings bring the weight time below the communication time?")
def _(ns):
    at_64, n = ns["sweep"][64], 64
    while at_64.weights_s * 64 / n >= at_64.comm_s:  # the exercise's own assumption
        n *= 2
    return n


@key("03.3", hint="what does each of the layer's two collectives carry, under chapter 2's "
                  "convention?")
def _(ns):
    layer = [c for c in ns["sweep"][64].terms.collectives if c.what.startswith(("1.", "4."))]
    return sum(c.bytes for c in layer)


# ---- 04 2D weight-stationary ------------------------------------------------------------------
PALM = ti.MODELS["palm-540b-64heads"]


@key("04.1", hint="write YZ as n/X, differentiate in X and set the derivative to zero")
def _(ns):
    return theory.ws2d_optimal_x(64, PALM.E, PALM.F)


@key("04.2", hint="write the inequality, square both sides, then put F = 4E")
def _(ns):
    return theory.ws2d_crossover_chips(PALM.E, PALM.F)


@key("04.3", hint="which of the seven steps all-gather, over which axes, and what does each "
                  "chip hold when one ends?")
def _(ns):
    return sweeps.step_quantity(ns["cfg"], ns["mesh"], ns["layout"], phase="decode", batch=8,
                                context=12, params=ns["params"],
                                quantity="bytes:all-gather")["measured"]


@key("04.4", hint="how does the optimal communication depend on n?")
def _(ns):
    return theory.ws2d_optimal_comm(64, PALM.E, PALM.F) / theory.ws2d_optimal_comm(
        256, PALM.E, PALM.F)


# ---- 05 weight-gathered -----------------------------------------------------------------------
@key("05.1", rel=0.001, hint="write the formula for both N, subtract, and solve for B·L")
def _(ns):
    return theory.wg_crossover_tokens(64, ti.MODELS["palm-540b"].F, 16, 64)


@key("05.2", hint="scale the formula's crossover by the larger floors, then take the next "
                  "power of two")
def _(ns):
    return next(n for n, ffn in ns["best"].items() if ffn == "wg-xyz")


@key("05.3", hint="which matrices does a layer hold, and what shape is each? Then the token "
                  "ids")
def _(ns):
    return sweeps.step_quantity(ns["cfg"], ns["small"], ti.Layout("wg-xyz", "heads"),
                                phase="prefill", batch=64, tokens=32, params=ns["params"],
                                quantity="bytes:all-gather")["measured"]


@key("05.4", rel=0.005, hint="differentiate in N and set the derivative to zero")
def _(ns):
    return theory.wg_optimal_gather(2**20, 64, ti.MODELS["palm-540b"].F)


# ---- 06 attention -----------------------------------------------------------------------------
@key("06.1", rel=0.01, hint="which sequences' cache does a chip hold by batch, and what does "
                            "one position of it hold?")
def _(ns):
    return planner.kv_bytes_per_chip("palm-540b", "multiquery-batch", 64, 512, 2048) / 2**30


@key("06.2", rel=0.01, hint="the bytes one position of the cache costs a chip, into 30% of "
                            "32 GiB")
def _(ns):
    return planner.max_context("palm-540b", 64, 512, "multihead")


@key("06.3", rel=0.01, hint="the bytes one position of the cache costs a chip now: a byte a "
                            "value, and each head's scale beside its values")
def _(ns):
    return kv.max_context("palm-540b", 64, 512, "multiquery-batch", kv="int8")


@key("06.4", hint="what does Q hold on one chip before it moves, and how many all-to-alls does "
                  "a layer run?")
def _(ns):
    return sweeps.step_quantity(ns["cfg"], ns["mesh"], ti.Layout("ws2d", "batch"),
                                phase="decode", batch=8, context=8 + ns["steps"],
                                params=ns["params"], quantity="bytes:all-to-all")["measured"]


@key("06.5", hint="which axis do the heads split over last, and how many chips does it have?")
def _(ns):
    from tpuinfer.errors import TpuinferError
    from tpuinfer.layouts.registry import check

    def runs_with(batch):
        try:
            check(ti.MODELS["tiny"], ti.Layout("ws2d", "batch"), (2, 2, 2), batch)
            return True
        except (TpuinferError, ValueError):
            return False
    return next(b for b in range(1, 65) if runs_with(b))


# ---- 07 prefill against decode ----------------------------------------------------------------
@key("07.1", hint="the parallel block's step 1 all-gather serves attention and the "
                  "feed-forward together; the serial block runs step 1 for each")
def _(ns):
    return sweeps.step_quantity(ns["serial"], ns["small"], ti.Layout("ws2d", "heads"),
                                phase="prefill", batch=8, tokens=8, params=ns["serial_params"],
                                quantity="bytes:all-gather")["measured"]


@key("07.2", rel=0.05, hint="which share of a datasheet step do the extra collectives take, "
                            "next to a real chip's step?")
def _(ns):
    return paper.against_paper("serial-slowdown", "tpu-v4")["predicted"]


@key("07.3", rel=0.005, hint="set the two times equal and collect the terms in B")
def _(ns):
    return theory.decode_critical_batch("palm-540b", "tpu-v4", "bf16", 2048)


# ---- 08 looped CollectiveEinsum ---------------------------------------------------------------
@key("08.1", rel=0.005, hint="a round hides what runs beside it: what does it leave?")
def _(ns):
    return ns["ring"]["one way"].exposed_s * 1e6


@key("08.2", rel=0.01, hint="only the transfer changes; redo 08.1's round")
def _(ns):
    return ns["ring"]["both ways"].exposed_s * 1e6


@key("08.3", hint="what does one permute carry, and how many permutes replace one "
                  "collective?")
def _(ns):
    return sweeps.step_quantity(ns["cfg"], ns["mesh"], ns["tiny_forms"]["looped"],
                                phase="prefill", batch=8, tokens=8, context=8 + ns["steps"],
                                params=ns["params"],
                                quantity="bytes:collective-permute")["measured"]


@key("08.4", rel=0.02, hint="hidden over comm")
def _(ns):
    bidir = ns["cube"][ns["decode"].name, "looped, bidirectional"].first
    return bidir.hidden_s / bidir.comm_s


# ---- 09 int8 ----------------------------------------------------------------------------------
@key("09.1", rel=0.002, hint="a byte per parameter; the scales add only a few bytes per "
                             "output channel of each matrix. GiB is 2**30 bytes")
def _(ns):
    return ti.MODELS["palm-540b"].weight_bytes("int8") / 2**30


@key("09.2", rel=0.03, hint="which parts of the step does int8 shrink, and which not? The KV "
                            "cache and the collectives keep their size")
def _(ns):
    return paper.against_paper("int8-speedup", "tpu-v4")["predicted"]


@key("09.3", rel=0.02, hint="start from the bf16 figure: which of its bytes halve, which stay?")
def _(ns):
    return sweeps.step_quantity(ns["cfg"], ns["mesh"], ti.Layout("wg-xyz", "batch"),
                                phase="prefill", batch=8, tokens=8, params=ns["params"],
                                weights="int8", quantity="weight_bytes")["measured"]


@key("09.4", rel=0.01, hint="chapter 1's derivation with b = 1")
def _(ns):
    return theory.decode_ridge_batch("tpu-v4", "int8")


# ---- 10 cost model and planner ----------------------------------------------------------------
@key("10.1", rel=0.005, hint="read `combine` again: which terms run at once, which add?")
def _(ns):
    return paper.as_run(paper.TABLE2[1], "tpu-v4").first.step_s * 1e3


@key("10.2", rel=0.005, hint="each call waits for its group's ring steps (an all-reduce goes "
                            "round twice); the profile prints the time of one")
def _(ns):
    step = paper.as_run(paper.TABLE2[1], "tpu-v4-calibrated").first
    return sum(c.rounds * c.latency_s for c in step.collectives) * 1e3


@key("10.3", rel=0.03, hint="which of the int8 step's parts does bf16 double? The cache's "
                            "reads and the collectives do not change")
def _(ns):
    return paper.against_paper("bf16-decode", "tpu-v4-calibrated")["predicted"]


@key("10.4", hint="chapter 4's crossover counts one F-wide partial sum a layer: how many "
                  "does a SwiGLU layer reduce-scatter, and where does that put the crossover?")
def _(ns):
    best = planner.plan("palm-62b", "tpu-v4", 16, 64, input_len=2048, gen_len=64,
                        weights="int8").decode.best
    # 2D weight-stationary splits E over the mesh's x; 1D weight-stationary is 2D with X = 1
    return best.mesh_shape[0] if best.layout.ffn == "ws2d" else 1


# ---- 11 end to end ----------------------------------------------------------------------------
@key("11.1", hint="each of the layout's all-gathers hands every device the whole activation "
                  "of the step; how many does a step run?")
def _(ns):
    return sweeps.step_quantity(ns["cfg"], ns["mesh"], ns["chosen"].decode.best.layout,
                                phase="decode", batch=ns["B"], context=ns["L"] + ns["steps"],
                                params=ns["params"], quantity="bytes:all-gather")["measured"]


@key("11.2", rel=0.005, hint="exercise 01.5 again, with this column's numbers")
def _(ns):
    return paper.TABLE2[3].frontier_point[1] * 1e3


@key("11.3", rel=0.03, hint="chapter 1's MFU, with the request's tokens of every sequence")
def _(ns):
    return next(q.mfu for q in paper.fastertransformer()
                if (q.system, q.batch, q.input_len, q.gen_len) == ("TP32", 64, 60, 20))


# ---- 12 planning Llama 3 70B ------------------------------------------------------------------
@key("12.1", hint="what does one token leave in the cache, in every layer?")
def _(ns):
    return ti.MODELS["llama-3-70b"].kv_bytes_per_token(2)


@key("12.2", hint="what does one token leave in every layer now: a byte a value, and a "
                  "scale for each head")
def _(ns):
    return ti.MODELS["llama-3-70b"].kv_bytes_per_token(kv="int8")


@key("12.3", hint="which of the step's terms does a replica of half the chips double, which "
                  "does it halve, and which of them grows with the batch?")
def _(ns):
    return sweeps.replica_crossover("llama-3-70b", "tpu-v5e-calibrated", 16,
                                    [8, 16, 32, 64, 128, 256], input_len=0, history_len=2048,
                                    gen_len=1, weights="int8", kv="int8")["predicted"]


@key("12.4", hint="chapter 6's Q and O bytes, plus two small all-to-alls a layer of one "
                  "token's K/V heads")
def _(ns):
    return sweeps.step_quantity(ns["small"], (2, 2, 2), ti.Layout("ws2d", "batch"),
                                phase="decode", batch=8, context=64,
                                quantity="bytes:all-to-all")["measured"]


@key("12.5", rel=0.05, hint="the denominator of B* reaches zero; N is the matmul parameters")
def _(ns):
    return round(theory.kv_bound_context("llama-3-70b", "h100-sxm"), -2)


# ---- 13 experts -------------------------------------------------------------------------------
@key("13.1", hint="the capacity rule, with this model's k and M: round which way?")
def _(ns):
    return ti.MODELS["qwen3-235b-a22b"].capacity(1000)


@key("13.2", hint="how many slots does each expert get for 8 tokens, which experts do the "
                  "tied scores pick, and how many layers drop?")
def _(ns):
    return int(ns["eight"].dropped["prefill"][0])  # the chapter's run of the 8-token prompt


@key("13.3", hint="a chip's sequences, each with M·C slots of E going out; what comes back, "
                  "and in what share of E?")
def _(ns):
    return sweeps.step_quantity(ns["cfg"], ns["mesh"], ti.Layout("ep-xy", "heads"),
                                phase="decode", batch=8, context=7, params=ns["params"],
                                quantity="bytes:all-to-all")["measured"]


@key("13.4", rel=0.005, hint="the chance that one expert is missed by all T tokens, set "
                             "equal to what 99% leaves, then take logarithms")
def _(ns):
    return experts.all_experts_batch(ti.MODELS["mixtral-8x7b"])


# ---- 14 how far to trust the model ------------------------------------------------------------
@key("14.1", rel=0.02, hint="the weight bytes a decode step reads, one byte each, split over "
                            "two GPUs; read at the datasheet's rate, against the measured "
                            "step")
def _(ns):
    row = next(r for r in accuracy.rows("h100") if r.id == "llama70b-h100x2-isl5000-osl500-c1")
    return accuracy.phases(row, "h100-sxm")[0].weights_s / row.measured


@key("14.2", hint="the ring steps along a line of 4, twice over (one side, then the other); "
                  "then calls a layer, layers, and the step's last two; an all-reduce twice")
def _(ns):
    step = cost.estimate("llama-3-70b", ti.Layout("ws1d", "heads"), (1, 8, 2), batch=8,
                         tokens=1, context=1025, weights="int8", kv="int8", hardware="tpu-v5e")
    hop = get_hardware("tpu-v5e").hop_latency_s
    return round(sum(c.rounds * c.latency_s for c in step.collectives) / hop)


@key("14.3", rel=0.03, hint="which terms of the fitted 16-chip steps halve on 32 chips, and "
                            "which stay?")
def _(ns):
    return sweeps.plan_quantity("llama-3-70b", "tpu-v5e-calibrated", 32, 16, input_len=0,
                                history_len=1024, gen_len=1, weights="int8", kv="int8",
                                ffn="ws1d", attention="heads", looped="no")["predicted"]
