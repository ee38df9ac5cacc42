"""One process of a multi-process test run; tests/test_multihost.py starts several of these
through `tpuinfer.multihost.launch` (not a test module itself).

The process emulates its share of the devices, generates with each layout pair on the mesh
spanning all processes, and saves the tokens and logits it gathered; the test compares every
process's files with the single-process reference. `--measure` saves the collectives
`tpuinfer.measure` reads from the compiled step instead. `--die-after-first` makes the last
process SIGKILL itself after the first pair, while the others go on into the next: the failure
the launcher must turn into a clear error.
"""
import argparse
import json
import os
import signal

import numpy as np

import tpuinfer as ti
from tpuinfer import engine
from tpuinfer.mesh import parse_shape

CFG = ti.MODELS["tiny"]


def layouts(pair: str) -> tuple[ti.Layout, ti.Layout]:
    """'ws2d/heads:ws2d/batch' -> (prefill, decode)."""
    return tuple(ti.Layout(*phase.split("/")) for phase in pair.split(":"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--devices", type=int, required=True)
    ap.add_argument("--processes", type=int, required=True)
    ap.add_argument("--process-id", type=int, required=True)
    ap.add_argument("--coordinator", required=True)
    ap.add_argument("--mesh", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--pairs", nargs="*", default=[])
    ap.add_argument("--prompt-len", type=int, default=4)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--measure", nargs=3, metavar=("FFN", "ATTENTION", "PHASE"))
    ap.add_argument("--die-after-first", action="store_true")
    args = ap.parse_args()

    ti.emulate(args.devices, processes=args.processes, process_id=args.process_id,
               coordinator=args.coordinator)
    mesh = ti.make_mesh(parse_shape(args.mesh))
    batch = mesh.size
    prompt_BL = np.random.default_rng(batch).integers(0, CFG.V, (batch, args.prompt_len))
    me = args.process_id
    for k, pair in enumerate(args.pairs):
        prefill, decode = layouts(pair)
        params = ti.init_params(CFG, seed=0,
                                shardings=engine.param_shardings(CFG, prefill, mesh))
        out = ti.generate(params, CFG, prompt_BL, args.steps, mesh=mesh, prefill=prefill,
                          decode=decode)
        np.savez(os.path.join(args.out, f"pair{k}-process{me}.npz"), tokens=out.tokens,
                 step_logits=out.step_logits)
        if args.die_after_first and me == args.processes - 1:
            os.kill(os.getpid(), signal.SIGKILL)
    if args.measure:
        ffn, attention, phase = args.measure
        m = ti.measure(CFG, mesh, ti.Layout(ffn, attention), phase=phase, batch=batch, repeats=1)
        with open(os.path.join(args.out, f"measure-process{me}.json"), "w") as f:
            json.dump(m.measured.to_json()["collectives"], f)


if __name__ == "__main__":
    main()
