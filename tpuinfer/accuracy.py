"""How far to trust the cost model: every public measurement it is compared against, priced.

`tpuinfer/data/measurements.json` holds each measurement once: where it was published, the
system and configuration it ran, what was measured, and which calibrated profile's fit used
it (`fitted_by`; null: held out, never entering a fit, a default or a tolerance). `board()`
prices every row on its chip family's datasheet profile and its calibrated one, and says how
far each is from the measurement (error = predicted / measured - 1), with the median and worst
error per family, over the rows no fit saw. `tpuinfer accuracy` prints it.

A row's `metric` says what was measured and how the model prices it:
- `prefill_latency_s`, `decode_latency_s`: one phase of the request, `planner.plan`'s;
- `decode_step_s`: one decode step (`per_token_s`);
- `total_latency_s`, `mfu`: the whole request (`Plan.total_latency_s`, `Plan.mfu`);
- `serial_slowdown`: a decode step of the model with a serial block over its parallel one;
- `itl_s`: a server's inter-token latency at `batch` concurrent requests of `input_len` prompt
  and `gen_len` generated tokens (closed loop): a decode step of the whole batch at the mean
  context (input_len + gen_len/2), plus the prefills it waits for: every request needs one
  prefill of input_len tokens per gen_len of its steps, so each step carries batch/gen_len of
  a one-sequence prefill (in-flight batching runs them between decode steps).
"""
from __future__ import annotations

import functools
import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from .config import get_model
from .errors import UsageError
from .planner import plan

DATA = Path(__file__).parent / "data" / "measurements.json"
# each chip family's datasheet profile and the profile calibrated for it
FAMILIES = {"tpu-v4": ("tpu-v4", "tpu-v4-calibrated"),
            "tpu-v5e": ("tpu-v5e", "tpu-v5e-calibrated"),
            "h100": ("h100-sxm", "h100-calibrated")}
METRICS = ("prefill_latency_s", "decode_latency_s", "decode_step_s", "total_latency_s", "mfu",
           "serial_slowdown", "itl_s")


@dataclass(frozen=True)
class Row:
    """One public measurement (`tpuinfer/data/measurements.json`)."""
    id: str
    family: str
    source: str
    system: str
    metric: str
    measured: float
    unit: str
    config: dict = field(hash=False)
    fitted_by: str | None = None
    note: str = ""

    @property
    def held_out(self) -> bool:
        return self.fitted_by is None


@functools.lru_cache(maxsize=1)
def _load(path: str) -> tuple[Row, ...]:
    rows = tuple(Row(**r) for r in json.loads(Path(path).read_text())["rows"])
    for r in rows:
        if r.family not in FAMILIES or r.metric not in METRICS:
            raise UsageError(f"{path}: row {r.id} has family {r.family!r} and metric "
                             f"{r.metric!r}; families are {list(FAMILIES)}, metrics {METRICS}")
        if r.fitted_by not in (None, FAMILIES[r.family][1]):
            raise UsageError(f"{path}: row {r.id} says fitted by {r.fitted_by!r}; only "
                             f"{FAMILIES[r.family][1]} is fitted to {r.family} rows")
    return rows


def rows(family: str | None = None, fitted_by: str | None = None) -> list[Row]:
    """The measurements, optionally of one family or one profile's fit."""
    return [r for r in _load(str(DATA)) if (family is None or r.family == family)
            and (fitted_by is None or r.fitted_by == fitted_by)]


def _plan(c: dict, hardware, **changes):
    """`planner.plan` for a row's configuration; the layouts, mesh, schedule, KV format and
    replicas where the row fixes them."""
    c = {**c, **changes}
    fixed = {k: c[k] for k in ("ffn", "attention", "looped", "kv", "replicas") if k in c}
    if c.get("mesh"):
        fixed["mesh"] = tuple(c["mesh"])
    return plan(c["model"], hardware, c["chips"], c["batch"], c["input_len"],
                c.get("history_len", 0), c["gen_len"], c["weights"], **fixed)


def predict(row: Row, hardware) -> float:
    """The cost model's value of the row's metric on `hardware`, in the row's unit."""
    c, m = row.config, row.metric
    if m == "itl_s":
        step, prefill = phases(row, hardware)
        return step.latency_s + c["batch"] / c["gen_len"] * prefill.latency_s
    if m == "serial_slowdown":
        serial, parallel = phases(row, hardware)
        return serial.latency_s / parallel.latency_s
    p = _plan(c, hardware)
    return {"prefill_latency_s": lambda: p.prefill.best.latency_s,
            "decode_latency_s": lambda: p.decode.best.latency_s,
            "decode_step_s": lambda: p.decode.best.per_token_s,
            "total_latency_s": lambda: p.total_latency_s,
            "mfu": lambda: p.mfu}[m]()


def phases(row: Row, hardware) -> list:
    """The priced phases behind a row's prediction (`planner.PhaseEstimate`s, whose named
    terms say where its time goes): an inter-token latency's decode step and the prefill it
    waits for; a slowdown's serial and parallel steps; else the request's phases."""
    c, m = row.config, row.metric
    if m == "itl_s":
        mean = c["input_len"] + c["gen_len"] // 2
        return [_plan(c, hardware, input_len=0, history_len=mean, gen_len=1).decode.best,
                _plan(c, hardware, batch=1, gen_len=0).prefill.best]
    if m == "serial_slowdown":
        serial = get_model(c["model"]).replace(parallel_block=False)
        return [_plan({**c, "model": serial}, hardware).decode.best,
                _plan(c, hardware).decode.best]
    return [phase.best for phase in _plan(c, hardware).phases]


def board(profiles: dict | None = None) -> dict:
    """Every row priced on its family's datasheet and calibrated profiles (`FAMILIES`, or
    `profiles`: {family: (datasheet, calibrated)}), each with its error, and per family the
    median and worst absolute error of the held-out rows and of all rows."""
    profiles = {**FAMILIES, **(profiles or {})}
    out = []
    for r in rows():
        datasheet, calibrated = profiles[r.family]
        pred = {"datasheet": predict(r, datasheet), "calibrated": predict(r, calibrated)}
        out.append({"id": r.id, "family": r.family, "source": r.source, "system": r.system,
                    "metric": r.metric, "unit": r.unit, "measured": r.measured,
                    "datasheet_profile": datasheet, "calibrated_profile": calibrated,
                    "predicted_datasheet": pred["datasheet"],
                    "predicted_calibrated": pred["calibrated"],
                    "error_datasheet": pred["datasheet"] / r.measured - 1,
                    "error_calibrated": pred["calibrated"] / r.measured - 1,
                    "fitted_by": r.fitted_by, "held_out": r.held_out})
    return {"rows": out, "families": {f: summary([x for x in out if x["family"] == f])
                                      for f in profiles if any(x["family"] == f for x in out)}}


def summary(priced: list[dict]) -> dict:
    """Median and worst |error| on each profile, over the held-out rows and over all."""
    out = {}
    for which in ("datasheet", "calibrated"):
        for part, chosen in (("held_out", [x for x in priced if x["held_out"]]),
                             ("all", priced)):
            errs = [abs(x[f"error_{which}"]) for x in chosen]
            out[f"{which}_{part}"] = {"rows": len(errs),
                                      "median": statistics.median(errs) if errs else None,
                                      "worst": max(errs) if errs else None}
    return out
