"""Hardware profiles: one table, every constant with its source.

A profile says how fast a chip computes and reads its HBM, and how the mesh axes (x, y, z) map
onto its links, so that the cost model can price a collective over any group of axes:

- TPU (`interconnect="torus"`): mesh axis x, y, z is physical torus dimension 0, 1, 2 (a 2D torus
  has no third dimension: z must be 1). On TPU v4 and v5p a slice built of whole wraparound
  units (`wrap_unit` chips a side: the 4×4×4 cube, whose optical switches close every axis of a
  slice made of such cubes into a ring) has wraparound on every axis; any other slice (2×2×4,
  2×4×4, 4×4×2, ...) is a mesh of lines, with no wraparound at all (Jouppi et al., "TPU v4",
  ISCA 2023, Section 2). On the 2D tori of TPU v5e and v6e (`wrap_each_axis`) each axis
  decides alone: a full side of 16 chips is a ring, a shorter side a line, so an 8×16 slice
  wraps along its 16 and not its 8 (jax-ml scaling book, "How to think about TPUs").
- an emulated mesh (`interconnect="host"`): every device is a thread on this machine's cores,
  so throughput is the host's, shared by all devices of the mesh, and collectives are copies
  through one memory, priced per kind by the constants `tpuinfer calibrate` fits (see there).
- GPU (`interconnect="switch"`): devices are numbered row-major over (x, y, z), z fastest, as
  `jax.make_mesh` numbers them, and each run of `node_size` consecutive devices is one node on
  an NVLink switch (all-to-all at full per-GPU bandwidth). A group that leaves its node is
  bounded by the per-GPU InfiniBand bandwidth between nodes: every ring through it crosses a
  NIC. Beyond one node, GPU counts are whole nodes.

`peak_flops` is the dense bf16 rate. A chip that computes in fp8 (H100, H200) also has
`fp8_flops`, the rate fp8 weights' matmuls are priced at; fp8 weights on a chip without it are
an error naming the chips that have it (`require_fp8`). A KV cache in fp8 (or int8) is storage
only, read into the activations' dtype inside attention: priced by its bytes on every chip.

`tpu-v4-calibrated` is the one profile fitted to the paper: the same chip with three named
constants fitted to Table 2 by `benchmarks/fit_calibrated.py`. Nothing else is tuned.
A `host` profile (this machine's emulated mesh) is written by `tpuinfer calibrate` to
`$TPUINFER_CACHE/host.json` (default `~/.cache/tpuinfer/host.json`) and read from there; its
sources are the micro-benchmarks of `tpuinfer.calibrate`.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import UsageError
from .mesh import AXES, factorizations
from .paths import cache_dir
from .terms import KINDS

RULES = ("sum", "overlap")
INTERCONNECTS = ("torus", "switch", "host")
HOST_KINDS = KINDS  # a host profile prices every collective kind the terms name


@dataclass(frozen=True)
class HardwareProfile:
    name: str
    description: str
    peak_flops: float  # dense bf16 matmul FLOP/s per chip
    hbm_bytes: float  # HBM per chip
    hbm_bandwidth: float  # HBM bytes/s per chip
    interconnect: str  # "torus" (TPU ICI), "switch" (NVLink inside a node) or "host"
    link_bandwidth: float  # torus: bytes/s per link per direction; switch: per GPU per direction
    hop_latency_s: float  # one neighbour step of a collective
    torus_dims: int = 3  # torus: physical dimensions; mesh axes beyond them must be 1
    max_side: int = 16  # torus: longest side of a slice (chips)
    wrap_unit: int = 4  # torus: a slice whose every side is a multiple of this wraps round
    wrap_each_axis: bool = False  # torus: each side of wrap_unit chips wraps on its own
    node_size: int = 8  # switch: GPUs per NVLink node
    network_bandwidth: float = 0.0  # switch: bytes/s per GPU per direction between nodes
    network_latency_s: float = 0.0  # switch: one step between nodes
    max_chips: int = 4096  # the largest single slice / cluster the planner considers
    # Efficiencies: achieved fraction of each datasheet figure (1.0 on a datasheet profile).
    flops_efficiency: float = 1.0
    hbm_efficiency: float = 1.0
    collective_overhead_s: float = 0.0  # fixed cost of launching one collective
    # How the cost model combines terms on this chip (cost.estimate). Datasheet profiles take
    # `overlap`, the best schedule the chip allows, so they bound any measurement from below.
    rule: str = "overlap"
    # Fixed costs of a step beyond its matmuls and collectives: per step and per layer (on a
    # host profile, per device: the devices take turns on the host's cores).
    device_overhead_s: float = 0.0  # one step's dispatch
    layer_overhead_s: float = 0.0  # one layer's work outside the matmuls and collectives
    # host only (an emulated mesh; peak_flops and hbm_bandwidth are then the whole host's):
    # (kind, call_s, device_s, member_s, byte_s): one call costs call_s + chips·device_s +
    # chips·group·member_s + chips·bytes·byte_s (tpuinfer.calibrate)
    host_collectives: tuple = ()
    # bytes/s at which the weight matmuls read their input activations and write their outputs
    # (`StepTerms.activation_traffic_bytes`); 0: not priced. A host prices them: XLA:CPU's
    # matmuls stream them through the shared memory, and on a large emulated mesh they
    # outweigh the weights (a 4x8x8 ws1d prefill at batch 256 moves 7.7 GB of them, 14 MB of
    # weights). The paper's model (Section 3.1) leaves them out, and so do the chip profiles.
    activation_bandwidth: float = 0.0
    # bytes/s at which a matmul of more than one row reads its weights
    # (`StepTerms.multirow_weight_bytes`); 0: at `hbm_bandwidth`, like every other read. A host
    # sets it: XLA:CPU packs a multi-row matmul's weight into panels first, and on 2 cores read
    # a [2048, 2048] weight at 3-12 GB/s with 2 to 32 rows, at 35 GB/s with one row.
    multirow_weight_bandwidth: float = 0.0
    # bytes/s at which gathered weights are copied into place (`StepTerms.relayout_bytes`); 0:
    # not priced, as the paper's model leaves it out. A host sets it: the engine gathers a
    # weight along a new first dimension, and the copy that moves the gathered dimensions into
    # place took about half of a 2x2x2 wg-xyz decode step on XLA:CPU.
    relayout_bandwidth: float = 0.0
    # dense fp8 (e4m3) matmul FLOP/s per chip; 0: the chip has no fp8 matmul, and fp8 weights
    # are not priced on it (`require_fp8`). A host (the emulated mesh) runs fp8 weights
    # dequantized to its activations, at `peak_flops`.
    fp8_flops: float = 0.0

    def __post_init__(self):
        if self.interconnect not in INTERCONNECTS:
            raise UsageError(f"{self.name}: interconnect {self.interconnect!r}; choose one of "
                             f"{INTERCONNECTS}")
        if self.interconnect == "host":
            kinds = tuple(k[0] for k in self.host_collectives)
            if sorted(kinds) != sorted(HOST_KINDS):
                raise UsageError(f"{self.name}: a host profile prices every collective kind "
                                 f"{HOST_KINDS}; it has {kinds}")
        if self.rule not in RULES:
            raise UsageError(f"{self.name}: rule {self.rule!r}; choose one of {RULES}")

    def replace(self, **changes) -> "HardwareProfile":
        return dataclasses.replace(self, **changes)

    def weight_matmul_flops(self, weights: str) -> float:
        """The peak rate of the weight matmuls in a weight format: fp8 weights at the chip's
        fp8 rate (the matmul itself in fp8, as served on an H100), every other format at the
        bf16 peak (the paper's int8 is weight-only: its matmul runs in bf16)."""
        if weights != "fp8" or self.interconnect == "host":
            return self.peak_flops
        require_fp8(self, "fp8 weights")
        return self.fp8_flops

    def host_collective(self, kind: str) -> tuple[float, float, float, float]:
        """A host profile's (call_s, device_s, member_s, byte_s) for one collective kind."""
        return next(tuple(k[1:]) for k in self.host_collectives if k[0] == kind)


_TPU_V4 = HardwareProfile(
    name="tpu-v4",
    description="TPU v4, datasheet: the paper's chip (Pope et al. 2022, Section 4)",
    peak_flops=275e12,  # source: Pope et al. 2022, Section 4 (peak bf16 matmul)
    hbm_bytes=32 * 2**30,  # source: Pope et al. 2022, Section 4 (32 GiB per chip)
    hbm_bandwidth=1.2e12,  # source: Pope et al. 2022, Section 4
    interconnect="torus",  # source: Pope et al. 2022, Section 4 (3D torus)
    link_bandwidth=4.5e10,  # source: Pope et al. 2022, Section 4 (270 GB/s per chip over 6 links)
    hop_latency_s=1e-6,  # source: Pope et al. 2022, Section 3.1 (latency-bound collectives)
    torus_dims=3,
    max_side=16,  # source: TPU v4 pod is 4096 chips, 16x16x16 (Jouppi et al., ISCA 2023)
    wrap_unit=4,  # source: Jouppi et al., ISCA 2023, Section 2 (4x4x4 cubes joined by
    #              optical circuit switches wrap round; smaller slices do not)
    max_chips=4096,  # source: as max_side
)

PROFILES: dict[str, HardwareProfile] = {p.name: p for p in [
    _TPU_V4,
    # The datasheet chip with three fitted constants, under the honest `overlap` rule. The fit
    # leaves HBM at its datasheet bandwidth (its bound) and puts the rest of the measured
    # decode time in a fixed time per layer, the same for every layout; worst residual 8.0%
    # (high-throughput decode). Not fitted, and within 4%: bf16 decode per token at batch 64,
    # the serial block's slowdown (benchmarks/fit_calibrated.py prints both).
    _TPU_V4.replace(
        name="tpu-v4-calibrated",
        description="TPU v4 with three constants fitted to the paper's Table 2",
        flops_efficiency=0.713,  # source: benchmarks/fit_calibrated.py (fit to Table 2)
        hbm_efficiency=1.0,  # source: benchmarks/fit_calibrated.py (fit to Table 2, at its bound)
        layer_overhead_s=1.41e-4,  # source: benchmarks/fit_calibrated.py (fit to Table 2)
        rule="overlap",  # the schedule the paper runs (Looped CollectiveEinsum, Section 3.5)
    ),
    HardwareProfile(
        name="tpu-v5e",
        description="TPU v5e, datasheet",
        peak_flops=197e12,  # source: cloud.google.com/tpu/docs/v5e (peak bf16 per chip)
        hbm_bytes=16e9,  # source: cloud.google.com/tpu/docs/v5e (16 GB HBM2)
        # source: cloud.google.com/tpu/docs/v5e (819 GBps; the jax-ml scaling book's 8.1e11)
        hbm_bandwidth=819e9,
        interconnect="torus",  # source: cloud.google.com/tpu/docs/v5e (2D torus)
        # source: cloud.google.com/tpu/docs/v5e: 400 GB/s bidirectional per chip over 4 links
        link_bandwidth=400e9 / 4 / 2,
        hop_latency_s=1e-6,  # source: the TPU v4 figure (no v5e figure is published)
        torus_dims=2,  # source: cloud.google.com/tpu/docs/v5e (2D slices up to 16x16)
        max_side=16,  # source: cloud.google.com/tpu/docs/v5e (largest slice 16x16)
        wrap_unit=16,  # source: jax-ml scaling book, "How to think about TPUs" (wraparound
        #               only along a full side of 16: "a TPU v5e 8x16 will have a wraparound
        #               on the longer axis")
        wrap_each_axis=True,
        max_chips=256,  # source: cloud.google.com/tpu/docs/v5e (pod of 256 chips)
    ),
    HardwareProfile(
        name="tpu-v6e",
        description="TPU v6e (Trillium), datasheet",
        peak_flops=918e12,  # source: cloud.google.com/tpu/docs/v6e (918 TFLOPs bf16 per chip)
        hbm_bytes=32e9,  # source: cloud.google.com/tpu/docs/v6e (32 GB per chip)
        hbm_bandwidth=1638e9,  # source: cloud.google.com/tpu/docs/v6e (1638 GBps per chip)
        interconnect="torus",  # source: cloud.google.com/tpu/docs/v6e (2D torus)
        # source: cloud.google.com/tpu/docs/v6e: 800 GBps bidirectional per chip, 4 ICI ports
        link_bandwidth=800e9 / 4 / 2,
        hop_latency_s=1e-6,  # source: the TPU v4 figure (no v6e figure is published)
        torus_dims=2,  # source: cloud.google.com/tpu/docs/v6e (2D slices up to 16x16)
        max_side=16,  # source: cloud.google.com/tpu/docs/v6e (pod of 256 chips, 16x16)
        wrap_unit=16,  # source: jax-ml scaling book, "How to think about TPUs" (as v5e)
        wrap_each_axis=True,
        max_chips=256,  # source: cloud.google.com/tpu/docs/v6e (pod of 256 chips)
    ),
    HardwareProfile(
        name="tpu-v5p",
        description="TPU v5p, datasheet",
        peak_flops=459e12,  # source: cloud.google.com/tpu/docs/v5p (peak bf16 per chip)
        hbm_bytes=95 * 2**30,  # source: cloud.google.com/tpu/docs/v5p (95 GiB per chip)
        hbm_bandwidth=2765e9,  # source: cloud.google.com/tpu/docs/v5p (2765 GBps)
        interconnect="torus",  # source: cloud.google.com/tpu/docs/v5p (3D torus)
        # source: cloud.google.com/tpu/docs/v5p: 1200 GB/s bidirectional per chip, 6 links
        link_bandwidth=1200e9 / 6 / 2,
        hop_latency_s=1e-6,  # source: the TPU v4 figure (no v5p figure is published)
        torus_dims=3,
        max_side=16,  # source: cloud.google.com/tpu/docs/v5p (slices up to 16x16x16; the
        #              16x16x24 shape is left out: its 24 side is not a power of two)
        wrap_unit=4,  # source: cloud.google.com/tpu/docs/v5p (cubes of 4x4x4 joined by OCS)
        max_chips=4096,  # source: as max_side
    ),
    HardwareProfile(
        name="a100-80g",
        description="NVIDIA A100 80GB SXM in 8-GPU HGX/DGX nodes, datasheet",
        peak_flops=312e12,  # source: NVIDIA A100 datasheet (BF16 tensor core, dense)
        hbm_bytes=80e9,  # source: NVIDIA A100 datasheet (80 GB HBM2e)
        hbm_bandwidth=2039e9,  # source: NVIDIA A100 datasheet (2,039 GB/s, SXM)
        interconnect="switch",  # source: NVIDIA DGX A100 (NVSwitch, all-to-all in a node)
        link_bandwidth=600e9 / 2,  # source: NVIDIA A100 datasheet (NVLink 600 GB/s, both ways)
        hop_latency_s=1e-6,  # source: order of one NCCL ring step inside a node (~1 µs)
        node_size=8,  # source: NVIDIA DGX A100 (8 GPUs per node)
        network_bandwidth=200e9 / 8,  # source: NVIDIA DGX A100 (one 200 Gb/s HDR NIC per GPU)
        network_latency_s=5e-6,  # source: order of an InfiniBand RDMA round trip (~µs)
        max_chips=4096,
    ),
    HardwareProfile(
        name="h100-sxm",
        description="NVIDIA H100 SXM5 in 8-GPU HGX/DGX nodes, datasheet",
        peak_flops=989e12,  # source: NVIDIA H100 datasheet (BF16 tensor core, dense)
        hbm_bytes=80e9,  # source: NVIDIA H100 datasheet (80 GB HBM3)
        hbm_bandwidth=3.35e12,  # source: NVIDIA H100 datasheet (3.35 TB/s, SXM)
        interconnect="switch",  # source: NVIDIA DGX H100 (NVSwitch, all-to-all in a node)
        link_bandwidth=900e9 / 2,  # source: NVIDIA H100 datasheet (NVLink 900 GB/s, both ways)
        hop_latency_s=1e-6,  # source: order of one NCCL ring step inside a node (~1 µs)
        node_size=8,  # source: NVIDIA DGX H100 (8 GPUs per node)
        network_bandwidth=400e9 / 8,  # source: NVIDIA DGX H100 (one 400 Gb/s NDR NIC per GPU)
        network_latency_s=5e-6,  # source: order of an InfiniBand RDMA round trip (~µs)
        max_chips=4096,
        # source: NVIDIA H100 datasheet (FP8 tensor core 3,958 TFLOPS with sparsity, half
        # of it dense: twice the dense BF16 rate)
        fp8_flops=1979e12,
    ),
    HardwareProfile(
        name="h200",
        description="NVIDIA H200 SXM in 8-GPU HGX/DGX nodes, datasheet",
        # source: NVIDIA H200 datasheet (BF16 tensor core 1,979 TFLOPS with sparsity, half of
        # it dense: the H100's GH100 compute)
        peak_flops=989e12,
        hbm_bytes=141e9,  # source: NVIDIA H200 datasheet (141 GB HBM3e)
        hbm_bandwidth=4.8e12,  # source: NVIDIA H200 datasheet (4.8 TB/s, SXM)
        interconnect="switch",  # source: NVIDIA DGX H200 (NVSwitch, all-to-all in a node)
        link_bandwidth=900e9 / 2,  # source: NVIDIA H200 datasheet (NVLink 900 GB/s, both ways)
        hop_latency_s=1e-6,  # source: the H100 figure (the same NVLink and NVSwitch)
        node_size=8,  # source: NVIDIA DGX H200 (8 GPUs per node)
        network_bandwidth=400e9 / 8,  # source: NVIDIA DGX H200 (one 400 Gb/s NIC per GPU)
        network_latency_s=5e-6,  # source: the H100 figure (the same InfiniBand)
        max_chips=4096,
        # source: NVIDIA H200 datasheet (FP8 tensor core 3,958 TFLOPS with sparsity, half of
        # it dense)
        fp8_flops=1979e12,
    ),
]}


def fp8_chips() -> list[str]:
    """The profiles whose chips compute in fp8 (`fp8_flops`)."""
    return [name for name, p in PROFILES.items() if p.fp8_flops]


def require_fp8(hw: HardwareProfile, what: str) -> None:
    """A clear error where `what` (fp8 weights) would be priced on a chip without fp8."""
    if not hw.fp8_flops and hw.interconnect != "host":
        raise UsageError(f"{hw.name} has no fp8 matmul, so {what} cannot be priced on it; "
                         f"fp8 runs on {', '.join(fp8_chips())}: choose one of those, or "
                         f"int8 weights (the paper's, weight-only)")

# The meshes the paper ran for each chip count (Pope et al. 2022, Section 4); the planner weighs
# every factorisation, these are what the book and `tpuinfer paper` show beside its choice.
PAPER_MESHES = {8: (2, 2, 2), 16: (2, 4, 2), 32: (4, 2, 4), 64: (4, 4, 4), 128: (8, 4, 4),
                256: (4, 8, 8)}


# ---- the host profile ---------------------------------------------------------------------
def host_profile_path() -> Path:
    return cache_dir() / "host.json"


def save_host_profile(profile: HardwareProfile) -> Path:
    """Write `profile` as the `host` profile (what `tpuinfer calibrate` calls)."""
    path = host_profile_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(dataclasses.asdict(profile.replace(name="host")), indent=1))
    return path


def load_profile(path: Path) -> HardwareProfile:
    try:
        fields = json.loads(Path(path).read_text())
        fields["host_collectives"] = tuple(tuple(k) for k in fields.get("host_collectives", ()))
        return HardwareProfile(**fields)
    except (OSError, ValueError, TypeError) as err:
        raise UsageError(f"cannot read the hardware profile {path}: {err}; run `tpuinfer "
                         "calibrate` to write it again") from None


def get_hardware(name: str | HardwareProfile = "tpu-v4") -> HardwareProfile:
    if isinstance(name, HardwareProfile):
        return name
    if name in PROFILES:
        return PROFILES[name]
    if name == "host":
        path = host_profile_path()
        if not path.exists():
            raise UsageError(f"no host profile at {path}: run `tpuinfer calibrate` to measure "
                             "this machine (or set TPUINFER_CACHE to where one was written)")
        return load_profile(path)
    raise UsageError(f"unknown hardware {name!r}; choose one of {', '.join(hardware_names())}")


def hardware_names() -> list[str]:
    return list(PROFILES) + ["host"]


# ---- meshes -------------------------------------------------------------------------------
def _mesh_allowed(hw: HardwareProfile, shape) -> bool:
    if hw.interconnect in ("switch", "host"):
        return True
    if any(s & (s - 1) or s > hw.max_side for s in shape):  # sides are powers of two
        return False
    return all(s == 1 for s in shape[hw.torus_dims:])


def _chips_allowed(hw: HardwareProfile, n: int) -> bool:
    if n < 1 or n > hw.max_chips:
        return False
    if hw.interconnect == "host":
        return True
    if hw.interconnect == "switch":
        return n <= hw.node_size or n % hw.node_size == 0  # beyond a node: whole nodes
    return any(_mesh_allowed(hw, s) for s in factorizations(n))


def chip_counts(hw: HardwareProfile | str, lo: int = 1, hi: int | None = None) -> list[int]:
    """Every chip count from lo to hi that some mesh of `hw` allows."""
    hw = get_hardware(hw)
    hi = min(hi or hw.max_chips, hw.max_chips)
    if hw.interconnect == "torus":  # powers of two only: skip the rest quickly
        return [n for n in (2**k for k in range(hi.bit_length())) if lo <= n <= hi
                and _chips_allowed(hw, n)]
    return [n for n in range(lo, hi + 1) if _chips_allowed(hw, n)]


def mesh_shapes(hw: HardwareProfile | str, chips: int) -> list[tuple[int, int, int]]:
    """Every (X, Y, Z) with X·Y·Z = chips that `hw` can run; a clear error if none."""
    hw = get_hardware(hw)
    shapes = [s for s in factorizations(chips) if _mesh_allowed(hw, s)] \
        if _chips_allowed(hw, chips) else []
    if not shapes:
        allowed = chip_counts(hw)
        near = [n for n in (max((a for a in allowed if a < chips), default=None),
                            min((a for a in allowed if a > chips), default=None)) if n]
        if hw.interconnect == "torus":
            why = (f"its slices have power-of-two sides of at most {hw.max_side} chips "
                   f"({hw.torus_dims}D torus), {hw.max_chips} chips at most")
        elif hw.interconnect == "host":
            why = f"this machine's emulated mesh has {hw.max_chips} devices"
        else:
            why = (f"beyond one node of {hw.node_size} it takes whole nodes, "
                   f"{hw.max_chips} GPUs at most")
        raise UsageError(f"{hw.name} has no mesh of {chips} chips: {why}; try "
                         f"{' or '.join(str(n) for n in near)} chips")
    return shapes


def check_mesh(hw: HardwareProfile | str, mesh_shape) -> tuple[int, int, int]:
    hw = get_hardware(hw)
    shape = tuple(int(s) for s in mesh_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise UsageError(f"a mesh is three positive sizes (X, Y, Z), got {mesh_shape!r}")
    allowed = mesh_shapes(hw, math.prod(shape))
    if shape not in allowed:
        raise UsageError(f"{hw.name} cannot run the mesh {'x'.join(map(str, shape))}; its "
                         f"meshes of {math.prod(shape)} chips are "
                         + ", ".join("x".join(map(str, s)) for s in allowed))
    return shape


# ---- links available to a collective group ------------------------------------------------
@dataclass(frozen=True)
class GroupLinks:
    """What a group of chips spanning some mesh axes has to communicate with.

    bandwidth: bytes/s each chip can send into the group (both directions of every link the
      group uses); an all-gather of V output bytes takes V·(K−1)/K / bandwidth.
    a2a_distance: mean hops a byte of an all-to-all travels (its own chunk counted as 0), so
      an all-to-all of V input bytes takes V·a2a_distance / bandwidth; on one ring of K chips it
      is about K/4: a quarter of an all-gather of the K·V-byte tensor (Pope et al. 2022,
      Section 3.1).
    steps, step_latency_s: neighbour steps of a ring collective and the latency of each.
    neighbour_bandwidth: bytes/s from a chip to one neighbour, one way (a collective permute
      round a ring: one link on a torus, the chip's own link into the switch).
    """
    chips: int
    bandwidth: float
    a2a_distance: float
    steps: int
    step_latency_s: float
    neighbour_bandwidth: float


def group_links(hw: HardwareProfile | str, mesh_shape, axes) -> GroupLinks:
    hw = get_hardware(hw)
    return _group_links(hw, tuple(mesh_shape), tuple(sorted(set(axes), key=AXES.index)))


def wrapped_axes(hw: HardwareProfile | str, mesh_shape) -> tuple[bool, bool, bool]:
    """Per mesh axis x, y, z: whether it is a ring (wraparound) on this torus slice (the
    module docstring): every axis of a slice of whole wraparound units, or, on a chip that
    wraps each axis on its own, each full side. Axes of one chip count as rings (nothing to
    wrap); a switch or host has no rings."""
    hw = get_hardware(hw)
    shape = tuple(mesh_shape)
    if hw.interconnect != "torus":
        return (False, False, False)
    sides = shape[:hw.torus_dims]
    if hw.wrap_each_axis:
        return tuple(s == 1 or s % hw.wrap_unit == 0 for s in sides) + \
            (True,) * (3 - len(sides))
    whole = all(s % hw.wrap_unit == 0 for s in sides)
    return (whole,) * 3


def wraps(hw: HardwareProfile | str, mesh_shape) -> bool:
    """Whether a torus slice of this shape has wraparound links on every axis."""
    hw = get_hardware(hw)
    return hw.interconnect == "torus" and all(wrapped_axes(hw, mesh_shape))


@functools.lru_cache(maxsize=4096)
def _group_links(hw: HardwareProfile, mesh_shape, axes) -> GroupLinks:
    sides = [mesh_shape[AXES.index(a)] for a in axes]
    k = math.prod(sides)
    if k == 1:
        return GroupLinks(1, math.inf, 0.0, 0, 0.0, math.inf)
    if hw.interconnect == "torus":
        ring = wrapped_axes(hw, mesh_shape)
        return _torus_links(hw, [(s, ring[AXES.index(a)]) for s, a in zip(sides, axes)
                                 if s > 1])
    return _switch_links(hw, mesh_shape, axes, k)


def _torus_links(hw: HardwareProfile, sides) -> GroupLinks:
    # Dimension-parallel collectives use every axis the group spans at once, so bandwidth adds
    # over axes (jax-ml scaling book, "sharded matmuls": multi-axis all-gathers). `sides`:
    # (chips, whether that axis is a ring) per axis of the group.
    bandwidth = distance = steps = 0
    for s, ring in sides:
        if ring:  # a bidirectional ring: both directions of both neighbours' links
            bandwidth += 2 * hw.link_bandwidth
            distance += (s * s // 4) / s  # mean ring distance, own chip included
            steps += s // 2  # each shard travels both ways: half the ring
        else:  # a line: its middle link carries half of every shard each way
            bandwidth += 2 * hw.link_bandwidth * (s - 1) / s
            distance += (s * s - 1) / (3 * s)  # mean line distance, own chip included
            steps += s - 1  # the end chips' shards cross the whole line
    return GroupLinks(math.prod(s for s, _ in sides), bandwidth, distance, steps,
                      hw.hop_latency_s, hw.link_bandwidth)


def _switch_links(hw: HardwareProfile, mesh_shape, axes, k) -> GroupLinks:
    # The groups are the index sets that vary only along `axes` (row-major device order).
    ids = np.arange(math.prod(mesh_shape)).reshape(mesh_shape)
    keep = [i for i, a in enumerate(AXES) if a not in axes]
    groups = np.transpose(ids, keep + [AXES.index(a) for a in axes]).reshape(-1, k)
    nodes = groups // hw.node_size
    inside = bool(np.all(nodes == nodes[:, :1]))
    bandwidth = hw.link_bandwidth if inside else hw.network_bandwidth
    latency = hw.hop_latency_s if inside else hw.network_latency_s
    # a switch delivers every chunk in one hop; a ring collective still takes K−1 steps
    return GroupLinks(k, bandwidth, (k - 1) / k, k - 1, latency, bandwidth)
