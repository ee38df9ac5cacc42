"""What the three fit scripts share: fit a calibrated profile's named constants to the rows of
`tpuinfer/data/measurements.json` that name it in `fitted_by`, and print the fitted rows'
residuals, then every held-out row of the same chip family.

A fit starts from the family's datasheet profile and changes only the named constants; scipy's
bounded least squares minimises the relative error of the fitted rows. No other row enters:
the held-out rows are priced after the fit, once, and printed.
"""
from __future__ import annotations

import statistics

import numpy as np
from scipy.optimize import least_squares

from tpuinfer import accuracy
from tpuinfer.hardware import get_hardware


def profile(name: str, names, params):
    """The family's datasheet profile with the named constants set (`name` the calibrated
    profile's)."""
    family = next(f for f, (_, cal) in accuracy.FAMILIES.items() if cal == name)
    datasheet = get_hardware(accuracy.FAMILIES[family][0])
    return family, datasheet.replace(name=f"{name}-fit", **dict(zip(names, params)))


def residuals(name: str, names, params) -> np.ndarray:
    _, hw = profile(name, names, params)
    return np.array([accuracy.predict(r, hw) / r.measured - 1
                     for r in accuracy.rows(fitted_by=name)])


def fit(name: str, names, lower, upper, start):
    """Bounded least squares from one start (a scaled step keeps microseconds and fractions
    on the same footing); returns the constants and the fitted rows' residuals."""
    result = least_squares(lambda p: residuals(name, names, p), np.array(start, float),
                           bounds=(np.array(lower, float), np.array(upper, float)),
                           x_scale=np.array(start, float), diff_step=1e-3)
    return result.x, result.fun


def report(name: str, names, params, res) -> None:
    family, hw = profile(name, names, params)
    datasheet = accuracy.FAMILIES[family][0]
    print(f"{name}: " + ", ".join(f"{n} = {v:.4g}" for n, v in zip(names, params)))
    for title, chosen in (("fitted rows", accuracy.rows(fitted_by=name)),
                          ("held-out rows (never in the fit)",
                           [r for r in accuracy.rows(family) if r.held_out])):
        print(f"\n{title}")
        print(f"  {'row':46s} {'measured':>10s} {datasheet:>10s} {'fitted':>10s} {'error':>8s}")
        errors = []
        for r in chosen:
            pred = accuracy.predict(r, hw)
            errors.append(abs(pred / r.measured - 1))
            print(f"  {r.id:46s} {r.measured:10.4g} {accuracy.predict(r, datasheet):10.4g} "
                  f"{pred:10.4g} {pred / r.measured - 1:+8.1%}")
        print(f"  median |error| {statistics.median(errors):.1%}, worst {max(errors):.1%}")
