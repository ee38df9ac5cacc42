"""The options several commands share, written once: `--json`, the looped schedule, the KV
cache's format, and a mesh shape."""
from __future__ import annotations

import argparse

from ..axes import parse_shape
from ..errors import UsageError
from ..kv_formats import KV_FORMATS


def add_json_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON object")


def add_schedule_flags(p: argparse.ArgumentParser, looped_default: bool | None = False,
                       looped_help: str = "") -> None:
    """`--looped` (Looped CollectiveEinsum) and `--bidirectional`: the schedule of a step the
    command runs. `looped_default` None: `--looped/--no-looped`, unset leaves it to the
    planner."""
    if looped_default is None:
        p.add_argument("--looped", action=argparse.BooleanOptionalAction, default=None,
                       help=looped_help)
    else:
        p.add_argument("--looped", action="store_true", help=looped_help or
                       "Looped CollectiveEinsum: collective permutes round a ring, inside the "
                       "matmuls they feed")
    p.add_argument("--bidirectional", action="store_true",
                   help="looped, halves both ways round the ring (weight-stationary layouts)")


def add_kv_flag(p: argparse.ArgumentParser, default_help: str) -> None:
    p.add_argument("--kv", default=None, choices=KV_FORMATS,
                   help=f"the KV cache's format (default: {default_help})")


def mesh(text: str) -> tuple[int, int, int]:
    """An argparse type: 'XxYxZ', e.g. 4x4x4."""
    try:
        return parse_shape(text)
    except UsageError as err:  # argparse words it as a usage error of the option
        raise argparse.ArgumentTypeError(str(err)) from None
