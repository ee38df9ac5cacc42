"""Fit `tpu-v4-calibrated`: three efficiencies of the TPU v4 datasheet profile, to Table 2.

    .venv/bin/python benchmarks/fit_calibrated.py

The parameters: the achieved fraction of peak FLOP/s (`flops_efficiency`), of HBM bandwidth
(`hbm_efficiency`), and a fixed overhead per collective call (`collective_overhead_s`). Each
Table 2 column is priced as the paper ran it (its layouts on the 4x4x4 slice, PaLM 540B with
heads padded to 64) and the fit minimises the squared relative error of the four latencies,
under each combination rule; it prints both fits and their residuals, and the rule with the
smaller worst residual is the one hardware.py records. Nothing else is fitted.
"""
from __future__ import annotations

import numpy as np

from tpuinfer.hardware import get_hardware
from tpuinfer.paper import CHIPS, DECODE_PER_TOKEN_S, MODEL, TABLE2, measured_config

NAMES = ("flops_efficiency", "hbm_efficiency", "collective_overhead_s")
LOWER, UPPER = np.array([0.05, 0.05, 0.0]), np.array([1.0, 1.0, 1e-3])


def predict(params, rule: str) -> np.ndarray:
    hw = get_hardware("tpu-v4").replace(**dict(zip(NAMES, params)), rule=rule)
    return np.array([measured_config(c, hw).latency_s for c in TABLE2])


def loss(params, rule: str) -> float:
    measured = np.array([c.latency_s for c in TABLE2])
    return float(np.sum((predict(params, rule) / measured - 1) ** 2))


def nelder_mead(f, x0, scale, iters=400):
    """Minimise f inside the box [LOWER, UPPER] (points are clipped into it)."""
    clip = lambda x: np.clip(x, LOWER, UPPER)  # noqa: E731
    simplex = [clip(x0)] + [clip(x0 + np.eye(len(x0))[i] * scale[i]) for i in range(len(x0))]
    values = [f(x) for x in simplex]
    for _ in range(iters):
        order = np.argsort(values)
        simplex, values = [simplex[i] for i in order], [values[i] for i in order]
        centre = np.mean(simplex[:-1], axis=0)
        worst = simplex[-1]
        trial = clip(centre + (centre - worst))
        ft = f(trial)
        if ft < values[0]:
            expanded = clip(centre + 2 * (centre - worst))
            fe = f(expanded)
            simplex[-1], values[-1] = (expanded, fe) if fe < ft else (trial, ft)
        elif ft < values[-2]:
            simplex[-1], values[-1] = trial, ft
        else:
            inner = clip(centre + 0.5 * (worst - centre))
            fi = f(inner)
            if fi < values[-1]:
                simplex[-1], values[-1] = inner, fi
            else:  # shrink towards the best point
                simplex = [simplex[0]] + [clip(simplex[0] + 0.5 * (x - simplex[0]))
                                          for x in simplex[1:]]
                values = [values[0]] + [f(x) for x in simplex[1:]]
    best = int(np.argmin(values))
    return simplex[best], values[best]


def fit(rule: str):
    best = None
    for start in ([0.8, 0.8, 5e-6], [0.6, 0.5, 2e-5], [0.9, 0.3, 1e-6]):
        x, v = nelder_mead(lambda p: loss(p, rule), np.array(start),
                           np.array([0.1, 0.1, 1e-5]))
        if best is None or v < best[1]:
            best = (x, v)
    return best


def main():
    measured = np.array([c.latency_s for c in TABLE2])
    print(f"Table 2 ({MODEL}, {CHIPS} chips, mesh 4x4x4), the paper's layouts per column")
    datasheet = {rule: predict([1.0, 1.0, 0.0], rule) for rule in ("sum", "overlap")}
    results = {}
    for rule in ("sum", "overlap"):
        params, _ = fit(rule)
        pred = predict(params, rule)
        worst = float(np.max(np.abs(pred / measured - 1)))
        results[rule] = (params, worst)
        print(f"\nrule {rule}: " + ", ".join(f"{n} = {v:.3g}" for n, v in zip(NAMES, params))
              + f"  (worst residual {worst:.1%})")
        print(f"  {'column':26s} {'paper':>9s} {'datasheet':>10s} {'fitted':>9s} {'residual':>9s}")
        for c, m, d, p in zip(TABLE2, measured, datasheet[rule], pred):
            print(f"  {c.name:26s} {m:9.4g} {d:10.4g} {p:9.4g} {p / m - 1:+9.1%}")
    rule = min(results, key=lambda r: results[r][1])
    params = results[rule][0]
    print(f"\nhardware.py records rule {rule!r}: "
          + ", ".join(f"{n}={v:.3g}" for n, v in zip(NAMES, params)))
    # Out of sample: the paper's bf16 decode per token at batch 64 was not fitted.
    hw = get_hardware("tpu-v4").replace(**dict(zip(NAMES, params)), rule=rule)
    bf16 = measured_config(TABLE2[1], hw, "bf16").per_token_s
    print(f"not fitted: decode per token, batch 64, bf16: paper "
          f"{DECODE_PER_TOKEN_S['bf16'] * 1e3:.1f} ms, fitted profile {bf16 * 1e3:.1f} ms "
          f"({bf16 / DECODE_PER_TOKEN_S['bf16'] - 1:+.1%})")


if __name__ == "__main__":
    main()
