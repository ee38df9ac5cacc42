"""The paper's measured results (PAPER.md) beside what the cost model and planner say.

`TABLE2` is PAPER.md's calibration table, written once here; `tpu-v4-calibrated` is fitted to
its four latencies by benchmarks/fit_calibrated.py, and `paper()` lays every result the model
can express beside the paper's number: the datasheet profile (a lower bound) and the
calibrated one, with the ratio model / paper.
"""
from __future__ import annotations

from dataclasses import dataclass

from .planner import max_context, phase_estimate, plan
from .layouts import Layout

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


def _phase(p):
    return p.prefill if p.prefill is not None else p.decode


def paper() -> list[dict]:
    """Rows {result, unit, paper, <profile>: model value, <profile>_ratio}; layouts are
    compared as text (ratio 1 when the planner chose the paper's)."""
    rows = []

    def row(result, unit, paper_value, values):
        r = {"result": result, "unit": unit, "paper": paper_value}
        for hw, v in values.items():
            r[hw] = v
            r[f"{hw}_ratio"] = (v / paper_value if isinstance(v, float)
                                else float(v == paper_value))
        rows.append(r)

    plans = {hw: [col.plan(hw) for col in TABLE2] for hw in PROFILES}
    for i, col in enumerate(TABLE2):
        chosen = {hw: _phase(plans[hw][i]).best for hw in PROFILES}
        row(f"{col.name}: layout", "ffn/attention", f"{col.ffn}/{col.attention}",
            {hw: f"{c.layout.ffn}/{c.layout.attention}" for hw, c in chosen.items()})
        row(f"{col.name}: latency", "s", col.latency_s,
            {hw: c.latency_s for hw, c in chosen.items()})
        row(f"{col.name}: MFU", "", col.mfu, {hw: c.mfu for hw, c in chosen.items()})
    for weights, measured in DECODE_PER_TOKEN_S.items():
        row(f"decode per token, batch 64, {weights}", "s", measured,
            {hw: _decode64(hw, weights).decode.best.per_token_s for hw in PROFILES})
    row("headline: low-batch int8 decode per token", "s", HEADLINE_PER_TOKEN_S,
        {hw: _phase(plans[hw][1]).best.per_token_s for hw in PROFILES})
    row("headline: large-batch prefill MFU", "", HEADLINE_PREFILL_MFU,
        {hw: _phase(plans[hw][2]).best.mfu for hw in PROFILES})
    for batch in (128, 512):
        ratio = (max_context("palm-540b", CHIPS, batch, "multiquery-batch")
                 / max_context("palm-540b", CHIPS, batch, "multihead"))
        row(f"headline: context, optimized multiquery / multihead, batch {batch}", "x",
            float(HEADLINE_CONTEXT_RATIO), {hw: ratio for hw in PROFILES})
    row("serial / parallel block decode step (2D WS, batch 512)", "x", SERIAL_BLOCK_SLOWDOWN,
        {hw: _serial_slowdown(hw) for hw in PROFILES})
    return rows


def _decode64(hw: str, weights: str):
    return plan(MODEL, hw, CHIPS, 64, input_len=0, history_len=CONTEXT, gen_len=GENERATED,
                weights=weights)


def _serial_slowdown(hw: str) -> float:
    """One decode step of the serial block over the parallel one, same layout and mesh."""
    from .config import get_model
    cfg = get_model(MODEL)
    layout, mesh = Layout("ws2d", "batch"), (4, 4, 4)
    kw = dict(batch=512, input_len=0, history_len=CONTEXT, gen_len=1, weights="bf16",
              hardware=hw)
    serial = phase_estimate(cfg.replace(parallel_block=False), layout, mesh, "decode", **kw)
    return serial.latency_s / phase_estimate(cfg, layout, mesh, "decode", **kw).latency_s
