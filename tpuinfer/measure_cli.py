"""`tpuinfer measure`: one compiled step's collectives, FLOPs, memory and time, predicted
against measured (`tpuinfer.measure`)."""
from __future__ import annotations

import math

from .cli import add_json_flag
from .kv_formats import KV_FORMATS
from .layouts import ATTENTION_LAYOUTS, FFN_LAYOUTS, Layout
from .measure import measure
from .mesh import EmulationError, emulate, make_mesh, parse_shape
from .quant import WEIGHT_FORMATS
from .report import measurement_notes, mesh_text, nbytes, seconds, table


def register(sub) -> None:
    p = sub.add_parser("measure", help="compile and time one step; its collectives, FLOPs and "
                                       "memory beside the cost model's prediction")
    p.add_argument("--model", default="tiny")
    p.add_argument("--mesh", default="4x8x8", help="XxYxZ emulated devices, e.g. 4x8x8")
    p.add_argument("--ffn", default="ws2d", choices=FFN_LAYOUTS)
    p.add_argument("--attention", default="heads", choices=ATTENTION_LAYOUTS)
    p.add_argument("--phase", default="prefill", choices=("prefill", "decode"))
    p.add_argument("--batch", type=int, required=True)
    p.add_argument("--tokens", type=int, default=None,
                   help="prompt length of a prefill (default: the context, else 8)")
    p.add_argument("--context", type=int, default=None,
                   help="KV-cache length (default: the prompt in prefill, 16 in decode)")
    p.add_argument("--weights", default="f32", choices=WEIGHT_FORMATS)
    p.add_argument("--kv", default=None, choices=KV_FORMATS,
                   help="the KV cache's format (default: the activations', f32 or bf16)")
    p.add_argument("--looped", action="store_true",
                   help="Looped CollectiveEinsum: collective permutes round a ring, inside the "
                        "matmuls they feed")
    p.add_argument("--bidirectional", action="store_true",
                   help="with --looped: halves both ways round the ring")
    p.add_argument("--repeats", type=int, default=5,
                   help="at most this many timed runs after one warm-up (fewer once the last "
                        "three agree within 5%%)")
    p.add_argument("--budget", type=float, default=None, metavar="SECONDS",
                   help="stop timing once the timed runs have spent this long")
    add_json_flag(p)
    p.set_defaults(func=run)


def run(args):
    shape = parse_shape(args.mesh)
    try:  # JAX fixes its device count when it starts: ask before anything touches it
        emulate(math.prod(shape))
    except EmulationError:
        pass  # already running (a notebook, a test session): make_mesh says if it is too few
    layout = Layout(args.ffn, args.attention, looped=args.looped or args.bidirectional,
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
        ["time (TPU v4, predicted)", seconds(m.tpu_time_s), ""],  # "-": fp8 weights
    ]
    body = table(["collective(axes), bytes per device", "predicted", "measured"], rows, "lrr")
    return "\n".join([head, body] + [f"note: {n}" for n in measurement_notes(m)])
