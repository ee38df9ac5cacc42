"""`tpuinfer plan`, `pareto`, `max-context` and `paper`: the cost model on the command line.

Each command's function returns (json_object, readable_text); bad input raises
`tpuinfer.errors.UsageError` with a message naming the problem and what would work (`cli.main`
prints it as one line and exits 2). The cost path alone: the static site's planner page runs
these very functions in the browser (Pyodide), with this module's parsers.
"""
from __future__ import annotations

import argparse

from .. import expert_plan
from ..config import get_model
from ..hardware import get_hardware
from ..kv import kv_bytes_per_chip, max_context
from ..paper import CHIPS, MODEL, PROFILES, paper, table2
from ..planner import pareto, plan
from ..report import gib, mesh_text, progress_bar, seconds, table
from .options import add_json_flag, add_kv_flag, mesh


def register(sub) -> None:
    p = sub.add_parser("plan", help="choose mesh and layouts for a request, per phase")
    _model_flags(p)
    p.add_argument("--chips", type=int, default=64)
    p.add_argument("--batch", type=int, default=1)
    _request_flags(p)
    p.add_argument("--mesh", type=mesh, default=None,
                   help="fix the mesh, e.g. 4x4x4 (default: weigh every factorisation); with "
                        "replicas, one replica's")
    p.set_defaults(func=run_plan)

    p = sub.add_parser("pareto", help="latency against cost over chips, batches and layouts")
    _model_flags(p)
    p.add_argument("--chips", type=_ints, default=None,
                   help="comma-separated chip counts (default: every count up to 256)")
    p.add_argument("--batches", type=_ints, default=None,
                   help="comma-separated batch sizes (default: 1,2,4,...,1024)")
    _request_flags(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.set_defaults(func=run_pareto)

    p = sub.add_parser("max-context", help="longest context whose KV cache fits")
    p.add_argument("--model", required=True)
    p.add_argument("--hardware", default="tpu-v4")
    p.add_argument("--chips", type=int, default=64)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--attention-variant", default="multiquery-batch",
                   help="multihead | multiquery-heads | multiquery-batch | grouped-heads | "
                        "grouped-batch (a grouped-query model's)")
    p.add_argument("--kv-fraction", type=float, default=0.3,
                   help="fraction of each chip's HBM given to the KV cache (paper: 0.3)")
    _kv_flag(p)
    add_json_flag(p)
    p.set_defaults(func=run_max_context)

    p = sub.add_parser("paper", help="the paper's results beside the cost model's")
    add_json_flag(p)
    p.set_defaults(func=run_paper)


def _model_flags(p):
    p.add_argument("--model", required=True)
    p.add_argument("--hardware", default="tpu-v4")
    add_json_flag(p)


def _request_flags(p):
    p.add_argument("--input-len", type=int, default=2048, help="new tokens per sequence")
    p.add_argument("--history-len", type=int, default=0, help="tokens already cached")
    p.add_argument("--gen-len", type=int, default=64, help="tokens to generate")
    p.add_argument("--weights", default="bf16", help="bf16 | int8 | fp8 (fp8: chips with an "
                                                       "fp8 matmul, h100-sxm and h200)")
    _kv_flag(p)
    p.add_argument("--replicas", type=_replicas, default=1,
                   help="data-parallel replicas of chips/N chips each, the batch split N ways: "
                        "a count, or auto to weigh every count beside one group (default 1)")
    p.add_argument("--ffn", default="auto", help="auto | ws1d | ws2d | wg-x | wg-xy | wg-xyz "
                                                 "(a mixture of experts: ep-x | ep-xy | ep-xyz)")
    p.add_argument("--attention", default="auto", help="auto | heads | batch")
    p.add_argument("--looped", default="auto", choices=("auto", "yes", "no"),
                   help="weigh plain and Looped CollectiveEinsum schedules (auto), only the "
                        "looped ones (yes) or only plain (no)")
    p.add_argument("--no-pad", action="store_true",
                   help="never pad the heads (the paper pads PaLM 540B's 48 to 64 on 64+ chips)")
    p.add_argument("--rule", default=None, choices=("sum", "overlap"),
                   help="how terms combine (default: the hardware profile's)")


def _kv_flag(p):
    add_kv_flag(p, "bf16; int8 adds a bf16 scale per token and head")


def _replicas(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected auto or a positive count, got {text!r}")
    return n


def _ints(text: str) -> list[int]:
    try:
        return [int(s) for s in text.split(",") if s]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")


# ---- commands -------------------------------------------------------------------------------
def run_plan(args):
    p = plan(args.model, args.hardware, args.chips, args.batch, args.input_len,
             args.history_len, args.gen_len, args.weights, args.ffn, args.attention,
             looped=args.looped, pad=not args.no_pad, rule=args.rule, mesh=args.mesh,
             kv=args.kv, replicas=args.replicas)
    rows, notes = [], []
    # a host profile (this machine's emulated mesh) adds each device's dispatch cost
    dispatch = any(ph is not None and ph.best.overhead_s for ph in (p.prefill, p.decode))
    # replicas shown where they were asked for (a table of one group is unchanged)
    replicated = p.replicas != 1
    for name, ph in (("prefill", p.prefill), ("decode", p.decode)):
        if ph is None:
            continue
        b = ph.best
        rows.append([name] + ([b.replicas] if replicated else []) + [
                     mesh_text(b.mesh_shape), b.layout.ffn, b.layout.attention,
                     b.layout.schedule, seconds(b.latency_s),
                     seconds(b.per_token_s) if name == "decode" else "-",
                     f"{b.mfu:.0%}", gib(b.memory_per_chip_bytes), "yes" if b.fits else "NO",
                     seconds(b.compute_s), seconds(b.weights_s), seconds(b.kv_s),
                     seconds(b.comm_s)] + ([seconds(b.overhead_s)] if dispatch else []))
        if ph.runner_up is not None:
            r = ph.runner_up
            copies = f"{r.replicas} replicas of " if r.replicas > 1 else ""
            notes.append(f"{name} runner-up: {r.layout} on {copies}"
                         f"{mesh_text(r.mesh_shape)}, {seconds(r.latency_s)} (compute "
                         f"{seconds(r.compute_s)}, weights {seconds(r.weights_s)}, kv "
                         f"{seconds(r.kv_s)}, comm {seconds(r.comm_s)}); "
                         f"{ph.considered} configurations weighed")
        if ph.experts is not None:  # a mixture of experts: its degree, and why
            notes += _expert_notes(name, ph)
        if b.padded_heads:
            notes.append(f"{name}: heads padded from {get_model(args.model).H} to "
                         f"{b.padded_heads} so that {b.layout.ffn} splits them over "
                         f"{mesh_text(b.mesh_shape)}; the padded heads are priced (FLOPs, "
                         "weights, memory), MFU counts the model's own (--no-pad forbids it)")
        if not b.fits:
            notes.append(f"{name} does NOT fit: {b.unfit_reason}")
    if replicated:
        notes.append(f"replicas ({p.replicas} asked): a phase on R replicas runs its mesh R "
                     "times side by side, each on batch/R sequences and holding the whole "
                     "model; its latency, MFU and memory per chip are one replica's, its cost "
                     "counts every chip")
    kv = "" if p.kv == "bf16" else f", {p.kv} KV cache"
    text = "\n".join([
        f"{p.model} on {p.chips} {p.hardware} chips, batch {p.batch}, {p.weights} weights{kv}, "
        f"rule {p.rule}",
        table(["phase"] + (["replicas"] if replicated else []) + [
               "mesh", "ffn", "attention", "schedule", "latency", "per token", "MFU",
               "memory/chip", "fits", "compute", "weights", "kv", "comm"]
              + (["dispatch"] if dispatch else []), rows),
        f"total latency {seconds(p.total_latency_s)}, MFU {p.mfu:.0%}, "
        f"fits {'yes' if p.fits else 'no'}", *notes])
    return p.to_json(), text


def _expert_notes(name, ph) -> list[str]:
    """A mixture of experts' phase: the expert-parallel facts of the choice, why its degree
    won, and the best configuration at every degree."""
    x = ph.experts
    lines = [f"{name} experts: expert-parallel {x['expert_parallel']} x tensor-parallel "
             f"{x['tensor_parallel']}, {x['experts_per_chip']} experts a chip, capacity "
             f"{x['capacity']} slots per expert per sequence, "
             f"{x['experts_touched_per_step']:.1f} experts touched a step (uniform routing), "
             f"expert all-to-alls {x['all_to_all_bytes_per_chip'] / 2**30:.3g} GiB a chip "
             f"in {seconds(x['all_to_all_s'])}",
             f"{name} why: {x['why']}"]
    for q in ph.per_degree:
        ep, tp = expert_plan.degrees(q)
        lines.append(f"  {name} at expert-parallel {ep} x {tp}: {q.layout} on "
                     f"{mesh_text(q.mesh_shape)}, {seconds(q.latency_s)} (compute "
                     f"{seconds(q.compute_s)}, weights {seconds(q.weights_s)}, kv "
                     f"{seconds(q.kv_s)}, comm {seconds(q.comm_s)})"
                     + ("" if q.fits else f", does not fit: {q.unfit_reason}"))
    return lines


def run_pareto(args):
    with progress_bar(f"pareto {args.model}", disable=args.no_progress) as progress:
        res = pareto(args.model, args.hardware, chips=args.chips, batches=args.batches,
                     input_len=args.input_len, history_len=args.history_len,
                     gen_len=args.gen_len, weights=args.weights, ffn=args.ffn,
                     attention=args.attention, looped=args.looped, pad=not args.no_pad,
                     rule=args.rule, progress=progress, kv=args.kv, replicas=args.replicas)
    kv = "" if res["kv"] == "bf16" else f", {res['kv']} KV cache"
    replicated = res["replicas"] != 1
    parts = [f"{res['model']} on {res['hardware']}, {res['weights']} weights{kv}: "
             f"{res['considered']} configurations, the latency/cost frontier per phase"
             + (" (mesh: one replica's)" if replicated else "")]
    for phase, what in (("prefill", "latency"), ("decode", "latency per token")):
        rows = [[pt["chips"], pt["batch"]] + ([pt["replicas"]] if replicated else [])
                + [mesh_text(pt["mesh"]), pt["ffn"], pt["attention"],
                   pt["schedule"], seconds(pt["latency_s"]),
                   f"{pt['cost_chip_s_per_token'] * 1e3:.3g}",
                   f"{pt['mfu']:.0%}"] for pt in res[phase]]
        if rows:
            parts += [f"\n{phase}", table(["chips", "batch"]
                                          + (["replicas"] if replicated else [])
                                          + ["mesh", "ffn", "attention", "schedule", what,
                                             "chip-ms/token", "MFU"], rows)]
    return res, "\n".join(parts)


def run_max_context(args):
    hw = get_hardware(args.hardware)
    n = max_context(args.model, args.chips, args.batch, args.attention_variant,
                    args.kv_fraction, hw, kv=args.kv)
    per_token = kv_bytes_per_chip(args.model, args.attention_variant, args.chips, args.batch, 1,
                                  kv=args.kv)
    kv = args.kv or "bf16"
    obj = {"model": args.model, "hardware": hw.name, "chips": args.chips, "batch": args.batch,
           "attention_variant": args.attention_variant, "kv_fraction": args.kv_fraction,
           "kv": kv, "kv_bytes_per_position_per_chip": per_token, "max_context": n}
    text = (f"{args.model}, {args.attention_variant}, batch {args.batch} on {args.chips} "
            f"{hw.name} chips, {args.kv_fraction:.0%} of {gib(hw.hbm_bytes)} for the {kv} KV "
            f"cache ({per_token / 2**10:.1f} KiB per position per chip): max context {n} "
            "tokens")
    return obj, text


def run_paper(args):
    columns, rows = table2(), paper()

    def show(v, unit):
        if v is None or isinstance(v, str):
            return v or "nothing fits"
        if unit == "x":  # a ratio of times: two decimals (1.10x beside the paper's 1.14x)
            return f"{v:.2f}x"
        return seconds(v) if unit == "s" else (f"{v:.0%}" if unit == "" else f"{v:.3g}{unit}")

    def ratio(v):
        return "-" if v is None else f"{v:.2f}"

    parts = [f"Table 2: {MODEL} on {CHIPS} TPU v4 chips, each phase on its own (the paper's "
             "layout and latency; the planner's choice, its latency and error; the paper's "
             "layout priced on 4x4x4). Predictions, not measurements."]
    for hw in PROFILES:
        body = []
        for c in columns:
            m = c[hw]
            body.append([c["column"], c["paper_layout"], seconds(c["paper_latency_s"]),
                         f"{m['layout']} ({m['schedule']})" if m["layout"] else m["reason"][:60],
                         mesh_text(m["mesh"]) if m["mesh"] else "-",
                         seconds(m["latency_s"]) if m["latency_s"] else "-",
                         f"{m['error']:+.0%}" if m["error"] is not None else "-",
                         "yes" if m["layout"] == c["paper_layout"] else "NO",
                         seconds(m["paper_layout_latency_s"])])
        parts += [f"\n{hw} (rule {get_hardware(hw).rule})",
                  table(["column", "paper's layout", "paper", "planner's choice", "mesh",
                         "latency", "error", "same layout", "paper's layout here"], body)]
    body = [[r["result"], show(r["paper"], r["unit"])]
            + sum([[show(r[hw], r["unit"]), ratio(r[f"{hw}_ratio"])] for hw in PROFILES], [])
            for r in rows]
    header = ["result", "paper"] + sum([[hw, "ratio"] for hw in PROFILES], [])
    parts += ["\nOther results (ratio = model / paper)", table(header, body)]
    return {"table2": columns, "rows": rows}, "\n".join(parts)
