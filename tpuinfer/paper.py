"""The paper's measured results beside what the cost model and planner say.

Pope et al. 2022, "Efficiently Scaling Transformer Inference" (arXiv 2211.05102). `TABLE2` is
its Table 2, written once here; `tpu-v4-calibrated` is fitted to its four latencies by
benchmarks/fit_calibrated.py, and `paper()` lays every result the model can express beside
the paper's number, on the datasheet profile (the best schedule the chip allows) and the
calibrated one, with the error model / paper − 1.

The model is PaLM 540B as a user types it (`palm-540b`, 48 heads): where a layout splits the
heads over 64 chips the planner pads them to 64, as the paper does (Section 4.4).
"""
from __future__ import annotations

import functools
import json
import pathlib
from dataclasses import dataclass

from .config import get_model
from .cost import cost_per_token, mfu
from .hardware import get_hardware
from .errors import UsageError
from .hardware import PAPER_MESHES
from .kv import max_context
from .planner import plan

MODEL, CHIPS, CONTEXT, GENERATED = "palm-540b", 64, 2048, 64


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

    def plan(self, hardware, weights: str | None = None, **kw):
        return plan(MODEL, hardware, CHIPS, self.batch, weights=weights or self.weights,
                    **self.request(), **kw)

    @property
    def tokens(self) -> int:
        """Tokens the phase processes (prefill) or generates (decode)."""
        request = self.request()
        return self.batch * (request["input_len"] or request["gen_len"])

    @property
    def frontier_point(self) -> tuple[float, float]:
        """The column in Figure 1's coordinates, as `planner.pareto` places a point: latency
        (prefill: the whole phase; decode: per generated token) and chip-seconds per token."""
        per = GENERATED if self.phase == "decode" else 1
        return self.latency_s / per, cost_per_token(CHIPS, self.latency_s, self.tokens)


TABLE2 = (  # source: Pope et al. 2022, Table 2 (PaLM 540B, 64 TPU v4 chips, context 2048)
    Column("low-latency prefill", "prefill", 1, "int8", "ws2d", "heads", 0.43, 0.29),
    Column("low-latency decode", "decode", 64, "int8", "ws2d", "batch", 0.14, 1.82),
    Column("high-throughput prefill", "prefill", 512, "bf16", "wg-xyz", "batch", 0.76, 85.2),
    Column("high-throughput decode", "decode", 512, "bf16", "ws2d", "batch", 0.33, 6.0),
)
# source: Pope et al. 2022, Section 4.4 (decode per token at batch 64, PaLM 540B, 64 chips)
DECODE_PER_TOKEN_S = {"int8": 28.5e-3, "bf16": 36.9e-3}
HEADLINE_PER_TOKEN_S = 29e-3  # source: Pope et al. 2022, abstract (low batch, int8)
HEADLINE_PREFILL_MFU = 0.76  # source: Pope et al. 2022, abstract (large-batch prefill)
HEADLINE_CONTEXT_RATIO = 32  # source: Pope et al. 2022, abstract (multiquery vs multihead)
SERIAL_BLOCK_SLOWDOWN = 1.14  # source: Pope et al. 2022, Section 4.3 (2D WS, 64 chips, B 512)
# source: Pope et al. 2022, Table 1: the longest context whose KV cache fits in 30% of HBM,
# PaLM 540B on 64 TPU v4 chips, per attention variant and batch (as printed, rounded)
TABLE1 = {("multihead", 128): 1320, ("multihead", 512): 330,
          ("multiquery-heads", 128): 660, ("multiquery-heads", 512): 165,
          ("multiquery-batch", 128): 43_000, ("multiquery-batch", 512): 10_700}
PROFILES = ("tpu-v4", "tpu-v4-calibrated")


@dataclass(frozen=True)
class Scenario:
    """A whole request the paper served on PaLM 540B and 64 TPU v4 chips (Section 1), with
    the one number it reports for it: the request's total latency or its MFU."""
    name: str
    batch: int
    input_len: int
    history_len: int
    gen_len: int
    weights: str
    metric: str  # "total_latency_s" or "mfu", a `planner.Plan` property
    paper_value: float
    note: str

    def plan(self, hardware):
        return plan(MODEL, hardware, CHIPS, self.batch, self.input_len, self.history_len,
                    self.gen_len, self.weights)


SCENARIOS = (  # source: Pope et al. 2022, Section 1
    # The paper gives the chatbot no batch. Priced at 1, one conversation: at batch 64 its
    # 4,096 new tokens would take ~0.6 s of prefill at Table 2's 43% prefill MFU, beside
    # Table 2's 1.82 s batch-64 decode: more than the 1.9 s reported.
    Scenario("chatbot", 1, 64, 1920, 64, "int8", "total_latency_s", 1.9,
             "64 new + 1,920 cached tokens, 64 generated, int8, batch 1"),
    Scenario("offline", 512, 1984, 0, 64, "bf16", "mfu", 0.73,
             "1,984 input tokens, 64 generated, bf16, batch 512"),
)


def _phase(p):
    return (p.prefill or p.decode).best


def as_run(col: Column, hardware, weights: str | None = None):
    """The column as the paper ran it: its FFN and attention layouts on the 4x4x4 slice
    (Section 4), with the schedule (plain or looped) the planner prefers for them."""
    return _as_run(col, get_hardware(hardware), weights or col.weights)


@functools.lru_cache(maxsize=64)  # `table2` and `paper` ask for the same runs several times
def _as_run(col: Column, hw, weights: str):
    return _phase(col.plan(hw, weights, ffn=col.ffn, attention=col.attention,
                           mesh=PAPER_MESHES[CHIPS]))


def planned(col: Column, hardware):
    """The planner's choice for the column (auto layouts, any mesh), or the reason it has
    none (a UsageError's message: nothing fits)."""
    try:
        return _phase(col.plan(hardware))
    except UsageError as err:
        return str(err)


def table2(profiles=PROFILES) -> list[dict]:
    """Per Table 2 column, never averaged across phases: the paper's layout and latency; per
    profile the planner's layout and schedule, its latency and error, and the latency of the
    paper's own layouts on the paper's slice."""
    rows = []
    for col in TABLE2:
        row = {"column": col.name, "phase": col.phase, "batch": col.batch,
               "weights": col.weights, "paper_layout": f"{col.ffn}/{col.attention}",
               "paper_latency_s": col.latency_s, "paper_mfu": col.mfu}
        for hw in profiles:
            chosen, ran = planned(col, hw), as_run(col, hw)
            ok = not isinstance(chosen, str)
            row[hw] = {
                "layout": f"{chosen.layout.ffn}/{chosen.layout.attention}" if ok else None,
                "schedule": chosen.layout.schedule if ok else None,
                "reason": None if ok else chosen,
                "mesh": list(chosen.mesh_shape) if ok else None,
                "padded_heads": chosen.padded_heads if ok else None,
                "latency_s": chosen.latency_s if ok else None,
                "error": chosen.latency_s / col.latency_s - 1 if ok else None,
                "paper_layout_latency_s": ran.latency_s, "paper_layout_mfu": ran.mfu,
                "paper_layout_schedule": ran.layout.schedule}
        rows.append(row)
    return rows


def paper() -> list[dict]:
    """Rows {result, unit, paper, <profile>: the model's value, <profile>_ratio: model / paper}
    for the results beyond Table 2's columns (`table2` has those)."""
    rows = []

    def row(result, unit, paper_value, values):
        r = {"result": result, "unit": unit, "paper": paper_value}
        for hw, v in values.items():
            r[hw] = v
            r[f"{hw}_ratio"] = None if v is None else v / paper_value
        rows.append(r)

    decode = TABLE2[1]
    for weights, measured in DECODE_PER_TOKEN_S.items():
        row(f"decode per token, batch 64, {weights} (2D WS, by batch)", "s", measured,
            {hw: as_run(decode, hw, weights).per_token_s for hw in PROFILES})
    row("headline: low-batch int8 decode per token", "s", HEADLINE_PER_TOKEN_S,
        {hw: as_run(decode, hw).per_token_s for hw in PROFILES})
    row("headline: large-batch prefill MFU", "", HEADLINE_PREFILL_MFU,
        {hw: as_run(TABLE2[2], hw).mfu for hw in PROFILES})
    for batch in (128, 512):
        ratio = (max_context(MODEL, CHIPS, batch, "multiquery-batch")
                 / max_context(MODEL, CHIPS, batch, "multihead"))
        row(f"headline: context, optimized multiquery / multihead, batch {batch}", "x",
            float(HEADLINE_CONTEXT_RATIO), {hw: ratio for hw in PROFILES})
    row("serial / parallel block decode step (2D WS, batch 512)", "x", SERIAL_BLOCK_SLOWDOWN,
        {hw: serial_slowdown(hw) for hw in PROFILES})
    for sc in SCENARIOS:
        what = "total latency" if sc.metric == "total_latency_s" else "MFU over the request"
        row(f"{sc.name} ({sc.note}): {what}", "s" if sc.metric == "total_latency_s" else "",
            sc.paper_value, {hw: getattr(sc.plan(hw), sc.metric) for hw in PROFILES})
    return rows


def serial_slowdown(hardware) -> float:
    """One decode step of the serial block over the parallel one (2D weight-stationary,
    attention by batch, batch 512, the 4x4x4 slice), each under the schedule the planner
    prefers for it."""
    cfg = get_model(MODEL)
    kw = dict(batch=512, input_len=0, history_len=CONTEXT, gen_len=1, weights="bf16",
              ffn="ws2d", attention="batch", mesh=PAPER_MESHES[CHIPS])
    serial = plan(cfg.replace(parallel_block=False), hardware, CHIPS, **kw).decode.best
    return serial.latency_s / plan(cfg, hardware, CHIPS, **kw).decode.best.latency_s


# ---- one result at a time: what a prediction lock reveals ----------------------------------
def _speedup(hardware) -> float:
    return as_run(TABLE2[1], hardware, "bf16").per_token_s / as_run(TABLE2[1], hardware,
                                                                   "int8").per_token_s


RESULTS = {  # name -> (what, unit, the model's value on a profile, the paper's, where)
    "serial-slowdown": ("serial over parallel block, one decode step of PaLM 540B (2D WS, "
                        "batch 512, 64 chips)", "x", serial_slowdown, SERIAL_BLOCK_SLOWDOWN,
                        "Section 4.3"),
    "bf16-decode": ("PaLM 540B decode per token, bf16, batch 64, 64 chips (2D WS, by batch)",
                    "s", lambda hw: as_run(TABLE2[1], hw, "bf16").per_token_s,
                    DECODE_PER_TOKEN_S["bf16"], "Section 4.4"),
    "int8-speedup": ("PaLM 540B decode per token, bf16 over int8, batch 64, 64 chips", "x",
                     _speedup, DECODE_PER_TOKEN_S["bf16"] / DECODE_PER_TOKEN_S["int8"],
                     "Section 4.4"),
}


def against_paper(result: str, hardware="tpu-v4") -> dict:
    """One of the paper's measurements (`RESULTS`) beside the cost model's prediction of it on
    `hardware`, in the form `sweeps.step_quantity` returns: what a prediction lock reveals."""
    if result not in RESULTS:
        raise UsageError(f"unknown result {result!r}; choose one of {', '.join(RESULTS)}")
    what, unit, model, measured, where = RESULTS[result]
    hw = get_hardware(hardware)
    return {"what": what, "unit": unit, "predicted": model(hw),
            "predicted_by": f"cost model, {hw.name} profile (rule {hw.rule})",
            "measured": measured, "measured_by": f"the paper, measured (Pope et al. 2022, "
                                                 f"{where})"}


# ---- FasterTransformer's published baseline (the paper's Section 5) ------------------------
FT_MODEL, FT_HARDWARE = "mt-nlg-530b", "a100-80g"
FT_DATA = pathlib.Path(__file__).resolve().parent / "data" / "fastertransformer_megatron530b.json"
# source: Pope et al. 2022, Section 5: the best MFU each system reaches in its comparison of
# PaLM 540B on TPU v4 with FasterTransformer's Megatron-530B on A100
QUOTED_MFU = {"FasterTransformer TP16": 0.46, "FasterTransformer TP32": 0.33,
              "PaLM 540B on 64 TPU v4": 0.44}


@dataclass(frozen=True)
class FTPoint:
    """One measured request of FasterTransformer's table: the system (TP16, TP32, TP8-PP3),
    its GPUs, the batch, input and generated tokens, and the total latency."""
    system: str
    gpus: int
    batch: int
    input_len: int
    gen_len: int
    latency_s: float

    @property
    def mfu(self) -> float:
        """MFU over the request, every input and generated token counted (as the paper
        counts it), against the A100's datasheet peak."""
        return mfu(FT_MODEL, self.batch * (self.input_len + self.gen_len), self.gpus,
                   FT_HARDWARE, self.latency_s)


@functools.lru_cache(maxsize=1)
def _ft_table() -> dict:
    return json.loads(FT_DATA.read_text())


def fastertransformer() -> tuple[FTPoint, ...]:
    """Every point of FasterTransformer's published Megatron-530B table (its source:
    `FT_SOURCE`), the OOM cells left out."""
    table = _ft_table()
    points = []
    for row in table["rows"]:
        batch, inp, gen = row[:3]
        for system, ms in zip(table["columns"][3:], row[3:]):
            if ms is not None:
                points.append(FTPoint(system, table["systems"][system]["gpus"], batch, inp,
                                      gen, ms / 1e3))
    return tuple(points)


FT_SOURCE = _ft_table()["source"]
