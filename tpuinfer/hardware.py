"""Hardware profiles: one table, every constant with its source.

A profile says how fast a chip computes and reads its HBM, and how the mesh axes (x, y, z) map
onto its links, so that the cost model can price a collective over any group of axes:

- TPU (`interconnect="torus"`): the slices each chip comes in, which of their axes wrap
  round, and how a logical mesh (x, y, z) sits on them are `tpuinfer.slices`'s; a profile
  names its torus (`torus_dims`, `max_side`, `wrap_unit`, `wrap_each_axis`) and its links
  (`link_bandwidth` per link and direction, `hop_latency_s` per hop).
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

Three profiles are calibrated, each its datasheet chip with at most three named constants
fitted only to the public measurements `tpuinfer/data/measurements.json` names as its fit's
(`fitted_by`), by a script in `benchmarks/` that prints the fitted rows' residuals and then
every held-out row: `tpu-v4-calibrated` to the paper's Table 2 (fit_calibrated.py),
`tpu-v5e-calibrated` to three jax-llm-examples Llama 3.1 70B decode steps (fit_v5e.py),
`h100-calibrated` to two of NVIDIA's NIM Llama 3 70B rows (fit_h100.py). No profile has a
fixed cost per layer; nothing else is tuned (`tpuinfer accuracy` prints how far each is from
every measurement).
A `host` profile (this machine's emulated mesh) is written by `tpuinfer calibrate` to
`$TPUINFER_CACHE/host.json` (default `~/.cache/tpuinfer/host.json`) and read from there; its
sources are the micro-benchmarks of `tpuinfer.calibrate`.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from .errors import UsageError
from .paths import cache_dir
from .terms import KINDS
# the slices and meshes each chip comes in, and the links a collective group uses, live in
# `slices`; these names are asked of `hardware` by the planner, the chapters and the tests
from .slices import (PAPER_MESHES, GroupLinks, check_mesh, chip_counts, group_links,
                     mesh_shapes, slice_shapes, wrapped_axes, wraps)

__all__ = ["RULES", "INTERCONNECTS", "HOST_KINDS", "HardwareProfile", "PROFILES", "fp8_chips",
           "require_fp8", "host_profile_path", "save_host_profile", "load_profile",
           "get_hardware", "hardware_names",
           # re-exported from `slices` (above)
           "PAPER_MESHES", "GroupLinks", "check_mesh", "chip_counts", "group_links",
           "mesh_shapes", "slice_shapes", "wrapped_axes", "wraps"]

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
    link_efficiency: float = 1.0  # achieved fraction of the link bandwidth (collectives' bytes)
    collective_overhead_s: float = 0.0  # fixed cost of launching one collective
    # How the cost model combines terms on this chip (cost.estimate): every chip profile takes
    # `overlap`, the rule of what overlaps stated in tpuinfer/cost.py.
    rule: str = "overlap"
    # A host profile's fixed costs of a step beyond its matmuls and collectives, per step and
    # per layer and device (its devices take turns on the host's cores); 0 on every chip,
    # whose fixed costs are its collectives' hops and launches (`tpuinfer.cost`).
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
    # bytes/s at which attention writes, softmaxes and reads back its f32 scores
    # (`StepTerms.score_bytes`); 0: not priced, as the paper's model leaves them out (on a chip
    # they stay on-chip, fused). A host sets it: on XLA:CPU a head of 8 dimensions makes
    # attention a pass over its scores, whose QK^T and PV FLOPs take a tenth of its time.
    score_bandwidth: float = 0.0
    # dense fp8 (e4m3) matmul FLOP/s per chip; 0: the chip has no fp8 matmul, and fp8 weights
    # are not priced on it (`require_fp8`). A host (the emulated mesh) runs fp8 weights
    # dequantized to its activations, at `peak_flops`.
    fp8_flops: float = 0.0
    # host only: the drift probe's seconds when the profile was calibrated (`tpuinfer.drift`);
    # a measurement scales its host prediction by the probe's time then against this. 0: no
    # probe (a profile written before it existed), no scaling.
    probe_s: float = 0.0

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

_TPU_V5E = HardwareProfile(
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
)

PROFILES: dict[str, HardwareProfile] = {p.name: p for p in [
    _TPU_V4,
    # The datasheet chip with three constants fitted to Table 2 (benchmarks/fit_calibrated.py,
    # which prints the fit's residuals and then every held-out TPU v4 row).
    _TPU_V4.replace(
        name="tpu-v4-calibrated",
        description="TPU v4 with three constants fitted to the paper's Table 2",
        flops_efficiency=0.76,  # source: benchmarks/fit_calibrated.py (fit to Table 2)
        link_efficiency=0.6454,  # source: benchmarks/fit_calibrated.py (fit to Table 2)
        hop_latency_s=4.257e-6,  # source: benchmarks/fit_calibrated.py (fit to Table 2)
    ),
    _TPU_V5E,
    # TPU v5e with three constants fitted to three public Llama 3.1 70B decode steps on a v5e-16
    # (benchmarks/fit_v5e.py, which prints the fit's residuals and every held-out v5e row).
    _TPU_V5E.replace(
        name="tpu-v5e-calibrated",
        description="TPU v5e with three constants fitted to three jax-llm-examples rows",
        flops_efficiency=0.4324,  # source: benchmarks/fit_v5e.py
        link_efficiency=0.7403,  # source: benchmarks/fit_v5e.py
        # source: benchmarks/fit_v5e.py, at its lower bound: the batch-8 step leaves no time
        # for hops (at the datasheet's 1 µs they alone would take 1.9 ms of its 6.29)
        hop_latency_s=0.0,
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
# An H100 with named constants fitted to public Llama 3 70B serving measurements
# (benchmarks/fit_h100.py, which prints the fit's residuals and every held-out H100 row).
PROFILES["h100-calibrated"] = PROFILES["h100-sxm"].replace(
    name="h100-calibrated",
    description="H100 SXM with constants fitted to NVIDIA's published Llama 3 70B rows",
    hbm_efficiency=0.5958,  # source: benchmarks/fit_h100.py
    flops_efficiency=0.737,  # source: benchmarks/fit_h100.py
)


def fp8_chips() -> list[str]:
    """The profiles whose chips compute in fp8 (`fp8_flops`)."""
    return [name for name, p in PROFILES.items() if p.fp8_flops]


def require_fp8(hw: HardwareProfile, what: str) -> None:
    """A clear error where `what` (fp8 weights) would be priced on a chip without fp8."""
    if not hw.fp8_flops and hw.interconnect != "host":
        raise UsageError(f"{hw.name} has no fp8 matmul, so {what} cannot be priced on it; "
                         f"fp8 runs on {', '.join(fp8_chips())}: choose one of those, or "
                         f"int8 weights (the paper's, weight-only)")


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
