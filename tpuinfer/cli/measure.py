"""`tpuinfer measure`: one compiled step's collectives, FLOPs, memory and time, predicted
against measured (`tpuinfer.measure`)."""
from __future__ import annotations

import math

from ..axes import parse_shape
from ..config import get_model
from ..drift import words as drift_words
from ..layouts import ATTENTION_LAYOUTS, EXPERT_LAYOUTS, FFN_LAYOUTS, Layout
from ..report import measurement_notes, mesh_text, nbytes, seconds, table
from ..weight_formats import WEIGHT_FORMATS
from .options import add_json_flag, add_kv_flag, add_schedule_flags


def register(sub) -> None:
    p = sub.add_parser("measure", help="compile and time one step; its collectives, FLOPs and "
                                       "memory beside the cost model's prediction")
    p.add_argument("--model", default="tiny")
    p.add_argument("--mesh", default="4x8x8", help="XxYxZ emulated devices, e.g. 4x8x8")
    p.add_argument("--ffn", default=None, choices=FFN_LAYOUTS + EXPERT_LAYOUTS,
                   help="feed-forward layout (default: ws2d; ep-x for a mixture of experts)")
    p.add_argument("--attention", default="heads", choices=ATTENTION_LAYOUTS)
    p.add_argument("--phase", default="prefill", choices=("prefill", "decode"))
    p.add_argument("--batch", type=int, required=True)
    p.add_argument("--tokens", type=int, default=None,
                   help="prompt length of a prefill (default: the context, else 8)")
    p.add_argument("--context", type=int, default=None,
                   help="KV-cache length (default: the prompt in prefill, 16 in decode)")
    p.add_argument("--weights", default="f32", choices=WEIGHT_FORMATS)
    add_kv_flag(p, "the activations', f32 or bf16")
    add_schedule_flags(p)
    p.add_argument("--repeats", type=int, default=5,
                   help="at most this many timed runs after one warm-up (fewer once the last "
                        "three agree within 5%%)")
    p.add_argument("--budget", type=float, default=None, metavar="SECONDS",
                   help="stop timing once the timed runs have spent this long")
    add_json_flag(p)
    p.set_defaults(func=run)


def run(args):
    # the engine (JAX), imported as the command runs: registering it must not start JAX
    from ..measure import measure
    from ..mesh import EmulationError, emulate, make_mesh  # JAX: as above

    shape = parse_shape(args.mesh)
    try:  # JAX fixes its device count when it starts: ask before anything touches it
        emulate(math.prod(shape))
    except EmulationError:
        pass  # already running (a notebook, a test session): make_mesh says if it is too few
    ffn = args.ffn or ("ep-x" if get_model(args.model).n_experts else "ws2d")
    layout = Layout(ffn, args.attention, looped=args.looped or args.bidirectional,
                    bidirectional=args.bidirectional)
    m = measure(args.model, make_mesh(shape), layout,
                phase=args.phase, batch=args.batch, tokens=args.tokens, context=args.context,
                weights=args.weights, repeats=args.repeats, budget_s=args.budget, kv=args.kv)
    # the JSON keeps the sentences beside the flags they word
    return m.to_json() | {"notes": measurement_notes(m)}, text(m)


# ---- the readable table ---------------------------------------------------------------------
def text(m) -> str:
    p, q = m.predicted, m.measured
    head = (f"{m.model} on {mesh_text(m.mesh_shape)} ({m.backend}), {m.layout}, "
            f"{m.phase}: batch {m.batch}, {m.tokens} token(s), context {m.context}, "
            f"{m.weights} weights, {m.kv} KV cache"
            + (f"; compiled in {m.compile_s:.1f} s" if m.compile_s else "; compiled step reused"))
    rows = [[f"{kind}({axes}) {nbytes(size)} {dtype}", f"{n_p}×", f"{n_q}×"]
            for (kind, axes, _, dtype, size), (n_p, n_q) in m.collective_counts().items()]
    rows += [
        ["comm bytes", nbytes(p.comm_bytes), nbytes(q.comm_bytes)],
        ["weight-matmul FLOPs", f"{p.flops:.4g}", f"{q.flops:.4g}"],
        ["attention FLOPs", f"{p.attention_flops:.4g}", f"{q.attention_flops:.4g}"],
        ["memory held (weights, KV cache)", nbytes(p.memory_bytes), nbytes(q.memory_bytes)],
        ["memory during the step", nbytes(p.transient_bytes), nbytes(q.transient_bytes)],
        ["weights held", nbytes(p.weight_bytes_per_device), nbytes(q.weight_bytes_per_device)],
        ["KV cache held", nbytes(p.kv_bytes_per_device), nbytes(q.kv_bytes_per_device)],
        ["time (this machine)", seconds(p.time_s), seconds(q.time_s) + (
            f" (median of {m.runs}, spread {m.spread:.0%})" if m.spread is not None else "")],
        *([["  the model, on the machine as calibrated", seconds(m.model_time_s), ""],
           [f"  x drift: {drift_words(m.drift)}", f"x{m.drift:.2f}", ""]]
          if m.drift is not None else []),
        ["time (TPU v4, predicted)", seconds(m.tpu_time_s), ""],  # "-": fp8 weights
    ]
    if m.dropped is not None:  # a mixture of experts: what the capacity cost this step
        rows.append(["routes dropped over capacity (last run)", "", f"{m.dropped:,}"])
    body = table(["collective(axes), bytes per device", "predicted", "measured"], rows, "lrr")
    return "\n".join([head, body] + [f"note: {n}" for n in measurement_notes(m)])
