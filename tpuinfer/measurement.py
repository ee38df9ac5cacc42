"""What a measurement is: one step's two sides, predicted and measured, in the cost model's units
and names (`Side`), with what a reader should know beside them (`Flag`). `tpuinfer.measure`
takes the measurements (JAX); this module imports none of it, so the presentation layer
(`report`) and the cost path read measurements without starting JAX.
"""
from __future__ import annotations

import dataclasses
import enum
import statistics
from dataclasses import dataclass

from .axes import format_shape
from .layouts import Layout
from .terms import Collective, StepTerms

PHASES = ("prefill", "decode")
# backend -> element types its collectives widen, and to what
WIDENED = {"cpu": {"bf16": "f32", "f8e4m3fn": "f16"}}


class Flag(enum.Enum):
    """What a reader of a measurement should know beside its numbers (`Measurement.flags`)."""
    COLLECTIVES_WIDENED = "collectives_widened"  # bf16 (fp8) collectives compiled as f32 (f16)
    TRANSIENT_ABOVE_PREDICTION = "transient_above_prediction"  # temporaries > 1.1x predicted
    HOST_PROFILE_MISSING = "host_profile_missing"  # no `tpuinfer calibrate` yet: no host time
    HOST_PROFILE_UNREADABLE = "host_profile_unreadable"  # host.json there but unreadable
    FLOPS_MISREAD = "flops_misread"  # matmul FLOPs read disagree with the compiler's count


def count_by_kind(collectives) -> dict[str, tuple[int, float]]:
    """kind -> (calls, bytes moved per device over the step) of `terms.Collective`s."""
    out: dict[str, tuple[int, float]] = {}
    for x in collectives:
        n, b = out.get(x.kind, (0, 0.0))
        out[x.kind] = (n + x.count, b + x.bytes * x.count)
    return out


@dataclass(frozen=True)
class Side:
    """One side of a `Measurement`, predicted or measured, in the same units and names."""
    collectives: tuple[Collective, ...]  # one entry per (kind, axes, bytes, dtype); `count` summed
    flops: float  # weight-matmul FLOPs per device
    attention_flops: float  # QK^T and PV FLOPs per device
    memory_bytes: float  # per device, held across steps: weights, KV cache (measured: + I/O)
    transient_bytes: float  # per device, added during the step (activations, temporaries)
    weight_bytes_per_device: float
    time_s: float | None  # predicted: on the `host` profile, None until one is calibrated
    kv_bytes_per_device: float = 0.0  # the KV cache each device holds (module docstring)

    @property
    def comm_bytes(self) -> float:
        return sum(x.bytes * x.count for x in self.collectives)

    def by_kind(self) -> dict[str, tuple[int, float]]:
        """kind -> (count, bytes moved per device over the step)."""
        return count_by_kind(self.collectives)

    def to_json(self) -> dict:
        return {"collectives": [{"kind": x.kind, "axes": "".join(x.axes), "group": x.group,
                                 "bytes": x.bytes, "count": x.count, "dtype": x.dtype}
                                for x in self.collectives],
                "comm_bytes": self.comm_bytes, "flops": self.flops,
                "attention_flops": self.attention_flops, "memory_bytes": self.memory_bytes,
                "transient_bytes": self.transient_bytes,
                "weight_bytes_per_device": self.weight_bytes_per_device,
                "kv_bytes_per_device": self.kv_bytes_per_device, "time_s": self.time_s}


@dataclass(frozen=True)
class Memory:
    """The compiled program's memory per device (`Compiled.memory_analysis()`)."""
    arguments: int
    outputs: int
    aliased: int  # outputs written into donated arguments (the KV cache): counted once
    temporaries: int

    @property
    def held(self) -> int:
        """Between steps: the step's inputs and outputs, the donated cache once."""
        return self.arguments + self.outputs - self.aliased


@dataclass(frozen=True)
class Measurement:
    model: str
    mesh_shape: tuple[int, int, int]
    layout: Layout
    phase: str
    batch: int
    tokens: int  # per sequence this step (1 in decode)
    context: int  # cache length attended over
    weights: str
    backend: str  # the platform the step was compiled for ("cpu" when emulated)
    predicted: Side
    measured: Side
    terms: StepTerms  # the layout files' terms, as the cost model receives them
    hlo_collectives: tuple[hlo.HloCollective, ...]  # every collective as compiled
    memory: Memory
    step_times_s: tuple[float, ...]  # each timed run (after a warm-up)
    compile_s: float  # spent compiling in this call; 0.0 when the step was cached
    # the cost model's TPU v4 prediction for this step (bf16 activations); None for fp8
    # weights, which TPU v4 has no fp8 matmul to run
    tpu_time_s: float | None
    flags: frozenset[Flag]
    # the compiler's own FLOP count (`Compiled.cost_analysis()`: every instruction once,
    # elementwise work too), the check on the matmul FLOPs read from the text; None if absent
    compiler_flops: float | None = None
    kv: str = "f32"  # the KV cache's format (`tpuinfer.kv_formats`)
    replicas: int = 1  # data-parallel replicas: `mesh_shape` is one's, `batch` all of theirs
    # a mixture of experts: routes the last timed run dropped over capacity (None: dense, or
    # nothing ran)
    dropped: int | None = None
    # how many times slower this machine ran the drift probe beside this step than when the
    # host profile was calibrated (`tpuinfer.drift`); the host prediction (`predicted.time_s`)
    # is the model's time times this. None: no probe ran (no host profile, one without a probe
    # time, no timed run, or `drift_probe=False`)
    drift: float | None = None

    @property
    def model_time_s(self) -> float | None:
        """The host prediction before the drift factor: the model's time on the machine as it
        was at calibration."""
        t = self.predicted.time_s
        return None if t is None else t / (self.drift or 1.0)

    @property
    def runs(self) -> int:
        """Timed runs after the warm-up (fewer than `repeats` once they agreed)."""
        return len(self.step_times_s)

    @property
    def spread(self) -> float | None:
        """(max - min) / median of the timed runs; None for fewer than two."""
        return spread(self.step_times_s)

    @property
    def host_error(self) -> float | None:
        """The host prediction's error, |predicted - measured| / measured: what
        `benchmarks/bench_measure.py` reports per mesh and phase. None without a host profile
        or a timed run."""
        return relative_error(self.predicted.time_s, self.measured.time_s)

    def collective_counts(self) -> dict[tuple, tuple[int, int]]:
        """(kind, axes as text or "-", group, dtype, bytes per device per call) -> (calls
        predicted, calls measured), sorted: both sides' distinct collectives in one list."""
        counts: dict[tuple, list[int]] = {}
        for side, entries in ((0, self.predicted.collectives), (1, self.measured.collectives)):
            for x in entries:
                key = (x.kind, "".join(x.axes) or "-", x.group, x.dtype, x.bytes)
                counts.setdefault(key, [0, 0])[side] += x.count
        return {k: tuple(v) for k, v in sorted(counts.items())}

    def to_json(self) -> dict:
        return {"model": self.model, "mesh": format_shape(self.mesh_shape),
                "replicas": self.replicas, "kv": self.kv,
                "ffn": self.layout.ffn, "attention": self.layout.attention,
                "looped": self.layout.looped, "bidirectional": self.layout.bidirectional,
                "phase": self.phase, "batch": self.batch, "tokens": self.tokens,
                "context": self.context, "weights": self.weights, "backend": self.backend,
                "predicted": self.predicted.to_json() | {
                    "time_hardware": "host" if self.predicted.time_s is not None else None,
                    "drift": self.drift, "model_time_s": self.model_time_s,
                    "tpu_v4_time_s": self.tpu_time_s},
                "measured": self.measured.to_json() | {
                    "step_times_s": list(self.step_times_s), "runs": self.runs,
                    "spread": self.spread, "compile_s": self.compile_s,
                    "memory": dataclasses.asdict(self.memory),
                    "compiler_flops": self.compiler_flops},
                "flags": sorted(f.value for f in self.flags)} | (
                    {"dropped_routes": self.dropped} if self.dropped is not None else {})


def relative_error(predicted: float | None, measured: float | None) -> float | None:
    """|predicted - measured| / measured; None when either is missing."""
    if predicted is None or not measured:
        return None
    return abs(predicted - measured) / measured


def spread(times) -> float | None:
    """(max - min) / median of a step's timed runs; None for fewer than two."""
    if len(times) < 2:
        return None
    return (max(times) - min(times)) / statistics.median(times)
