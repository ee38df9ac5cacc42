"""How the front-ends say things: the command line, the widgets and the book's chapters.

The library returns numbers and facts (`measurement.Flag`, a calibration's fitted constants); this
module is the one place that turns them into text: times, bytes, plain-text tables, mesh
shapes, the sentences a measurement's flags stand for, and progress bars (`tqdm.auto`: a bar
in a terminal and in a notebook) behind the `progress(done, total, what)` callbacks that long
library calls take.
"""
from __future__ import annotations

import contextlib
import io
import statistics
from typing import Callable, Iterator

from .drift import words as drift_words
from .measurement import Flag
from .planner import Progress


# ---- numbers --------------------------------------------------------------------------------
def seconds(s: float | None) -> str:
    """Three significant digits in s, ms or µs; "-" when there is no time."""
    if s is None:
        return "-"
    if s >= 1:
        return f"{s:.3g} s"
    if s >= 1e-3:
        return f"{s * 1e3:.3g} ms"
    return f"{s * 1e6:.3g} µs"


def gib(b: float) -> str:
    return f"{b / 2**30:.1f} GiB"


def nbytes(n: float) -> str:
    """Four significant digits in the largest binary unit the number reaches."""
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.4g} {unit}"
    return f"{n:.0f} B"


def mesh_text(m) -> str:
    return "x".join(map(str, m))


def table(header: list[str], rows: list[list], align: str = "") -> str:
    """Columns padded to their widest cell, two spaces apart. `align`: one letter per column,
    "l" or "r" (default: every column left)."""
    align = align or "l" * len(header)
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    return "\n".join(
        "  ".join(str(c).rjust(w) if a == "r" else str(c).ljust(w)
                  for c, w, a in zip(r, widths, align)).rstrip()
        for r in [header] + rows)


# ---- a measurement's flags, in words ----------------------------------------------------------
def flag_text(flag: Flag | str, backend: str = "cpu") -> str:
    """The sentence a `measure.Flag` stands for."""
    flag = Flag(flag)
    if flag is Flag.COLLECTIVES_WIDENED:
        return (f"XLA:{backend.upper()} runs bf16 collectives in f32 (and fp8 ones in f16): "
                "the prediction counts them at that size, as compiled here (a TPU moves half "
                "those bytes)")
    if flag is Flag.TRANSIENT_ABOVE_PREDICTION:
        return ("memory during the step: the prediction is the largest single activation; "
                "the compiler's temporaries also hold activations side by side and weight "
                "copies (on XLA:CPU every gathered layer at once, weights transposed into "
                "the layouts its matmuls want, int8 weights widened whole before use)")
    if flag is Flag.HOST_PROFILE_MISSING:
        return ("no host profile yet: run `tpuinfer calibrate` for a predicted wall time on "
                "this machine")
    if flag is Flag.FLOPS_MISREAD:
        return ("the matmul FLOPs read from the compiled program disagree with the compiler's "
                "own count (cost analysis): the measured FLOPs may be misread")
    return ("the host profile cannot be read: run `tpuinfer calibrate` again for a predicted "
            "wall time on this machine")


TPU_PREDICTION = "the TPU v4 time is a prediction (bf16 activations), not a measurement"
NO_TPU_FP8 = "no TPU v4 prediction: TPU v4 has no fp8 matmul to run fp8 weights"


def measurement_notes(m, tpu_time: bool = True) -> list[str]:
    """What a reader of a `measure.Measurement` should know, one sentence each: its flags,
    then (with `tpu_time`) that the TPU v4 time beside it is a prediction."""
    tpu = TPU_PREDICTION if m.tpu_time_s is not None else NO_TPU_FP8
    return ([flag_text(f, m.backend) for f in sorted(m.flags, key=list(Flag).index)]
            + ([tpu] if tpu_time else []))


NO_HOST_PROFILE = ("no host profile on this machine yet: `tpuinfer calibrate` (under a minute, "
                   "machine idle) writes one, and every step measured after it carries the "
                   "host prediction")


def host_error_summary(measured: dict) -> tuple[float | None, float | None]:
    """The median and worst error of the host profile's step times over `measured`
    ({label: Measurement}); (None, None) when none has a host prediction."""
    errors = [m.host_error for m in measured.values() if m.host_error is not None]
    if not errors:
        return None, None
    return statistics.median(errors), max(errors)


def host_times(measured: dict) -> str:
    """Per step ({label: Measurement}): the host profile's predicted time, the measured time
    and the error |predicted - measured| / measured, then the median and worst error over
    them all; or, without a host profile, how to get one."""
    median, worst = host_error_summary(measured)
    if median is None:
        return NO_HOST_PROFILE
    rows = [[label, seconds(m.model_time_s), "-" if m.drift is None else f"x{m.drift:.2f}",
             seconds(m.predicted.time_s), seconds(m.measured.time_s),
             "-" if m.host_error is None else f"{m.host_error:.0%}"]
            for label, m in measured.items()]
    n = sum(m.host_error is not None for m in measured.values())
    drifts = [m.drift for m in measured.values() if m.drift is not None]
    # the drift on lines of its own: a table's footer must fit the page (the book's tests)
    machine = (f"drift: {drift_words(statistics.median(drifts))} (median over the steps'\n"
               "probes): a measurement of this machine, not of the model" if drifts else
               f"drift: {drift_words(None)}")
    return (table(["step", "model (host profile)", "x drift", "predicted", "measured (this CPU)",
                   "error"], rows)
            + f"\nmedian error {median:.0%}, worst {worst:.0%}, over {n} steps\n{machine}")


# ---- progress ---------------------------------------------------------------------------------
@contextlib.contextmanager
def progress_bar(desc: str, *, disable: bool = False,
                 show: Callable[[str], None] | None = None) -> Iterator[Progress]:
    """A `progress(done, total, what)` callback drawing a tqdm bar, closed on exit.

    Without `show`: `tqdm.auto` (a text bar on stderr in a terminal, a widget bar in a
    notebook). With `show`: the bar's one line of text is passed to `show` at every step (a
    widget puts it in its own message line, where the bar stays beside the plot it is for).
    With `disable` and no `show`, nothing is drawn and tqdm is not imported (the planner in a
    browser has none)."""
    if disable and show is None:
        yield lambda done, total, what: None
        return
    # tqdm draws the bar: imported only where one is drawn (the cost path runs without it)
    from tqdm.auto import tqdm as auto_tqdm
    from tqdm.std import tqdm as text_tqdm  # tqdm: as above

    bar = None

    def progress(done: int, total: int, what: str) -> None:
        nonlocal bar
        if bar is None:
            bar = (text_tqdm(total=total, desc=desc, file=io.StringIO(), mininterval=0,
                             ascii=False) if show else
                   auto_tqdm(total=total, desc=desc, disable=disable, leave=False))
        bar.total = total
        bar.set_postfix_str(what, refresh=False)
        bar.update(done - bar.n)  # redraws at most every `mininterval` (0.1 s) in a terminal
        if show:
            show(str(bar))

    try:
        yield progress
    finally:
        if bar is not None:
            bar.close()
