"""The drift factor: how much slower the machine runs the probe now than at calibration, and the
host prediction scaled by it (`tpuinfer.drift`), timed here with a fake clock."""
from types import SimpleNamespace

import pytest

import tpuinfer as ti
from tpuinfer import calibrate as calibrate_module
from tpuinfer import drift
from tpuinfer.hardware import save_host_profile
from tpuinfer.measure import measure
from tpuinfer.report import host_times

from test_calibrate import HOST


class FakeClock:
    """A clock that only moves when a probe run says how long it took."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def runs_taking(self, seconds):
        it = iter(seconds)

        def run():
            self.now += next(it)
        return run


def test_the_probe_time_is_the_median_of_its_runs_after_an_untimed_one():
    clock = FakeClock()
    # the first (warm-up) run's 1 s is never timed; the median of the next five is 3 ms
    run = clock.runs_taking([1.0, 0.002, 0.003, 0.009, 0.003, 0.004])
    assert drift.median_seconds(run, runs=5, clock=clock) == pytest.approx(0.003)
    with pytest.raises(ValueError, match="at least 1"):
        drift.median_seconds(run, runs=0, clock=clock)


def test_a_machine_running_the_probe_half_as_fast_again_has_drift_one_and_a_half():
    clock = FakeClock()
    at_calibration = drift.median_seconds(clock.runs_taking([0.1] + [0.002] * 7), clock=clock)
    now = drift.median_seconds(clock.runs_taking([0.1] + [0.003] * 7), clock=clock)
    assert drift.factor(now, at_calibration) == pytest.approx(1.5)
    assert drift.words(1.5) == "machine 1.50x slower than at calibration"
    assert drift.words(0.8) == "machine 1.25x faster than at calibration"
    assert drift.factor(now, drift.NO_PROBE) is None  # a profile from before the probe
    assert "no drift probe" in drift.words(None)


@pytest.fixture
def probed_host(tmp_path, monkeypatch):
    """A host profile calibrated with a 4 ms probe, and a machine that runs it in 6 ms now."""
    monkeypatch.setenv("TPUINFER_CACHE", str(tmp_path))
    save_host_profile(HOST.replace(probe_s=0.004))
    monkeypatch.setattr(drift, "probe_seconds", lambda runs=drift.RUNS: 0.006)


def test_measure_scales_the_host_prediction_by_the_drift_and_reports_it(probed_host):
    m = measure("tiny", (2, 2, 2), ti.Layout("ws2d", "heads"), phase="decode", batch=8,
                repeats=2)
    assert m.drift == pytest.approx(1.5)
    assert m.predicted.time_s == pytest.approx(1.5 * m.model_time_s)
    assert m.to_json()["predicted"]["drift"] == pytest.approx(1.5)
    text = host_times({"ws2d/heads decode": m})
    assert "x1.50" in text and "machine 1.50x slower than at calibration" in text
    # the calibration times the probe itself, and nothing is scaled without a timed run
    for kw in (dict(repeats=2, drift_probe=False), dict(repeats=0)):
        unscaled = measure("tiny", (2, 2, 2), ti.Layout("ws2d", "heads"), phase="decode",
                           batch=8, **kw)
        assert unscaled.drift is None and unscaled.predicted.time_s == unscaled.model_time_s


def test_the_calibration_scales_each_step_by_the_probe_beside_it(monkeypatch):
    """A step timed while the machine ran at half speed (the probe beside it twice as slow)
    enters the fit at the speed of the calibration's median probe."""
    shape = (1, 4, 2)
    point = (shape, 8, "ws2d", "heads", "decode", None)
    real = measure("tiny", shape, ti.Layout("ws2d", "heads"), phase="decode", batch=8,
                   repeats=0)
    step_times = iter([0.010, 0.040, 0.010, 0.030])  # pass 1: two steps; pass 2: two steps
    # what `_step` returns, as much of it as `step_samples` reads: the real step's terms, a
    # made-up time
    warmups = []  # each step's warm-up: the first pass's only (the step ran seconds before)
    monkeypatch.setattr(calibrate_module, "_step", lambda *p, warmup_s: warmups.append(
        warmup_s) or SimpleNamespace(
        **{k: getattr(real, k) for k in ("terms", "backend", "model", "layout", "batch",
                                         "tokens", "context", "weights")},
        measured=SimpleNamespace(time_s=next(step_times))))
    # probes: before step 1, after it, after step 2 (pass 1); the same in pass 2
    probes = iter([0.004, 0.004, 0.012, 0.004, 0.004, 0.004])
    out = calibrate_module.step_samples(HOST, [point, point], probe=lambda: next(probes))
    # beside pass 1's second step the probe averaged 8 ms against the median 4 ms: its 40 ms
    # count as 20 ms, faster than pass 2's 30 ms at full speed (unscaled, 30 would be kept)
    assert out.probe_s == pytest.approx(0.004)
    assert [row[2] for row in out.rows] == pytest.approx([0.010, 0.020])
    assert out.probe_spread == pytest.approx(1.0)  # 8 ms against 4 ms
    assert warmups == [calibrate_module.STEP_TIMING["warmup_s"]] * 2 + [0.0] * 2


def test_each_probe_reading_is_kept_with_when_it_was_taken(monkeypatch):
    """`drift.LOG` keeps the process's readings for a benchmark to compare rules offline."""
    monkeypatch.setattr(drift, "_probe", lambda: SimpleNamespace(seconds=lambda runs: 0.005))
    monkeypatch.setattr(drift, "LOG", drift.deque(maxlen=64))
    assert drift.probe_seconds() == 0.005 and drift.probe_seconds() == 0.005
    (t0, s0), (t1, s1) = drift.LOG
    assert (s0, s1) == (0.005, 0.005) and t0 <= t1
