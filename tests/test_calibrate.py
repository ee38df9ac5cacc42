"""The `host` profile: how the cost model prices an emulated mesh (devices sharing one machine),
and `tpuinfer calibrate`, which measures it."""
import dataclasses
import json

import jax
import numpy as np
import pytest

import tpuinfer as ti
from tpuinfer import calibrate as calibrate_module
from tpuinfer import sweeps
from tpuinfer.calibrate import (EFFICIENCY_BOUNDS, RELAYOUT_NOMINAL, Calibration,
                                CalibrationError, calibrate, fit_collective, fit_launch,
                                fit_steps, memory_per_device, per_call_s, without_flops)
from tpuinfer.cli import main
from tpuinfer.cli.calibrate import summary
from tpuinfer.cost import collective_time, estimate
from tpuinfer.errors import UsageError
from tpuinfer.hardware import (HOST_KINDS, HardwareProfile, get_hardware, host_profile_path,
                               save_host_profile)
from tpuinfer.measure import Flag, measure, on_backend
from tpuinfer.report import flag_text
from tpuinfer.terms import Collective, StepTerms

HOST = HardwareProfile(
    name="host", description="made up", peak_flops=1e11, hbm_bytes=2**34, hbm_bandwidth=1e10,
    interconnect="host", link_bandwidth=0.0, hop_latency_s=0.0, max_chips=256,
    device_overhead_s=2e-5, layer_overhead_s=1e-5, rule="sum",
    host_collectives=tuple((k, 1e-4, 1e-5, 1e-7, 1e-10) for k in HOST_KINDS),
    activation_bandwidth=5e9, multirow_weight_bandwidth=4e9)


def test_devices_of_an_emulated_mesh_share_the_host():
    """Per-device work costs `chips` times its one-device time; dispatch is per device."""
    terms = StepTerms(flops=1e9, attention_flops=0.0, weight_bytes=1e6, kv_bytes=0.0,
                      stored_weight_bytes=1e6, stored_kv_bytes=0.0, activation_bytes=0.0)
    e = estimate("tiny", ti.Layout("ws2d", "heads"), (2, 2, 2), batch=8, tokens=1,
                 context=16, hardware=HOST, terms=terms)
    assert e.compute_s == pytest.approx(8 * 1e9 / 1e11)
    assert e.weights_s == pytest.approx(8 * 1e6 / 1e10)
    layers = ti.MODELS["tiny"].n_layers
    assert e.overhead_s == pytest.approx(8 * (2e-5 + layers * 1e-5))
    assert e.step_s == pytest.approx(e.compute_s + e.weights_s + e.overhead_s)
    assert e.times()["overhead_s"] == e.overhead_s


def test_a_host_prices_activations_and_multi_row_weights_at_their_own_rates():
    """What a matmul's shape costs on a host: the activations it moves, and the weights of a
    multi-row matmul, which XLA:CPU packs before multiplying; one-row reads stream at
    `hbm_bandwidth`. A profile without those rates (every chip's) leaves them as before."""
    terms = StepTerms(flops=0.0, attention_flops=0.0, weight_bytes=3e6, kv_bytes=1e6,
                      stored_weight_bytes=3e6, stored_kv_bytes=1e6, activation_bytes=0.0,
                      activation_traffic_bytes=2e6, multirow_weight_bytes=2e6)
    e = estimate("tiny", ti.Layout("ws2d", "heads"), (2, 2, 2), batch=8, tokens=1,
                 context=16, hardware=HOST, terms=terms)
    assert e.weights_s == pytest.approx(8 * (1e6 / 1e10 + 2e6 / 4e9))
    assert e.kv_s == pytest.approx(8 * 1e6 / 1e10)
    assert e.activations_s == pytest.approx(8 * 2e6 / 5e9) == e.times()["activations_s"]
    assert e.memory_s == pytest.approx(e.weights_s + e.kv_s + e.activations_s)
    assert e.step_s == pytest.approx(e.memory_s + e.overhead_s)  # no FLOPs, no collectives
    copied = estimate("tiny", ti.Layout("ws2d", "heads"), (2, 2, 2), batch=8, tokens=1,
                      context=16, hardware=HOST.replace(relayout_bandwidth=2e9),
                      terms=dataclasses.replace(terms, relayout_bytes=1e6))
    assert copied.weights_s == pytest.approx(e.weights_s + 8 * 1e6 / 2e9)  # every device's
    plain = estimate("tiny", ti.Layout("ws2d", "heads"), (2, 2, 2), batch=8, tokens=1,
                     context=16, hardware=HOST.replace(activation_bandwidth=0.0,
                                                       multirow_weight_bandwidth=0.0),
                     terms=terms)
    assert plain.weights_s == pytest.approx(8 * 3e6 / 1e10) and plain.activations_s == 0.0
    assert "activations_s" not in plain.times()
    scored = estimate("tiny", ti.Layout("ws2d", "heads"), (2, 2, 2), batch=8, tokens=1,
                      context=16, hardware=HOST.replace(score_bandwidth=1e9),
                      terms=dataclasses.replace(terms, score_bytes=3e5))
    # attention's scores: activations of their own rate, every device's
    assert scored.activations_s == pytest.approx(e.activations_s + 8 * 3e5 / 1e9)


def test_a_host_profile_written_before_the_shape_terms_still_loads(tmp_path, monkeypatch):
    """A `host.json` from before `activation_bandwidth`, `multirow_weight_bandwidth` and
    `score_bandwidth` loads, and prices none of them (as it did), until `tpuinfer calibrate`
    runs again."""
    monkeypatch.setenv("TPUINFER_CACHE", str(tmp_path))
    save_host_profile(HOST.replace(score_bandwidth=1e9))
    fields = json.loads((tmp_path / "host.json").read_text())
    del fields["activation_bandwidth"], fields["multirow_weight_bandwidth"]
    del fields["score_bandwidth"]
    (tmp_path / "host.json").write_text(json.dumps(fields))
    old = get_hardware("host")
    assert old.activation_bandwidth == old.multirow_weight_bandwidth == 0.0
    assert old.score_bandwidth == 0.0


def test_the_planner_carries_dispatch_through_a_phase():
    from tpuinfer.planner import phase_estimate
    ph = phase_estimate("tiny", ti.Layout("ws2d", "heads"), (2, 2, 2), "decode", batch=8,
                        input_len=8, gen_len=4, hardware=HOST)
    assert ph.overhead_s == pytest.approx(4 * ph.first.overhead_s) and ph.overhead_s > 0
    assert ph.latency_s == pytest.approx(ph.sum_s)  # rule "sum": every part adds
    assert ph.times()["overhead_s"] == ph.overhead_s
    assert ph.activations_s == pytest.approx(4 * ph.first.activations_s) and ph.activations_s > 0


def test_a_host_collective_is_priced_per_call_device_member_and_byte():
    c = Collective("all-gather", ("y", "z"), 16, 4096.0, count=3)
    t = collective_time(c, HOST, (4, 4, 4))  # 64 devices, groups of 16
    assert t.latency_s == pytest.approx(1e-4 + 64 * 1e-5 + 64 * 16 * 1e-7)
    assert t.bandwidth_s == pytest.approx(64 * 4096 * 1e-10)
    assert t.total_s == pytest.approx(3 * (t.latency_s + t.bandwidth_s))


def test_the_collective_fit_recovers_its_constants_despite_a_sample_lost_in_noise():
    """One call cheaper than the timing's noise (seen: an all-reduce on 8 devices at 1 µs)
    must not outweigh the rest: the fit leaves it out and still finds every constant."""
    from tpuinfer.calibrate import COLLECTIVE_POINTS, NOISE_S
    truth = (20e-6, 8e-6, 4e-7, 1e-10)  # call, per device, per device per member, per byte
    samples = []
    for shape, axes, elems in COLLECTIVE_POINTS:
        n = int(np.prod(shape))
        g = int(np.prod([dict(zip("xyz", shape))[a] for a in axes]))
        b = 4.0 * elems
        samples.append((n, g, b, truth[0] + n * truth[1] + n * g * truth[2] + n * b * truth[3]))
    assert fit_collective(samples) == pytest.approx(truth, rel=1e-3)
    samples[0] = (*samples[0][:3], 1e-6)  # a true 40 µs measured as 1 µs
    assert samples[0][3] < NOISE_S
    assert fit_collective(samples) == pytest.approx(truth, rel=1e-3)


def test_a_host_profile_must_price_every_collective_kind():
    with pytest.raises(ValueError, match="every collective kind"):
        HOST.replace(host_collectives=HOST.host_collectives[:-1])


def test_calibrate_needs_the_256_device_mesh(monkeypatch):
    monkeypatch.setattr(jax, "device_count", lambda: 8)
    with pytest.raises(UsageError, match=r"JAX has 8 device\(s\).*emulate\(256\)"):
        calibrate()


# Steps as `step_samples` returns them: [compute, multi-row weights, activations, collectives
# but their fixed part, chips·layers, copies of gathered weights, the collectives' fixed part]
# seconds (copies: at RELAYOUT_NOMINAL) on the micro-benchmarks' profile, the seconds taken as
# measured, and the measured seconds. Made from known constants, so the fit has one right
# answer.
SLOW = (1.5, 2.0, 4.0, 3.0, 2e-5, 2.5, 0.5)  # FLOP/s x1/1.5, multi-row weight bytes/s x1/2,
#   activation bytes/s x1/4, collectives x3 (their fixed part x0.5), 20 µs per layer,
#   copies at 1/2.5 nominal
PARTS = [[1e-3, 2e-4, 1e-4, 5e-4, 16, 0.0, 2e-4], [4e-4, 1e-3, 3e-4, 1e-4, 16, 2e-4, 0.0],
         [2e-4, 3e-4, 1e-3, 2e-3, 128, 0.0, 1e-3], [3e-3, 1e-4, 2e-4, 3e-4, 128, 1e-4, 3e-4],
         [1e-4, 2e-3, 5e-4, 1e-3, 16, 1e-3, 1e-4], [5e-4, 5e-4, 2e-3, 5e-4, 128, 0.0, 2e-3],
         [2e-3, 1e-4, 4e-4, 1e-4, 128, 3e-4, 5e-4], [1e-3, 1e-3, 1e-4, 1e-3, 16, 2e-3, 0.0],
         [6e-4, 4e-4, 8e-4, 2e-4, 64, 5e-4, 8e-4]]


def _steps(slow):
    return [(parts, 1e-3, 1e-3 + float(np.dot(parts, slow))) for parts in PARTS]


def test_the_step_fit_recovers_known_constants():
    """Deterministic in place of a wall-time ratio: the fit returns the constants the steps
    were made with, and scales every collective by the fitted factor."""
    profile, factor, call, worst, unpinned = fit_steps(HOST, _steps(SLOW))
    assert unpinned == ()
    assert profile.flops_efficiency == pytest.approx(1 / 1.5)
    assert profile.multirow_weight_bandwidth == pytest.approx(HOST.multirow_weight_bandwidth / 2)
    assert profile.activation_bandwidth == pytest.approx(HOST.activation_bandwidth / 4)
    assert profile.hbm_efficiency == HOST.hbm_efficiency  # one-row reads: the micro-benchmark's
    assert factor == pytest.approx(3.0) and call == pytest.approx(0.5)
    assert worst == pytest.approx(0.0, abs=1e-9)
    assert profile.layer_overhead_s == pytest.approx(2e-5)
    assert profile.relayout_bandwidth == pytest.approx(RELAYOUT_NOMINAL / 2.5)
    kind, call_s, *rest = HOST.host_collectives[0]
    assert profile.host_collectives[0][1] == pytest.approx(0.5 * call_s)
    assert profile.host_collectives[0][2:] == pytest.approx([3.0 * x for x in rest])


def test_steps_that_pay_no_fixed_part_per_collective_call_are_fitted_as_such():
    """A fixed part the steps do not pay (a step's other work fills a lone call's wait) fits
    to 0: the rest of every collective's cost stays, and the summary gives both factors with
    the benchmarked costs."""
    fit = fit_steps(HOST, _steps((*SLOW[:6], 0.0)))
    assert fit.call_factor == pytest.approx(0.0, abs=1e-9) and fit.unpinned == ()
    assert fit.collective_factor == pytest.approx(3.0)
    assert all(c[1] == pytest.approx(0.0, abs=1e-12) for c in fit.profile.host_collectives)
    cal = Calibration(fit.profile, 1e-5, fit.collective_factor, 1.0, 1.0, fit.worst, 9, 30.0,
                      fit.unpinned, fit.call_factor, HOST.host_collectives)
    lines = summary(cal)
    (steps,) = [x for x in lines if x.startswith("steps: ")]
    assert "collectives x3.00 (their fixed part x0.00)" in steps, steps
    kind, call_s, *_ = HOST.host_collectives[0]
    (line,) = [x for x in lines if x.startswith(f"{kind}: ")]
    assert line.startswith(f"{kind}: {call_s * 1e6:.0f} µs + "), line


def test_a_rate_the_steps_leave_out_keeps_the_micro_benchmarks():
    """Steps that cost nothing for their multi-row weights (the fit zeroes that column: an
    infinite rate) keep the micro-benchmark's rate for them, refit the rest, and say so."""
    profile, factor, _, worst, unpinned = fit_steps(
        HOST, _steps((1.5, 0.0, 4.0, 3.0, 2e-5, 2.5, 0.5)))
    assert unpinned == ("multi-row weight bytes/s",)
    assert profile.multirow_weight_bandwidth == HOST.multirow_weight_bandwidth
    assert EFFICIENCY_BOUNDS[0] <= profile.flops_efficiency <= EFFICIENCY_BOUNDS[1]
    cal = Calibration(profile, 1e-5, factor, 1.0, 1.0, worst, 8, 30.0, unpinned)
    (line,) = [x for x in summary(cal) if x.startswith("steps: ")]
    assert "multi-row weight bytes/s: the steps left it out" in line, line


def test_the_summary_words_a_collective_whose_fit_has_no_time_per_byte():
    kind, *costs = HOST.host_collectives[0]
    flat = dataclasses.replace(HOST, host_collectives=((kind, *costs[:3], 0.0),
                                                       *HOST.host_collectives[1:]))
    lines = summary(Calibration(flat, 1e-5, 2.0, 1.0, 1.0, 0.1, 12, 30.0))
    (line,) = [x for x in lines if x.startswith(f"{kind}: ")]
    assert line.endswith("no time per byte within the sizes measured"), line
    assert not any("inf" in x for x in lines)


def test_a_fit_outside_physical_bounds_fails_and_says_so(tmp_path, monkeypatch):
    """Steps whose compute the fit cannot see (an efficiency of 1000x) fail the calibration;
    `tpuinfer calibrate` then writes no profile."""
    with pytest.raises(CalibrationError, match="calibration failed.*FLOP/s efficiency 1e"):
        fit_steps(HOST, _steps((1e-3, 2.0, 4.0, 3.0, 2e-5, 2.5, 0.5)))
    monkeypatch.setenv("TPUINFER_CACHE", str(tmp_path))
    monkeypatch.setattr(calibrate_module, "calibrate", lambda progress=None: fit_steps(
        HOST, _steps((1e-3, 2.0, 4.0, 3.0, 2e-5, 2.5, 0.5))))
    assert main(["calibrate"]) == 2
    assert not (tmp_path / "host.json").exists()


def test_a_micro_benchmark_lost_in_noise_fails_naming_its_fit():
    """No floor stands in for a time the machine did not give: a chain of four calls no
    slower than one, FLOPs that leave a benchmark no time for its bytes, a launch cheaper on
    more devices, or a collective whose calls all came out at or below zero each fail the
    calibration, naming the fit (and nothing is written)."""
    assert per_call_s(400e-6, 100e-6, 4, "memory bytes/s") == pytest.approx(100e-6)
    with pytest.raises(CalibrationError, match=r"^calibration failed: memory bytes/s: 4 "
                                               r"chained calls took 90 µs, one 100 µs.*busy"):
        per_call_s(90e-6, 100e-6, 4, "memory bytes/s")
    assert without_flops(100e-6, 50e-6, "activation bytes/s") == pytest.approx(50e-6)
    with pytest.raises(CalibrationError, match=r"activation bytes/s: its FLOPs at the measured "
                                               r"matmul rate take 95 µs of its 100 µs.*busy"):
        without_flops(100e-6, 95e-6, "activation bytes/s")
    assert fit_launch([(8, 1e-4), (64, 2e-4), (256, 5e-4)]) == pytest.approx(
        np.polyfit([8, 64, 256], [1e-4, 2e-4, 5e-4], 1)[::-1])
    with pytest.raises(CalibrationError, match=r"launch: .* a negative part.*busy"):
        fit_launch([(8, 3e-4), (64, 2e-4), (256, 1e-4)])
    with pytest.raises(CalibrationError, match=r"all-to-all: 1 of 3 timed calls came out above"):
        fit_collective([(8, 2, 1e3, -1e-6), (64, 8, 1e3, 0.0), (256, 4, 1e3, 1e-6)],
                       "all-to-all")


def test_the_host_profile_holds_each_devices_share_of_the_machines_memory():
    """Every other profile's `hbm_bytes` is one chip's: the host's is one emulated device's
    share, so that `fits` compares a device's bytes with a device's memory. A model that
    holds more per device than its share does not fit, however far under the machine's
    memory all devices together stay."""
    machine = 64 * 2**30
    host = HOST.replace(hbm_bytes=memory_per_device(machine, 256))
    assert host.hbm_bytes == 256 * 2**20
    e = estimate("palm-8b", ti.Layout("ws2d", "batch"), (2, 2, 2), batch=8, tokens=1,
                 context=16, hardware=host)
    assert host.hbm_bytes < e.memory_per_chip_bytes < machine / 8 and not e.fits
    assert estimate("tiny", ti.Layout("ws2d", "batch"), (2, 2, 2), batch=8, tokens=1,
                    context=16, hardware=host).fits


def test_a_recalibrated_host_profile_is_not_served_a_stale_pareto_curve(tmp_path, monkeypatch):
    """The book's Pareto curves are memoised per profile: by its content, not its name, so a
    `host` profile written again by `tpuinfer calibrate` prices the next curve afresh."""
    monkeypatch.setenv("TPUINFER_CACHE", str(tmp_path))

    def curve():
        got = sweeps.pareto_curves(["tiny"], ["f32"], hardware="host", chips=[8], batches=[8],
                                   input_len=8, gen_len=2)
        return got["decode"]["tiny f32"]["latency_ms"]
    save_host_profile(HOST)
    before = curve()
    save_host_profile(HOST.replace(peak_flops=10 * HOST.peak_flops,
                                   hbm_bandwidth=10 * HOST.hbm_bandwidth))
    after = curve()
    assert after[0] < before[0]  # priced on the profile written last


def test_unknown_memory_is_reported_not_zero(monkeypatch):
    def no_sysconf(name):
        raise ValueError(f"unrecognized configuration name {name}")
    monkeypatch.setattr(calibrate_module.os, "sysconf", no_sysconf)
    assert calibrate_module._memory_bytes() is None
    with pytest.raises(CalibrationError, match="cannot read this machine's memory size"):
        calibrate()


@pytest.mark.slow
def test_calibrate_writes_the_host_profile_and_measure_predicts_wall_time(
        tmp_path, monkeypatch, capsys):
    """The command (under a minute), then `measure` with its prediction beside the TPU's."""
    monkeypatch.setenv("TPUINFER_CACHE", str(tmp_path))
    rc = main(["calibrate", "--json"])
    written = json.loads(capsys.readouterr().out)
    if rc == 2:
        # The suite's other worker keeps this machine busy, and a busy machine can blur the
        # step fit: then the command must refuse, say why, and write nothing.
        assert "a busy machine does this" in written["error"]
        assert not host_profile_path().exists()
        save_host_profile(HOST)  # measure's side below is checked with a known profile
    else:
        assert rc == 0 and written["path"] == str(tmp_path / "host.json")
        # each emulated device's share of the machine's memory, as a chip's is its own
        assert written["hbm_bytes"] == calibrate_module._memory_bytes() / 256
        # attention's scores: a rate of their own, measured (the made-up profile saved on a
        # refusal above prices none)
        assert get_hardware("host").score_bandwidth > 1e8
    host = get_hardware("host")
    assert host.interconnect == "host" and host.rule == "sum"
    assert host.peak_flops > 1e9 and host.hbm_bandwidth > 1e8  # a CPU, not a zero
    assert 0 < host.flops_efficiency and host.hbm_efficiency == 1.0  # one-row reads: measured
    assert host.activation_bandwidth > 1e8 and host.multirow_weight_bandwidth > 1e8
    for kind, *coef in host.host_collectives:
        assert all(x >= 0 for x in coef) and any(coef), kind
    assert EFFICIENCY_BOUNDS[0] <= host.flops_efficiency <= EFFICIENCY_BOUNDS[1]  # or it fails
    m = measure("tiny", (2, 2, 2), ti.Layout("ws2d", "heads"), phase="decode", batch=8,
                repeats=0)
    # the host profile's price of this very step (how far that is from wall time is
    # benchmarks/bench_measure.py's business: a wall-time bound here would be flaky)
    assert m.predicted.time_s == estimate(
        m.model, m.layout, m.mesh_shape, batch=8, tokens=1, context=m.context,
        weights=m.weights, hardware=host, terms=on_backend(m.terms, m.mesh_shape, m.backend)
    ).step_s > 0
    out = m.to_json()
    assert out["predicted"]["time_hardware"] == "host"
    assert out["predicted"]["tpu_v4_time_s"] == m.tpu_time_s
    assert not m.flags & {Flag.HOST_PROFILE_MISSING, Flag.HOST_PROFILE_UNREADABLE}


def test_a_host_profile_round_trips_through_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TPUINFER_CACHE", str(tmp_path))
    save_host_profile(HOST)
    assert get_hardware("host") == HOST  # the collectives' table comes back as tuples


def test_an_unreadable_host_profile_leaves_measure_without_a_host_time(tmp_path, monkeypatch):
    """... and so cannot stop `tpuinfer calibrate`, which measures steps, from rewriting it."""
    monkeypatch.setenv("TPUINFER_CACHE", str(tmp_path))
    host_profile_path().write_text("{not json")
    m = measure("tiny", (2, 2, 2), ti.Layout("ws2d", "heads"), phase="decode", batch=8,
                repeats=0)
    assert m.predicted.time_s is None
    assert Flag.HOST_PROFILE_UNREADABLE in m.flags
    assert "cannot be read: run `tpuinfer calibrate`" in flag_text(Flag.HOST_PROFILE_UNREADABLE)


def test_a_micro_benchmark_lost_in_noise_is_timed_again_before_the_calibration_gives_up():
    """One noisy reading does not refuse a whole calibration: the stage is timed again, up to
    `MICRO_TRIES` times, and only then fails, saying how many times it tried."""
    readings = iter([[(8, 1e-4), (64, 1e-5), (256, 1e-3)],  # a negative part: noise
                     [(8, 2e-4), (64, 1e-3), (256, 4e-3)]])
    fixed, per_device = calibrate_module.again(lambda: fit_launch(next(readings)))
    assert fixed > 0 and per_device > 0
    calls = []

    def always_noisy():
        calls.append(1)
        return fit_launch([(8, 1e-4), (64, 1e-5), (256, 1e-3)])
    with pytest.raises(CalibrationError, match=r"calibration failed \(3 tries\): launch"):
        calibrate_module.again(always_noisy)
    assert len(calls) == calibrate_module.MICRO_TRIES == 3
