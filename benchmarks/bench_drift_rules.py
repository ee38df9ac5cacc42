"""How should the drift probe's readings become a step's drift factor? Compared on the same
measurements.

`bench_measure.py sweep --save FILE` (or `runs N --save DIR`) keeps, for every step of a sweep,
its measured time, the model's time and the probe's two readings beside it (when, seconds).
This script scores three rules on those same steps, so that the rules differ and nothing else
(the machine moves from one run to the next by more than the rules differ):

- beside: the mean of the step's own two readings (the rule `measure` uses);
- window: the median of the process's last `WINDOW` readings, none taken more than `WINDOW_S`
  seconds before the step began (tried in issue 37's second session, to average away one
  reading's noise);
- none: no factor, the model's time as calibrated.

Each is scored as `bench_measure.py` scores a sweep: every pass of each step, each predicted
with its own factor (`bench_measure.over_passes`), and per group the median and worst of
|predicted - measured| / measured against 20% and 40%. The
calibration behind each file scaled its own steps by the rule it ran with; only the
measurements' side differs here.

    python benchmarks/bench_drift_rules.py runs/*.json
"""
import json
import statistics
import sys

from bench_measure import FITTED, TARGET_MEDIAN, TARGET_WORST, over_passes

RULES = ("beside", "window", "none")
WINDOW, WINDOW_S = 5, 20.0  # the window rule: its last five readings, none older than 20 s


def factors(configurations: list[dict]) -> dict[tuple[int, int], dict[str, float]]:
    """(configuration, pass) -> each rule's probe time for that step, from the saved readings
    (the readings of every step, in the order they were taken, are the process's sequence)."""
    steps = sorted(((p["readings"], i, k) for i, c in enumerate(configurations)
                    for k, p in enumerate(c["passes"]) if p.get("readings")),
                   key=lambda s: s[0][0][0])
    taken: list[tuple[float, float]] = []
    out = {}
    for (before, after), i, k in steps:
        taken += [tuple(before), tuple(after)]
        recent = [s for t, s in taken[-WINDOW:] if t >= before[0] - WINDOW_S]
        out[(i, k)] = {"beside": (before[1] + after[1]) / 2,
                       "window": statistics.median(recent)}
    return out


def score(path: str) -> dict[str, dict]:
    """rule -> {group: (median, worst)} and "met", for one saved sweep."""
    with open(path) as f:
        saved = json.load(f)
    reference = saved["host_profile"]["probe_s"]
    configurations = saved["configurations"]
    probe = factors(configurations)
    out = {}
    for rule in RULES:
        errors: dict[str, list[float]] = {}
        for i, c in enumerate(configurations):
            if c["group"] == FITTED:
                continue
            passes = []
            for k, p in enumerate(c["passes"]):
                model_s = p["predicted_s"] / p["drift"]
                factor = 1.0 if rule == "none" else probe[(i, k)][rule] / reference
                passes.append((p["measured_s"], model_s * factor, factor))
            measured, _, predicted = over_passes(passes)
            errors.setdefault(c["group"], []).append(abs(predicted / measured - 1))
        groups = {g: (statistics.median(e), max(e)) for g, e in errors.items()}
        out[rule] = {"groups": groups, "met": all(m <= TARGET_MEDIAN and w <= TARGET_WORST
                                                  for m, w in groups.values())}
    return out


def main(paths: list[str]) -> None:
    scores = [score(p) for p in paths]
    groups = list(scores[0][RULES[0]]["groups"])
    print(f"{'run':<12} {'rule':<7} " + " ".join(f"{g.split(' (')[0]:>14}" for g in groups)
          + "  all met")
    for path, s in zip(paths, scores):
        for rule in RULES:
            cells = [f"{m:.0%} ({w:.0%})" for m, w in s[rule]["groups"].values()]
            print(f"{path.rsplit('/', 1)[-1]:<12} {rule:<7} "
                  + " ".join(f"{c:>14}" for c in cells)
                  + f"  {'yes' if s[rule]['met'] else 'NO'}")
    print("\nruns meeting every group (median <= "
          f"{TARGET_MEDIAN:.0%}, worst <= {TARGET_WORST:.0%}), by rule: "
          + ", ".join(f"{rule} {sum(s[rule]['met'] for s in scores)} of {len(scores)}"
                      for rule in RULES))


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
