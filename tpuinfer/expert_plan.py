"""What the planner says about a mixture of experts: the expert-parallel degree it chose for a
phase, the terms that decided it, and the best it found at every other degree.

An expert-parallel layout (`tpuinfer.layouts._experts`) splits the chips into expert axes e
(degree |e|: each chip holds M/|e| experts) and tensor axes t (degree |t|: each expert's F,
and attention's heads, split over them). The planner prices every layout on every mesh; this
module groups what it priced by |e|, so that the choice reads as one between degrees:
fewer expert weights a chip reads and fewer all-to-all bytes a chip sends as |e| grows,
against all-to-alls over more chips and attention held by more of them.
"""
from __future__ import annotations

import math

from .experts import experts_touched
from .layouts.registry import FFN

TERMS = ("compute_s", "weights_s", "kv_s", "comm_s")
NAMES = {"compute_s": "compute", "weights_s": "weight reads", "kv_s": "KV reads",
         "comm_s": "collectives"}


def degrees(p) -> tuple[int, int]:
    """(expert-parallel degree |e|, tensor-parallel degree |t|) of a priced configuration."""
    axes = FFN[p.layout.ffn].AXES
    size = dict(zip("xyz", p.mesh_shape))
    return (math.prod(size[a] for a in axes.batch), math.prod(size[a] for a in axes.embed))


def _all_to_all(p) -> tuple[float, float]:
    """(bytes per chip, seconds) of the expert all-to-alls over a phase's steps: those over
    the expert axes (attention by batch moves its own over the tensor axes)."""
    e = FFN[p.layout.ffn].AXES.batch
    moved = [t for t in p.first.collectives
             if t.collective.kind == "all-to-all" and t.collective.axes == e]
    nbytes = sum(t.collective.bytes * t.collective.count for t in moved)
    return nbytes * p.steps, sum(t.total_s for t in moved) * p.steps


def summary(cfg, p) -> dict:
    """The expert-parallel facts of one priced phase of `cfg` (`planner.PhaseEstimate`), for
    its JSON: degrees, experts a chip holds, the capacity C, the experts a step is expected to
    touch (uniform routing: `tpuinfer.experts`), and the expert all-to-alls' bytes per chip
    and time over the phase."""
    ep, tp = degrees(p)
    tokens = p.first.tokens
    nbytes, secs = _all_to_all(p)
    return {"expert_parallel": ep, "tensor_parallel": tp, "experts_per_chip": cfg.M // ep,
            "capacity": cfg.capacity(tokens),
            "experts_touched_per_step": experts_touched(cfg.M, cfg.top_k, p.batch * tokens),
            "all_to_all_bytes_per_chip": nbytes, "all_to_all_s": secs}


def best_per_degree(fitting: list, unfit: list) -> dict:
    """{|e|: the best configuration at that degree} (a fitting one where there is one)."""
    out = {}
    for p in sorted(unfit, key=lambda q: q.latency_s) + sorted(fitting,
                                                               key=lambda q: q.latency_s):
        d = degrees(p)[0]
        if d not in out or (p.fits and (not out[d].fits or p.latency_s < out[d].latency_s)):
            out[d] = p
    return dict(sorted(out.items()))


def _ms(s: float) -> str:
    """Three significant digits in s, ms or µs (as `report.seconds`, which builds on the
    planner and so cannot be imported here)."""
    return f"{s:.3g} s" if s >= 1 else f"{s * 1e3:.3g} ms" if s >= 1e-3 else f"{s * 1e6:.3g} µs"


def why(best, per_degree: dict) -> str:
    """One sentence: the chosen degree against the best at the next-best degree, by the terms
    that differ most (or why no other degree runs)."""
    ep, tp = degrees(best)
    head = f"expert-parallel {ep} x tensor-parallel {tp} ({best.layout.ffn})"
    others = [q for d, q in per_degree.items() if d != ep]
    fitting = [q for q in others if q.fits]
    if not others:
        return f"{head}: the only degree that runs on these chips"
    if not fitting:
        needs = ", ".join(f"{degrees(q)[0]}: {q.memory_per_chip_bytes / 2**30:.1f} GiB"
                          for q in others)
        return f"{head}: every other degree needs more memory than a chip has ({needs})"
    rival = min(fitting, key=lambda q: q.latency_s)
    diff = {k: getattr(rival, k) - getattr(best, k) for k in TERMS}
    named = sorted(diff, key=lambda k: -abs(diff[k]))[:2]
    r_ep, r_tp = degrees(rival)
    return (f"{head}: {_ms(best.latency_s)} against {_ms(rival.latency_s)} at the next best, "
            f"{r_ep} x {r_tp} ({rival.layout.ffn}), whose "
            + " and ".join(f"{NAMES[k]} take {_ms(abs(diff[k]))} "
                           f"{'more' if diff[k] > 0 else 'less'}" for k in named))
