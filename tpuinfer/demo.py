"""`tpuinfer demo`: the main job on its default.

A real sharded generation of the tiny model on 256 emulated devices (mesh 4x8x8): prefill in
one layout, decode in another, a table of what each phase ran, and whether the tokens equal the
unsharded reference's.
"""
from __future__ import annotations

import time

import numpy as np

DEFAULTS = {"model": "tiny", "mesh": "4x8x8", "batch": 256, "prompt_len": 16, "steps": 32,
            "prefill": ("ws2d", "heads"), "decode": ("ws2d", "batch")}


def run_demo(model="tiny", mesh="4x8x8", batch=256, prompt_len=16, steps=32,
             prefill=("ws2d", "heads"), decode=("ws2d", "batch"), seed=0) -> dict:
    """Run the demo and return its report (what `--json` prints)."""
    from . import mesh as mesh_mod
    shape = mesh_mod.parse_shape(mesh)
    mesh_mod.emulate(max(256, int(np.prod(shape))))
    import tpuinfer as ti
    from .layouts import step_terms
    from .quant import format_of

    t0 = time.perf_counter()
    cfg = ti.get_model(model)
    layouts = {"prefill": ti.Layout(*prefill), "decode": ti.Layout(*decode)}
    device_mesh = ti.make_mesh(shape)
    params = ti.init_params(cfg, seed)
    prompt_BL = np.random.default_rng(seed).integers(0, cfg.V, (batch, prompt_len))
    out = ti.generate(params, cfg, prompt_BL, steps, mesh=device_mesh, **layouts)
    ref = ti.generate(params, cfg, prompt_BL, steps)
    fmt = format_of(params)
    act = 4 if fmt == "f32" else 2
    phases = []
    for name, layout in layouts.items():
        tokens = prompt_len if name == "prefill" else 1
        terms = step_terms(cfg, layout, shape, batch=batch, tokens=tokens,
                           context=prompt_len + steps, weights=fmt, act_bytes=act)
        timing = out.timings[name]
        phases.append({
            "phase": name, "layout": str(layout), "mesh": list(shape),
            "tokens": batch * tokens * (1 if name == "prefill" else max(steps - 1, 0)),
            "steps": timing["steps"], "compile_s": timing["compile_s"],
            "step_s": timing["step_s"],
            "collectives": [{"kind": c.kind, "axes": list(c.axes), "group": c.group,
                             "bytes": c.bytes, "count": c.count} for c in terms.collectives]})
    return {"model": cfg.name, "mesh": list(shape), "devices": int(np.prod(shape)),
            "batch": batch, "prompt_len": prompt_len, "steps": steps, "weights": fmt,
            "phases": phases,
            "tokens_match": bool(np.array_equal(out.tokens, ref.tokens)),
            "max_logit_rel_err": float(np.abs(out.step_logits - ref.step_logits).max()
                                       / np.abs(ref.step_logits).max()) if steps else 0.0,
            "first_tokens": out.tokens[0, :8].tolist(),
            "wall_s": time.perf_counter() - t0}


def format_report(r: dict) -> str:
    lines = [f"tpuinfer demo: {r['model']} on {r['devices']} emulated devices "
             f"(mesh {'x'.join(map(str, r['mesh']))}), batch {r['batch']}, "
             f"prompt {r['prompt_len']} tokens, {r['steps']} generated, {r['weights']} weights",
             "",
             f"{'phase':<8} {'layout':<14} {'tokens':>7} {'compile s':>10} {'step s':>8}  "
             f"collectives per step (kind x count over axes)"]
    for p in r["phases"]:
        colls = ", ".join(f"{c['kind']} x{c['count']} ({''.join(c['axes'])})"
                          for c in p["collectives"])
        lines.append(f"{p['phase']:<8} {p['layout']:<14} {p['tokens']:>7} "
                     f"{p['compile_s']:>10.2f} {p['step_s']:>8.3f}  {colls}")
    verdict = "EQUAL to" if r["tokens_match"] else "DIFFERENT from"
    lines += ["", f"generated tokens are {verdict} the unsharded reference's "
                  f"(max relative logit difference {r['max_logit_rel_err']:.1e})",
              f"first sequence starts: {r['first_tokens']}",
              f"wall time {r['wall_s']:.1f} s"]
    return "\n".join(lines)


def register(sub) -> None:
    from .cli import add_json_flag
    p = sub.add_parser("demo", help="sharded generation of the tiny model on 256 emulated "
                                    "devices, checked against the unsharded reference")
    p.add_argument("--model", default=DEFAULTS["model"])
    p.add_argument("--mesh", default=DEFAULTS["mesh"], help="XxYxZ, e.g. 4x8x8")
    p.add_argument("--batch", type=int, default=DEFAULTS["batch"])
    p.add_argument("--prompt-len", type=int, default=DEFAULTS["prompt_len"])
    p.add_argument("--steps", type=int, default=DEFAULTS["steps"])
    p.add_argument("--prefill", nargs=2, metavar=("FFN", "ATTENTION"),
                   default=DEFAULTS["prefill"])
    p.add_argument("--decode", nargs=2, metavar=("FFN", "ATTENTION"), default=DEFAULTS["decode"])
    add_json_flag(p)

    def func(args):
        report = run_demo(args.model, args.mesh, args.batch, args.prompt_len, args.steps,
                          tuple(args.prefill), tuple(args.decode))
        return report, format_report(report)

    p.set_defaults(func=func)
