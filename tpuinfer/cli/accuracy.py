"""`tpuinfer accuracy`: every public measurement beside the cost model's prediction of it.

Returns (json_object, readable_text) as every command does (`tpuinfer.cli`). The JSON is
`accuracy.board()`: `rows` (each with its `source`) and `families` (median and worst error).
"""
from __future__ import annotations

from .. import accuracy
from ..report import seconds, table
from .options import add_json_flag


def register(sub) -> None:
    p = sub.add_parser("accuracy", help="every public measurement beside the model's "
                                        "prediction, fitted and held-out rows apart")
    add_json_flag(p)
    p.set_defaults(func=run_accuracy)


def value(v: float, unit: str) -> str:
    if unit == "s":
        return seconds(v)
    if unit == "x":
        return f"{v:.2f}x"
    return f"{v:.0%}"


def run_accuracy(args):
    board = accuracy.board()
    sources = list(dict.fromkeys(r["source"] for r in board["rows"]))
    parts = ["Every public measurement the cost model is compared against "
             "(tpuinfer/data/measurements.json), and the model's prediction of it on the chip's "
             "datasheet profile and its calibrated one. error = predicted / measured - 1. A "
             "fitted row is one its profile's fit used; held out: no fit, default or tolerance "
             "saw it."]
    for family, (datasheet, calibrated) in accuracy.FAMILIES.items():
        rows = [r for r in board["rows"] if r["family"] == family]
        body = [[r["id"], f"[{sources.index(r['source']) + 1}]",
                 value(r["measured"], r["unit"]),
                 value(r["predicted_datasheet"], r["unit"]), f"{r['error_datasheet']:+.0%}",
                 value(r["predicted_calibrated"], r["unit"]), f"{r['error_calibrated']:+.1%}",
                 "held out" if r["held_out"] else "fitted"] for r in rows]
        parts += [f"\n{family}", table(["row", "source", "measured", datasheet, "error",
                                        calibrated, "error", ""], body, "llrrrrrl")]
        s = board["families"][family]
        for which, name in (("calibrated", calibrated), ("datasheet", datasheet)):
            h = s[f"{which}_held_out"]
            parts.append(f"{name}: {h['rows']} held-out rows, median |error| {h['median']:.1%}, "
                         f"worst {h['worst']:.1%}" if h["rows"] else
                         f"{name}: no held-out rows")
    parts += ["\nsources"] + [f"[{i}] {s}" for i, s in enumerate(sources, 1)]
    return board, "\n".join(parts)
