"""`tpuinfer` command line. Every command takes `--json` and then prints one JSON object.

Commands live beside what they run (`demo.py`, `cli_plan.py`, `measure_cli.py`, ...); each module
has `register(subparsers)` adding its parser with `func`, a function of the parsed arguments
returning `(json_object, text)`.

A `tpuinfer.errors.TpuinferError` (a request that cannot be met as asked, a run stopped for a
reason outside the library) is printed as one line, exit status 2. Anything else (a bug, an
XLA failure such as out of memory) keeps its traceback: one line would hide where it came from.
"""
from __future__ import annotations

import argparse
import importlib
import json
import sys

from .errors import TpuinferError

COMMAND_MODULES = ("tpuinfer.demo", "tpuinfer.cli_plan", "tpuinfer.measure_cli",
                   "tpuinfer.calibrate", "tpuinfer.book_cli", "tpuinfer.warmup", "tpuinfer.train",
                   "tpuinfer.accuracy_cli")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tpuinfer",
        description="Partition a Transformer for inference (Pope et al., 2022): run, "
                    "measure and plan layouts.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def add_json_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON object")


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
