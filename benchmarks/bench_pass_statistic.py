"""Which of a step's passes should its error be scored on? Compared on the same measurements.

`bench_measure.py` times every step of its sweep in two whole passes, each with its own drift
factor (the probe timed beside it). This script scores saved sweeps (`bench_measure.py sweep
--save FILE` or `runs N --save DIR`) two ways, each prediction as it was saved:

- all passes: the geometric mean over the passes of predicted / measured
  (`bench_measure.over_passes`, what `bench_measure.py` scores);
- fastest pass: the pass with the smallest measured time, with its own prediction (what it
  scored until issue 37's fourth session).

Per group, the median and worst |predicted - measured| / measured against 20% and 40%.

    python benchmarks/bench_pass_statistic.py runs/*.json
"""
import json
import statistics
import sys

from bench_measure import FITTED, TARGET_MEDIAN, TARGET_WORST, over_passes

STATISTICS = ("all passes", "fastest pass")


def step_error(passes: list[dict], statistic: str) -> float:
    """|predicted / measured - 1| of one saved step by `statistic`."""
    if statistic == "fastest pass":
        p = min(passes, key=lambda p: p["measured_s"])
        return abs(p["predicted_s"] / p["measured_s"] - 1)
    measured, _, predicted = over_passes(
        [(p["measured_s"], p["predicted_s"], p["drift"]) for p in passes])
    return abs(predicted / measured - 1)


def score(path: str) -> dict[str, dict]:
    """statistic -> {"groups": {group: (median, worst)}, "met"} for one saved sweep."""
    with open(path) as f:
        configurations = json.load(f)["configurations"]
    out = {}
    for statistic in STATISTICS:
        errors: dict[str, list[float]] = {}
        for c in configurations:
            if c["group"] != FITTED:  # fitted: no target
                errors.setdefault(c["group"], []).append(step_error(c["passes"], statistic))
        groups = {g: (statistics.median(e), max(e)) for g, e in errors.items()}
        out[statistic] = {"groups": groups, "met": all(
            m <= TARGET_MEDIAN and w <= TARGET_WORST for m, w in groups.values())}
    return out


def main(paths: list[str]) -> None:
    scores = [score(p) for p in paths]
    groups = list(scores[0][STATISTICS[0]]["groups"])
    print(f"{'run':<12} {'statistic':<12} "
          + " ".join(f"{g.split(' (')[0]:>14}" for g in groups) + "  all met")
    for path, s in zip(paths, scores):
        for statistic in STATISTICS:
            cells = [f"{m:.0%} ({w:.0%})" for m, w in s[statistic]["groups"].values()]
            print(f"{path.rsplit('/', 1)[-1]:<12} {statistic:<12} "
                  + " ".join(f"{c:>14}" for c in cells)
                  + f"  {'yes' if s[statistic]['met'] else 'NO'}")
    print(f"\nruns meeting every group (median <= {TARGET_MEDIAN:.0%}, worst <= "
          f"{TARGET_WORST:.0%}), by statistic: "
          + ", ".join(f"{st} {sum(s[st]['met'] for s in scores)} of {len(scores)}"
                      for st in STATISTICS))


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
