"""`tpuinfer` command line: the front-ends' wing, on top of the library, which never imports it.

Each command module adds its parsers in `register(subparsers)`, each with `func`, a function
of the parsed arguments returning `(json_object, text)`; every command takes `--json` and then
prints one JSON object. No module here imports JAX or numpy when it is imported: a command
that runs the engine imports it when it runs, so `tpuinfer plan` never starts JAX (and the
static site's planner page runs this very package in the browser).

A `tpuinfer.errors.TpuinferError` (a request that cannot be met as asked, a run stopped for a
reason outside the library) is printed as one line, exit status 2. Anything else (a bug, an
XLA failure such as out of memory) keeps its traceback: one line would hide where it came from.
"""
from __future__ import annotations

import argparse
import json
import sys

from ..errors import TpuinferError
from . import accuracy, book, calibrate, demo, measure, plan, train, warmup

# in the order `tpuinfer --help` lists them
COMMANDS = (demo, plan, measure, calibrate, book, warmup, train, accuracy)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tpuinfer",
        description="Partition a Transformer for inference (Pope et al., 2022): run, "
                    "measure and plan layouts.")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        obj, text = args.func(args)
    except TpuinferError as err:  # its message names the problem and what would work
        if getattr(args, "json", False):
            print(json.dumps({"error": str(err)}))
        print(f"tpuinfer {args.command}: error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(obj) if args.json else text)
    return 0
