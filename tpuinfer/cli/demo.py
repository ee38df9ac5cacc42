"""`tpuinfer demo`: the main job on its default.

A real sharded generation of the tiny model on 256 emulated devices (mesh 4x8x8): prefill in
one layout, decode in another, a table of what each phase ran, and whether the tokens equal the
unsharded reference's. The model is the trained checkpoint (`load_params`) where one ships, so
the prompts are snippets of held-out text and what both runs wrote is printed as text; a model
without one runs random weights on random token ids. With `--processes P` the same demo runs
as P local processes, each with 256/P of the devices, as on the P hosts of a slice; process
0's report is the one shown. Their collectives need an open file per pair of devices in a
group (`multihost.open_files_needed`): where the planner's layouts need more than this machine
allows, the fastest that fit run.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import itertools
import json
import math
import os
import sys
import tempfile
import time

from .. import multihost
from ..axes import parse_shape
from ..distributed import LauncherEnded, check_args, follow_launcher
from ..config import get_model
from ..errors import UsageError
from ..layouts import ATTENTION_LAYOUTS, FFN_LAYOUTS, Layout
from ..layouts.registry import check
from ..planner import plan
from ..report import mesh_text, table
from .options import add_json_flag, add_kv_flag, add_schedule_flags

# prefill/decode None: the layouts the planner chooses for this request on TPU v4. A prompt
# of 8 and 16 tokens generated show what 16 and 32 did, in half the steps: on 2 cores a decode
# step on 256 devices takes about 0.8 s, the 4,096-token prefill 8.4 s (2,048 tokens: half).
DEFAULTS = {"model": "tiny", "mesh": "4x8x8", "batch": 256, "prompt_len": 8, "steps": 16,
            "prefill": None, "decode": None, "kv": None}
TEXT_ROWS = 4  # sequences the report shows as text
# With --processes: stop the run when no process has made progress for this long. The slowest
# step of the multi-process demo on 2 cores, the first prefill of 256 devices in 8 processes
# (compile and connect every gloo pair), took 100 s: three times that.
STALL_S = 300


def planned_layouts(model, shape, batch, prompt_len, steps, prefill=None, decode=None,
                    looped=None, bidirectional=False, kv=None):
    """The layouts to run: those given, else the planner's choice for this request on TPU v4
    chips of this mesh (bf16 weights, as it would be deployed, and the KV cache in `kv`:
    None, bf16). `looped` True or False runs
    both phases looped (Looped CollectiveEinsum; `bidirectional` both ways round the ring) or
    plain; None keeps the planner's schedule (plain for layouts given by name). Pure: no
    devices needed."""
    if prefill is not None and decode is not None:
        chosen = Layout(*prefill), Layout(*decode)
    else:
        p = plan(model, "tpu-v4", chips=math.prod(shape), batch=batch, input_len=prompt_len,
                 history_len=0, gen_len=steps, weights="bf16", mesh=tuple(shape), kv=kv)
        chosen = (Layout(*prefill) if prefill else p.prefill.best.layout,
                  Layout(*decode) if decode else p.decode.best.layout)
    if looped is None and not bidirectional:
        return chosen
    loop = dict(looped=bool(looped or bidirectional), bidirectional=bidirectional)
    return tuple(dataclasses.replace(layout, **loop) for layout in chosen)


def run_demo(model=DEFAULTS["model"], mesh=DEFAULTS["mesh"], batch=DEFAULTS["batch"],
             prompt_len=DEFAULTS["prompt_len"], steps=DEFAULTS["steps"],
             prefill=None, decode=None, seed=0, processes=1,
             process_id=0, coordinator=None, looped=None, bidirectional=False,
             kv=None) -> dict:
    """Run the demo and return its report (what `--json` prints). `kv`: the KV cache's format
    (None: the activations', f32; "bf16", "int8", "fp8"), the same in the reference.

    With `processes` > 1 this is one of the processes (`run_demo_processes` starts them all):
    parameters are created in their shards, and only process 0 runs the unsharded reference,
    which needs the whole model on one device (a check, not part of the sharded run)."""
    # the engine (JAX), imported as the demo runs: registering the command must not start JAX
    import numpy as np

    from .. import checkpoint, engine, text  # JAX: as above
    from ..generate import generate  # JAX: as above
    from ..measure import measure  # JAX: as above
    from ..mesh import emulate, make_mesh  # JAX: as above
    from ..model import init_params, kv_format_of  # JAX: as above
    from ..quant import format_of  # JAX: as above

    def params_of(cfg, trained: bool, seed: int, shardings=None) -> dict:
        """The trained checkpoint where one ships, else random weights from `seed`."""
        if trained:
            return checkpoint.load_params(cfg, shardings=shardings)
        return init_params(cfg, seed, shardings=shardings)

    shape = parse_shape(mesh)
    emulate(_devices(shape), processes, process_id, coordinator)
    t0 = time.perf_counter()
    parts = _Parts()
    cfg = get_model(model)
    layouts = dict(zip(("prefill", "decode"), planned_layouts(
        cfg, shape, batch, prompt_len, steps, prefill, decode, looped, bidirectional, kv)))
    device_mesh = make_mesh(shape)
    trained = cfg.name in checkpoint.trained_models()
    if processes == 1:
        params = params_of(cfg, trained, seed)
    else:
        params = params_of(cfg, trained, seed, shardings=engine.param_shardings(
            cfg, layouts["prefill"], device_mesh))
    parts.lap("plan and parameters")
    prompt_BL = (text.prompts(batch, prompt_len, seed) if trained else
                 np.random.default_rng(seed).integers(0, cfg.V, (batch, prompt_len)))
    out = generate(params, cfg, prompt_BL, steps, mesh=device_mesh, kv=kv, **layouts)
    parts.lap("sharded generation")
    if process_id != 0:  # its report is never shown: process 0 speaks for all
        return {"process_id": process_id}
    ref = generate(params if processes == 1 else params_of(cfg, trained, seed), cfg, prompt_BL,
                   steps, kv=kv)
    parts.lap("unsharded reference")
    fmt = format_of(params)
    phases = []
    for name, layout in layouts.items():
        tokens = prompt_len if name == "prefill" else 1
        # The very steps generate compiled (cached): read them, without running them again.
        m = measure(cfg, device_mesh, layout, phase=name, batch=batch, tokens=tokens,
                    context=prompt_len + steps, weights=fmt, params=params, repeats=0,
                    kv=kv) if processes == 1 else None
        timing = out.timings[name]
        phases.append({
            "phase": name, "layout": str(layout), "mesh": list(shape),
            "tokens": batch * tokens * (1 if name == "prefill" else max(steps - 1, 0)),
            "steps": timing["steps"], "compile_s": timing["compile_s"],
            "step_s": timing["step_s"],
            "tpu_v4_step_s": m.tpu_time_s if m else None,
            # this machine's prediction, once `tpuinfer calibrate` has written a host profile
            "host_step_s": m.predicted.time_s if m else None,
            "predicted": m.predicted.to_json()["collectives"] if m else None,
            "measured": m.measured.to_json()["collectives"] if m else None,
            "collectives_match": m.predicted.by_kind() == m.measured.by_kind() if m else None})
    parts.lap("reading the compiled steps")
    return {"model": cfg.name, "mesh": list(shape), "devices": math.prod(shape),
            "processes": processes,
            "batch": batch, "prompt_len": prompt_len, "steps": steps, "weights": fmt,
            "kv": kv_format_of(out.cache), "phases": phases,
            "tokens_match": bool(np.array_equal(out.tokens, ref.tokens)),
            "max_logit_rel_err": float(np.abs(out.step_logits - ref.step_logits).max()
                                       / np.abs(ref.step_logits).max()) if steps else 0.0,
            "first_tokens": out.tokens[0, :8].tolist(),
            "trained": trained,
            "text": [{"prompt": text.decode(p), "sharded": text.decode(o),
                      "reference": text.decode(r)}
                     for p, o, r in zip(prompt_BL[:TEXT_ROWS], out.tokens[:TEXT_ROWS],
                                        ref.tokens[:TEXT_ROWS])] if trained else [],
            "parts_s": parts.seconds, "wall_s": time.perf_counter() - t0}


class _Parts:
    """Wall seconds of each part of the demo, in order (the report's `parts_s`)."""

    def __init__(self):
        self.seconds, self._t = {}, time.perf_counter()

    def lap(self, part: str) -> None:
        now = time.perf_counter()
        self.seconds[part], self._t = now - self._t, now


def layouts_that_fit(cfg, shape, batch, prompt_len, steps, processes, chosen, prefill=None,
                     decode=None, looped=None, bidirectional=False) -> tuple[Layout, Layout]:
    """`chosen` (the planner's layouts) when their gloo sockets fit this machine's open-file
    limit in `processes` processes (`multihost.open_files_for`); else the pair, each phase the
    planner's best plain schedule of one (ffn, attention) on TPU v4, with the least total
    latency whose sockets fit (as `--looped` runs them); `chosen` again when none fits
    (`multihost.check_open_files` then says so). A layout given by name stays."""
    limit = multihost.open_file_limit()

    def fits(pair):
        return limit is None or multihost.open_files_for(
            cfg, pair, shape, batch, processes) + multihost.RESERVED_FILES <= limit
    if fits(chosen):
        return chosen
    options = {"prefill": [], "decode": []}
    for ffn, attention in itertools.product(FFN_LAYOUTS, ATTENTION_LAYOUTS):
        try:
            p = plan(cfg, "tpu-v4", chips=math.prod(shape), batch=batch,
                     input_len=prompt_len, history_len=0, gen_len=steps, weights="bf16",
                     mesh=tuple(shape), ffn=ffn, attention=attention, looped="no")
        except UsageError:  # this layout cannot run this request on this mesh
            continue
        for phase in options:
            best = getattr(p, phase).best
            if best.fits:
                options[phase].append((best.latency_s, best.layout))
    if prefill is not None:
        options["prefill"] = [(0.0, chosen[0])]
    if decode is not None:
        options["decode"] = [(0.0, chosen[1])]
    pairs = sorted(((a + b, pre, dec) for a, pre in options["prefill"]
                    for b, dec in options["decode"]), key=lambda t: t[0])
    if looped is not None or bidirectional:  # as `planned_layouts` runs them
        loop = dict(looped=bool(looped or bidirectional), bidirectional=bidirectional)
        pairs = [(t, dataclasses.replace(pre, **loop), dataclasses.replace(dec, **loop))
                 for t, pre, dec in pairs]
    return next(((pre, dec) for _, pre, dec in pairs if fits((pre, dec))), chosen)


def _devices(shape) -> int:
    """Every demo process starts JAX with 256 devices (or the mesh's, when larger)."""
    return max(256, math.prod(shape))


def run_demo_processes(processes: int, timeout_s: float | None = None,
                       stall_s: float | None = STALL_S, on_start=None, **options) -> dict:
    """Run the demo as `processes` local processes joined by `jax.distributed` (127.0.0.1, a
    free port), and return process 0's report. Bad arguments fail here, before any starts.

    `multihost.launch` supervises them: a failed or stalled (`stall_s`) worker, or a run past
    `timeout_s`, stops all with a `WorkerError`; Ctrl-C or SIGTERM stops all and raises
    `multihost.Stopped`. `on_start(pids, estimated_s)` is called once every process started."""
    o = DEFAULTS | options
    shape = parse_shape(o["mesh"])
    check_args(_devices(shape), processes, 0, f"{multihost.LOCALHOST}:1")
    if math.prod(shape) % processes:
        raise UsageError(f"mesh {o['mesh']} does not split evenly over {processes} processes; "
                         f"choose a mesh whose size divides by {processes}")
    cfg = get_model(o["model"])
    layouts = planned_layouts(cfg, shape, o["batch"], o["prompt_len"], o["steps"],
                              o["prefill"], o["decode"], o.get("looped"),
                              o.get("bidirectional", False), o["kv"])
    for layout in layouts:
        check(cfg, layout, shape, o["batch"])
    loop = {k: o[k] for k in ("looped", "bidirectional") if k in o}
    note = None
    if o["prefill"] is None or o["decode"] is None:
        fitting = layouts_that_fit(cfg, shape, o["batch"], o["prompt_len"], o["steps"],
                                   processes, layouts, o["prefill"], o["decode"], **loop)
        if fitting != layouts:
            need = multihost.open_files_for(cfg, layouts, shape, o["batch"], processes)
            note = (f"layouts: the fastest on TPU v4 whose collective groups fit this "
                    f"machine's open-file limit ({multihost.open_file_limit()} per process; "
                    f"the planner's first choice, {layouts[0]} then {layouts[1]}, needs "
                    f"{need} in {processes} processes)")
            layouts = fitting

    def layouts_for(s):  # also for the smaller meshes the open-file advice considers
        if s == shape:
            return layouts
        chosen = planned_layouts(cfg, s, o["batch"], o["prompt_len"], o["steps"], o["prefill"],
                                 o["decode"], **loop, kv=o["kv"])
        for layout in chosen:
            check(cfg, layout, s, o["batch"])
        return chosen
    estimate_s = multihost.check_open_files(cfg, layouts_for, shape, o["batch"], processes,
                                  o["prompt_len"], o["steps"])
    with tempfile.TemporaryDirectory(prefix="tpuinfer-demo-") as tmp:
        report_path = os.path.join(tmp, "report.json")

        def argv(process_id, coordinator):
            return [sys.executable, "-m", "tpuinfer", "demo", "--model", o["model"],
                    "--mesh", o["mesh"], "--batch", str(o["batch"]),
                    "--prompt-len", str(o["prompt_len"]), "--steps", str(o["steps"]),
                    "--prefill", layouts[0].ffn, layouts[0].attention,
                    "--decode", layouts[1].ffn, layouts[1].attention,
                    "--processes", str(processes), "--process-id", str(process_id),
                    "--coordinator", coordinator, "--report", report_path, "--json"] + (
                        ["--kv", o["kv"]] if o["kv"] else []) + (
                        ["--looped"] if layouts[0].looped and layouts[1].looped else []) + (
                        ["--bidirectional"] if layouts[0].bidirectional else [])

        multihost.launch(argv, processes, timeout_s=timeout_s, stall_s=stall_s,
               on_start=on_start and (lambda pids: on_start(pids, estimate_s)))
        with open(report_path) as f:
            report = json.load(f)
    return report | ({"layouts_note": note} if note else {})


@contextlib.contextmanager
def _as_worker(steps: int):
    """One process of a multi-process demo: it ends with its launcher and reports each step."""
    ended = follow_launcher()
    if ended:
        raise LauncherEnded(ended)
    with multihost.report_steps(max(steps - 1, 0)):
        yield
    # jax.distributed's shutdown waits here for every process (process 0 runs the reference)
    multihost.progress("finished; waiting for the other processes to exit")


def _launch(args, options) -> dict:
    """`run_demo_processes` for the command line: says on stderr what it started, and on
    Ctrl-C (exit status 130) or SIGTERM (143) which processes it stopped."""
    def started(pids, estimate_s):
        print(f"tpuinfer demo: started {len(pids)} processes (pids "
              f"{', '.join(map(str, pids))}), {multihost.about_here(estimate_s)}; "
              "Ctrl-C stops them all",
              file=sys.stderr, flush=True)
    for name in ("timeout", "stall"):
        value = getattr(args, name)
        if value is not None and not value > 0:
            raise UsageError(f"--{name} must be a positive number of seconds, got {value}")
    try:
        return run_demo_processes(args.processes, args.timeout, args.stall, started, **options)
    except multihost.Stopped as stop:
        if args.json:
            print(json.dumps({"error": str(stop), "stopped": stop.stopped}))
        print(f"tpuinfer demo: {stop}", file=sys.stderr, flush=True)
        raise SystemExit(stop.exit_status) from None
    except KeyboardInterrupt:  # before any process started
        print("tpuinfer demo: interrupted before any process started", file=sys.stderr)
        raise SystemExit(130) from None


def format_report(r: dict) -> str:
    host = any(p.get("host_step_s") is not None for p in r["phases"])
    across = f" in {r['processes']} processes" if r.get("processes", 1) > 1 else ""
    header = (["phase", "layout", "tokens", "compile s", "step s"] + (["host s*"] if host else [])
              + ["TPU v4 s*", "collectives per step, measured (kind x count over axes)"])
    rows = []
    for p in r["phases"]:
        colls = ", ".join(f"{c['kind']} x{c['count']} ({c['axes']})"
                          for c in p["measured"] or p["predicted"] or [])
        here = [_or_dash(p.get("host_step_s"), ".3f")] if host else []
        rows.append([p["phase"], p["layout"], p["tokens"], f"{p['compile_s']:.2f}",
                     f"{p['step_s']:.3f}", *here, _or_dash(p["tpu_v4_step_s"], ".2e"), colls])
    trained = "trained on the project's prose" if r.get("trained") else "random"
    act = "f32" if r["weights"] == "f32" else "bf16"  # the cache's format unless one was asked
    lines = [f"tpuinfer demo: {r['model']} on {r['devices']} emulated devices{across} "
             f"(mesh {mesh_text(r['mesh'])}), batch {r['batch']}, "
             f"prompt {r['prompt_len']} tokens, {r['steps']} generated, {r['weights']} weights"
             + (f", {r['kv']} KV cache" if r.get("kv", act) != act else "")
             + f" ({trained})",
             "", r.get("layouts_note") or
             "layouts: the planner's choice for this request on TPU v4 unless given", "",
             table(header, rows, "ll" + "r" * (len(header) - 3) + "l")]
    checks = [p["collectives_match"] for p in r["phases"] if p["collectives_match"] is not None]
    if checks:
        lines.append("collectives read from the compiled steps "
                     + ("EQUAL" if all(checks) else "DIFFER FROM")
                     + " the cost model's prediction, per kind, in count and bytes")
    lines.append("* the cost model's prediction for one step on TPU v4 (bf16)"
                 + (" and on this machine (the host profile of `tpuinfer calibrate`)" if host
                    else "") + ", not a measurement")
    verdict = "EQUAL to" if r["tokens_match"] else "DIFFERENT from"
    lines += ["", f"generated tokens are {verdict} the unsharded reference's "
                  f"(max relative logit difference {r['max_logit_rel_err']:.1e})",
              *(_text_lines(r["text"]) if r.get("text") else
                [f"first sequence starts: {r['first_tokens']}"]),
              f"wall time {r['wall_s']:.1f} s" + (": " + ", ".join(
                  f"{part} {s:.1f} s" for part, s in r["parts_s"].items())
                  if r.get("parts_s") else "")]
    return "\n".join(lines)


def _text_lines(rows: list[dict]) -> list[str]:
    """Prompt and continuation of the first sequences, sharded above reference."""
    # quoted, a newline as \n: one line per sequence, and the prompt's end plain to see
    lines = [f"the first {len(rows)} of the batch, as text (prompt + what was generated):"]
    for row in rows:
        lines += [f"  sharded    {row['prompt']!r} + {row['sharded']!r}",
                  f"  reference  {row['prompt']!r} + {row['reference']!r}"]
    return lines


def _or_dash(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def register(sub) -> None:
    p = sub.add_parser("demo", help="sharded generation of the tiny model on 256 emulated "
                                    "devices, checked against the unsharded reference")
    p.add_argument("--model", default=DEFAULTS["model"])
    p.add_argument("--mesh", default=DEFAULTS["mesh"], help="XxYxZ, e.g. 4x8x8")
    p.add_argument("--batch", type=int, default=DEFAULTS["batch"])
    p.add_argument("--prompt-len", type=int, default=DEFAULTS["prompt_len"])
    p.add_argument("--steps", type=int, default=DEFAULTS["steps"])
    p.add_argument("--prefill", nargs=2, metavar=("FFN", "ATTENTION"),
                   default=DEFAULTS["prefill"], help="default: the planner's choice")
    p.add_argument("--decode", nargs=2, metavar=("FFN", "ATTENTION"), default=DEFAULTS["decode"],
                   help="default: the planner's choice")
    add_schedule_flags(p, looped_default=None,
                       looped_help="run both phases as Looped CollectiveEinsum (--no-looped: "
                                   "plain); default: the planner's schedule")
    add_kv_flag(p, "the activations'; the sharded run and the reference alike")
    p.add_argument("--processes", type=int, default=1,
                   help="run as P local processes (jax.distributed over 127.0.0.1), each "
                        "holding 256/P of the devices, as the P hosts of a slice")
    p.add_argument("--timeout", type=float, default=None,
                   help="with --processes: seconds before every process is stopped "
                        "(default: no limit; --stall catches a hung run)")
    p.add_argument("--stall", type=float, default=STALL_S,
                   help="with --processes: stop the run when no process has made progress "
                        f"for this many seconds, naming each one's step (default {STALL_S})")
    # Set by `run_demo_processes` for each process it starts, never by hand.
    p.add_argument("--process-id", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--coordinator", default=None, help=argparse.SUPPRESS)
    p.add_argument("--report", default=None, help=argparse.SUPPRESS)
    add_json_flag(p)

    def func(args):
        options = dict(model=args.model, mesh=args.mesh, batch=args.batch,
                       prompt_len=args.prompt_len, steps=args.steps,
                       prefill=args.prefill and tuple(args.prefill),
                       decode=args.decode and tuple(args.decode), looped=args.looped,
                       bidirectional=args.bidirectional, kv=args.kv)
        if args.process_id is not None:  # one of the processes of a multi-process demo
            with _as_worker(args.steps):
                report = run_demo(**options, processes=args.processes,
                                  process_id=args.process_id, coordinator=args.coordinator)
            if args.process_id == 0:
                with open(args.report, "w") as f:
                    json.dump(report, f)
        elif args.processes > 1:
            report = _launch(args, options)
        else:
            report = run_demo(**options)
        return report, format_report(report) if "model" in report else ""

    p.set_defaults(func=func)
