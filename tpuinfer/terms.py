"""What one step costs, in named terms, before any hardware is chosen.

Each layout file computes its own `StepTerms` next to its `shard_map` body (one formula, beside
the code it predicts); the cost model (`tpuinfer.cost`) turns terms into times on a hardware
profile, and measurement (`tpuinfer.measure`) reads the same quantities from the compiled step.

Byte convention for collectives (Pope et al. 2022, arXiv 2211.05102, Section 3.1; the same
in measurement): `bytes` is per chip and is
the size of the larger side of the operation on that chip:
- all-gather: its output (the gathered tensor each chip ends with);
- reduce-scatter: its input (the unreduced tensor each chip starts with);
- all-reduce, all-to-all, collective-permute: its input (= its output).
`group` is the number of chips in one group; `axes` the mesh axes the group spans.
"""
from __future__ import annotations

from dataclasses import dataclass, field

KINDS = ("all-gather", "reduce-scatter", "all-reduce", "all-to-all", "collective-permute")


@dataclass(frozen=True)
class Collective:
    kind: str  # one of KINDS
    axes: tuple[str, ...]  # mesh axes the group spans, e.g. ('y', 'z')
    group: int  # chips per group
    bytes: float  # per chip, under the convention above
    count: int = 1  # how many times the step runs it (e.g. once per layer)
    what: str = ""  # which tensor, in the paper's notation, e.g. "BLE_xyz -> BLE_x"
    dtype: str = ""  # element type moved: "f32", "bf16" or "s8" (measurement needs it: XLA:CPU
    #                  runs bf16 collectives in f32); "" when not stated
    concurrent: int = 1  # calls that run at once on separate links: 2 for the halves of a
    #                      bidirectional ring, one each way (the cost model prices count/2 rounds)
    # Looped CollectiveEinsum: the partial matmul each round of this ring runs beside, per chip
    # (its FLOPs and the weight bytes it reads). The cost model's `overlap` rule hides the
    # round's transfer behind it; 0 for a plain collective, which nothing hides.
    beside_flops: float = 0.0
    beside_bytes: float = 0.0

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown collective kind {self.kind!r}; one of {KINDS}")

    def times(self, n: int) -> "Collective":
        """This collective run n times as often (every layer of a model: the planner calls this
        for every configuration it prices, so it skips `dataclasses.replace`'s generality)."""
        return Collective(self.kind, self.axes, self.group, self.bytes, self.count * n,
                          self.what, self.dtype, self.concurrent, self.beside_flops,
                          self.beside_bytes)


@dataclass(frozen=True)
class StepTerms:
    """Per-chip work of one step (a prefill of `tokens` tokens per sequence, or one decode
    step with tokens=1), all layers, embedding and output projection included."""
    flops: float  # weight-matmul FLOPs per chip (2·N·tokens / chips for a balanced layout)
    attention_flops: float  # QK^T and PV FLOPs per chip (not part of 2·N; reported apart)
    weight_bytes: float  # weight bytes each chip's matmuls read (a gathered layout reads more
    #                      than it stores: the weights it received)
    kv_bytes: float  # KV-cache bytes each chip reads this step
    stored_weight_bytes: float  # weight bytes each chip holds (memory fit)
    stored_kv_bytes: float  # KV-cache bytes each chip holds, at the step's full context
    activation_bytes: float  # the largest activation a chip holds during the step
    collectives: tuple[Collective, ...] = field(default_factory=tuple)
    # the weight bytes a chip holds gathered at once: one layer's gathered weights (0 in a
    # weight-stationary layout)
    gathered_weight_bytes: float = 0.0
    # activation bytes each chip's weight matmuls read and write: for every matmul, its input
    # rows and its output rows (priced only where a profile has `activation_bandwidth`)
    activation_traffic_bytes: float = 0.0
    # of `weight_bytes`, those read by matmuls of more than one row (every one in prefill; in
    # decode, all unless a chip holds one sequence). A host prices them at its own rate: XLA:CPU
    # packs a multi-row matmul's weights into panels first, and streams a one-row one's
    multirow_weight_bytes: float = 0.0
    # weight bytes each chip copies after gathering them, to put the gathered dimensions in
    # place (`layouts._spmd.gather_weight`'s transpose, all but free when only the first
    # dimension was split): a copy of a strided array. Priced only where a profile has
    # `relayout_bandwidth` (a host: XLA:CPU ran these copies of wg-xyz's weights on 2x2x2 at
    # about 10 GB/s, half the step's time)
    relayout_bytes: float = 0.0
    # the f32 attention scores each chip writes, softmaxes and reads back: one per query, head
    # and cached position, every layer (`model.attend` scores the whole cache, masking what a
    # query may not see). Priced only where a profile has `score_bandwidth` (a host: XLA:CPU
    # went through them at 1.3-2.6 GB/s, where their QK^T and PV FLOPs at its matmul rate
    # take about a tenth of the time)
    score_bytes: float = 0.0

    @property
    def comm_bytes(self) -> float:
        return sum(c.bytes * c.count for c in self.collectives)

    @property
    def transient_bytes(self) -> float:
        """What the step adds to a chip's memory while it runs: its largest activation and
        the weights it holds gathered at once."""
        return self.activation_bytes + self.gathered_weight_bytes
