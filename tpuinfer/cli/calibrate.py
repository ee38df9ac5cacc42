"""`tpuinfer calibrate`: micro-benchmark this machine's emulated mesh and write the `host`
hardware profile (`tpuinfer.calibrate` runs and fits the benchmarks; this words the fit)."""
from __future__ import annotations

import dataclasses
import math

from ..hardware import save_host_profile
from ..report import progress_bar
from .options import add_json_flag


def register(sub) -> None:
    p = sub.add_parser("calibrate", help="micro-benchmark this machine's emulated mesh and write "
                                         "the `host` hardware profile (under a minute)")
    add_json_flag(p)
    p.set_defaults(func=run)


def run(args):
    # the engine (JAX), imported as the command runs: registering it must not start JAX
    from .. import calibrate as benchmarks
    from ..mesh import EmulationError, emulate  # JAX: as above

    try:
        emulate(math.prod(benchmarks.FULL))
    except EmulationError:
        pass  # already running: calibrate() says if it has too few devices
    with progress_bar("calibrate") as progress:
        cal = benchmarks.calibrate(progress)
    path = save_host_profile(cal.profile)
    lines = summary(cal) + [f"wrote the host profile to {path}"]
    obj = dataclasses.asdict(cal.profile) | {"path": str(path), "log": lines[:-1]}
    return obj, "\n".join(lines)


def summary(cal) -> list[str]:
    """The fitted numbers of a `calibrate.Calibration` in words, one line per stage."""
    hw = cal.profile
    lines = [f"launch: {cal.launch_fixed_s * 1e6:.0f} µs + {hw.device_overhead_s * 1e6:.1f} µs "
             "per device",
             f"matmul: {hw.peak_flops / 1e9:.1f} GFLOP/s (f32, whole host)",
             f"memory: {hw.hbm_bandwidth / 1e9:.2f} GB/s streamed by one-row matmuls "
             "(whole host)",
             f"multi-row weights: "
             f"{hw.multirow_weight_bandwidth / cal.multirow_efficiency / 1e9:.2f} GB/s "
             "(whole host)",
             f"activations: {hw.activation_bandwidth / cal.activation_efficiency / 1e9:.2f} GB/s "
             "through thin matmuls (whole host)",
             f"attention scores: {hw.score_bandwidth / 1e9:.2f} GB/s written, softmaxed and "
             "read (whole host)"]
    benchmarked = cal.micro_collectives or tuple(  # as benchmarked, before the step fit
        (kind, call_s / (cal.call_factor or 1), *(x / cal.collective_factor for x in c))
        for kind, call_s, *c in hw.host_collectives)
    for kind, *unscaled in benchmarked:
        # a zero byte cost: the fit found no time growing with bytes (not an infinite link)
        per_byte = (f"{1 / unscaled[3] / 1e9:.2f} GB/s" if unscaled[3] else
                    "no time per byte within the sizes measured")
        lines.append(f"{kind}: {unscaled[0] * 1e6:.0f} µs + {unscaled[1] * 1e6:.2f} µs/device + "
                     f"{unscaled[2] * 1e9:.1f} ns/device/member + {per_byte}")
    lines += [f"steps: FLOP/s x{hw.flops_efficiency:.2f}, multi-row weight bytes/s "
              f"x{cal.multirow_efficiency:.2f}, activation bytes/s "
              f"x{cal.activation_efficiency:.2f}, collectives x{cal.collective_factor:.2f} "
              f"(their fixed part x{cal.call_factor:.2f}), "
              f"{hw.layer_overhead_s * 1e6:.1f} µs per layer per device, gathered weights "
              f"copied into place at {hw.relayout_bandwidth / 1e9:.1f} GB/s; worst residual "
              f"{cal.worst_residual:.0%} over {cal.steps} steps" + _unpinned(cal.unpinned),
              f"drift probe (a 4x4x4 decode step): {hw.probe_s * 1e3:.2f} ms, the median beside "
              f"the steps (its slowest {cal.probe_spread:.0%} above its fastest; each step's "
              "time scaled by the probe beside it); every measurement times it again and "
              "scales its prediction by the ratio",
              f"calibrated in {cal.seconds:.0f} s"]
    return lines


def _unpinned(names: tuple[str, ...]) -> str:
    if not names:
        return ""
    it = "it" if len(names) == 1 else "them"
    return f" ({', '.join(names)}: the steps left {it} out, so the micro-benchmark's is kept)"
