"""The paper's measured results (PAPER.md) beside what the cost model and planner say.

`TABLE2` is PAPER.md's calibration table, written once here; `tpu-v4-calibrated` is fitted to
its four latencies by benchmarks/fit_calibrated.py, and `paper()` lays every result the model
can express beside the paper's number: the datasheet profile (a lower bound) and the
calibrated one, with the ratio model / paper.
"""
from __future__ import annotations

from dataclasses import dataclass

from .hardware import PAPER_MESHES
from .layouts import Layout
from .planner import max_context, phase_estimate, plan

# PaLM 540B with its heads padded to 64, as the paper runs it on 64+ chips (PAPER.md, Models).
MODEL, CHIPS, CONTEXT, GENERATED = "palm-540b-64heads", 64, 2048, 64


@dataclass(frozen=True)
class Column:
    """One column of Table 2: the request, the paper's layouts, its measured MFU and latency."""
    name: str
    phase: str
    batch: int
    weights: str
    ffn: str
    attention: str
    mfu: float
    latency_s: float

    def request(self) -> dict:
        """Prefill: 2048 input tokens. Decode: 64 tokens generated after 2048 cached."""
        if self.phase == "prefill":
            return dict(input_len=CONTEXT, history_len=0, gen_len=0)
        return dict(input_len=0, history_len=CONTEXT, gen_len=GENERATED)

    def plan(self, hardware: str, **kw):
        return plan(MODEL, hardware, CHIPS, self.batch, weights=self.weights,
                    **self.request(), **kw)


TABLE2 = (  # source: PAPER.md, "Results to calibrate against"
    Column("low-latency prefill", "prefill", 1, "int8", "ws2d", "heads", 0.43, 0.29),
    Column("low-latency decode", "decode", 64, "int8", "ws2d", "batch", 0.14, 1.82),
    Column("high-throughput prefill", "prefill", 512, "bf16", "wg-xyz", "batch", 0.76, 85.2),
    Column("high-throughput decode", "decode", 512, "bf16", "ws2d", "batch", 0.33, 6.0),
)
DECODE_PER_TOKEN_S = {"int8": 28.5e-3, "bf16": 36.9e-3}  # source: PAPER.md (batch 64)
HEADLINE_PER_TOKEN_S = 29e-3  # source: PAPER.md headline (low batch, int8)
HEADLINE_PREFILL_MFU = 0.76  # source: PAPER.md headline (large-batch prefill)
HEADLINE_CONTEXT_RATIO = 32  # source: PAPER.md headline (optimized multiquery vs multihead)
SERIAL_BLOCK_SLOWDOWN = 1.14  # source: PAPER.md, parallel block (2D WS, 64 chips, batch 512)
PROFILES = ("tpu-v4", "tpu-v4-calibrated")


def measured_config(col: Column, hardware: str, weights: str | None = None):
    """The column as the paper ran it: its layouts on the 4x4x4 slice (PAPER.md, Hardware)."""
    return phase_estimate(MODEL, Layout(col.ffn, col.attention), PAPER_MESHES[CHIPS], col.phase,
                          batch=col.batch, weights=weights or col.weights, hardware=hardware,
                          **col.request())


def planned(col: Column, hardware: str):
    """The planner's choice for the column (auto layouts, any mesh), or the reason it has
    none (a ValueError's message: nothing fits)."""
    try:
        p = col.plan(hardware)
    except ValueError as err:
        return str(err)
    return (p.prefill or p.decode).best


def paper() -> list[dict]:
    """Rows {result, unit, paper, <profile>: the model's value, <profile>_ratio: model / paper}
    for each profile in PROFILES. Layout rows hold text (ratio 1.0 when the planner chose the
    paper's layouts); a value is None where the model has none (nothing fits)."""
    rows = []

    def row(result, unit, paper_value, values):
        r = {"result": result, "unit": unit, "paper": paper_value}
        for hw, v in values.items():
            r[hw] = v
            r[f"{hw}_ratio"] = (None if v is None else float(v == paper_value)
                                if isinstance(v, str) else v / paper_value)
        rows.append(r)

    for col in TABLE2:
        ran = {hw: measured_config(col, hw) for hw in PROFILES}
        chosen = {hw: planned(col, hw) for hw in PROFILES}
        row(f"{col.name}: latency (paper's layouts, 4x4x4)", "s", col.latency_s,
            {hw: e.latency_s for hw, e in ran.items()})
        row(f"{col.name}: MFU (paper's layouts, 4x4x4)", "", col.mfu,
            {hw: e.mfu for hw, e in ran.items()})
        row(f"{col.name}: planner's layout", "ffn/attention", f"{col.ffn}/{col.attention}",
            {hw: None if isinstance(c, str) else f"{c.layout.ffn}/{c.layout.attention}"
             for hw, c in chosen.items()})
        row(f"{col.name}: latency (planner's choice)", "s", col.latency_s,
            {hw: None if isinstance(c, str) else c.latency_s for hw, c in chosen.items()})
    decode = TABLE2[1]
    for weights, measured in DECODE_PER_TOKEN_S.items():
        row(f"decode per token, batch 64, {weights} (2D WS, by batch)", "s", measured,
            {hw: measured_config(decode, hw, weights).per_token_s for hw in PROFILES})
    row("headline: low-batch int8 decode per token", "s", HEADLINE_PER_TOKEN_S,
        {hw: measured_config(decode, hw).per_token_s for hw in PROFILES})
    row("headline: large-batch prefill MFU", "", HEADLINE_PREFILL_MFU,
        {hw: measured_config(TABLE2[2], hw).mfu for hw in PROFILES})
    for batch in (128, 512):
        ratio = (max_context("palm-540b", CHIPS, batch, "multiquery-batch")
                 / max_context("palm-540b", CHIPS, batch, "multihead"))
        row(f"headline: context, optimized multiquery / multihead, batch {batch}", "x",
            float(HEADLINE_CONTEXT_RATIO), {hw: ratio for hw in PROFILES})
    row("serial / parallel block decode step (2D WS, batch 512)", "x", SERIAL_BLOCK_SLOWDOWN,
        {hw: serial_slowdown(hw) for hw in PROFILES})
    return rows


def serial_slowdown(hw: str) -> float | None:
    """One decode step of the serial block over the parallel one, same layout and mesh."""
    from .config import get_model
    cfg = get_model(MODEL)
    layout, mesh = Layout("ws2d", "batch"), PAPER_MESHES[CHIPS]
    kw = dict(batch=512, input_len=0, history_len=CONTEXT, gen_len=1, weights="bf16",
              hardware=hw)
    serial = phase_estimate(cfg.replace(parallel_block=False), layout, mesh, "decode", **kw)
    return serial.latency_s / phase_estimate(cfg, layout, mesh, "decode", **kw).latency_s
