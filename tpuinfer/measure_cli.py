"""`tpuinfer measure`: one compiled step's collectives, FLOPs, memory and time, predicted
against measured (`tpuinfer.measure`)."""
from __future__ import annotations

import math

from .cli import add_json_flag
from .layouts import ATTENTION_LAYOUTS, FFN_LAYOUTS
from .quant import WEIGHT_FORMATS


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
    p.add_argument("--looped", action="store_true",
                   help="Looped CollectiveEinsum: collective permutes round a ring, inside the "
                        "matmuls they feed")
    p.add_argument("--bidirectional", action="store_true",
                   help="with --looped: halves both ways round the ring")
    p.add_argument("--repeats", type=int, default=5, help="timed runs after one warm-up")
    add_json_flag(p)
    p.set_defaults(func=run)


def run(args):
    from .mesh import EmulationError, emulate, parse_shape
    shape = parse_shape(args.mesh)
    try:  # JAX fixes its device count when it starts: ask before anything touches it
        emulate(math.prod(shape))
    except EmulationError:
        pass  # already running (a notebook, a test session): make_mesh says if it is too few
    from .layouts import Layout
    from .measure import measure
    from .mesh import make_mesh
    layout = Layout(args.ffn, args.attention, looped=args.looped or args.bidirectional,
                    bidirectional=args.bidirectional)
    m = measure(args.model, make_mesh(shape), layout,
                phase=args.phase, batch=args.batch, tokens=args.tokens, context=args.context,
                weights=args.weights, repeats=args.repeats)
    return m.to_json(), text(m)


# ---- the readable table ---------------------------------------------------------------------
def text(m) -> str:
    p, q = m.predicted, m.measured
    head = (f"{m.model} on {'x'.join(map(str, m.mesh_shape))} ({m.backend}), {m.layout}, "
            f"{m.phase}: batch {m.batch}, {m.tokens} token(s), context {m.context}, "
            f"{m.weights} weights" + (f"; compiled in {m.compile_s:.1f} s" if m.compile_s else
                                      "; compiled step reused"))
    rows = [("collective(axes), bytes per device", "predicted", "measured")]
    counts = {}
    for side, entries in ((0, p.collectives), (1, q.collectives)):
        for x in entries:
            key = (x.kind, "".join(x.axes) or "-", x.bytes, x.dtype)
            counts.setdefault(key, [0, 0])[side] += x.count
    for (kind, axes, nbytes, dtype), (n_p, n_q) in sorted(counts.items()):
        rows.append((f"{kind}({axes}) {_bytes(nbytes)} {dtype}", f"{n_p}×", f"{n_q}×"))
    rows += [
        ("comm bytes", _bytes(p.comm_bytes), _bytes(q.comm_bytes)),
        ("weight-matmul FLOPs", f"{p.flops:.4g}", f"{q.flops:.4g}"),
        ("attention FLOPs", f"{p.attention_flops:.4g}", f"{q.attention_flops:.4g}"),
        ("memory held (weights, KV cache)", _bytes(p.memory_bytes), _bytes(q.memory_bytes)),
        ("memory during the step", _bytes(p.transient_bytes), _bytes(q.transient_bytes)),
        ("weights held", _bytes(p.weight_bytes_per_device), _bytes(q.weight_bytes_per_device)),
        ("time (this machine)", _seconds(p.time_s), _seconds(q.time_s)),
        ("time (TPU v4, predicted)", _seconds(m.tpu_time_s), ""),
    ]
    width = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = [head] + ["  ".join([r[0].ljust(width[0]), r[1].rjust(width[1]),
                                 r[2].rjust(width[2])]) for r in rows]
    return "\n".join(lines + [f"note: {n}" for n in m.notes])


def _bytes(n: float) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.4g} {unit}"
    return f"{n:.0f} B"


def _seconds(s: float | None) -> str:
    if s is None:
        return "-"
    return f"{s * 1e3:.3g} ms" if s < 1 else f"{s:.3g} s"
