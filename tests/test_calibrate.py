"""The `host` profile: how the cost model prices an emulated mesh (devices sharing one machine),
and `tpuinfer calibrate`, which measures it."""
import json

import pytest

import tpuinfer as ti
from tpuinfer.cost import collective_time, estimate
from tpuinfer.hardware import HOST_KINDS, HardwareProfile, get_hardware
from tpuinfer.terms import Collective, StepTerms

HOST = HardwareProfile(
    name="host", description="made up", peak_flops=1e11, hbm_bytes=2**34, hbm_bandwidth=1e10,
    interconnect="host", link_bandwidth=0.0, hop_latency_s=0.0, max_chips=256,
    device_overhead_s=2e-5, layer_overhead_s=1e-5, rule="sum",
    host_collectives=tuple((k, 1e-4, 1e-5, 1e-7, 1e-10) for k in HOST_KINDS))


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


def test_the_planner_carries_dispatch_through_a_phase():
    from tpuinfer.planner import phase_estimate
    ph = phase_estimate("tiny", ti.Layout("ws2d", "heads"), (2, 2, 2), "decode", batch=8,
                        input_len=8, gen_len=4, hardware=HOST)
    assert ph.overhead_s == pytest.approx(4 * ph.first.overhead_s) and ph.overhead_s > 0
    assert ph.latency_s == pytest.approx(ph.sum_s)  # rule "sum": every part adds
    assert ph.times()["overhead_s"] == ph.overhead_s


def test_a_host_collective_is_priced_per_call_device_member_and_byte():
    c = Collective("all-gather", ("y", "z"), 16, 4096.0, count=3)
    t = collective_time(c, HOST, (4, 4, 4))  # 64 devices, groups of 16
    assert t.latency_s == pytest.approx(1e-4 + 64 * 1e-5 + 64 * 16 * 1e-7)
    assert t.bandwidth_s == pytest.approx(64 * 4096 * 1e-10)
    assert t.total_s == pytest.approx(3 * (t.latency_s + t.bandwidth_s))


def test_a_host_profile_must_price_every_collective_kind():
    with pytest.raises(ValueError, match="every collective kind"):
        HOST.replace(host_collectives=HOST.host_collectives[:-1])


def test_calibrate_needs_the_256_device_mesh(monkeypatch):
    import jax
    from tpuinfer.calibrate import calibrate
    monkeypatch.setattr(jax, "device_count", lambda: 8)
    with pytest.raises(ValueError, match=r"JAX has 8 device\(s\).*emulate\(256\)"):
        calibrate()


@pytest.mark.slow
def test_calibrate_writes_the_host_profile_and_measure_predicts_wall_time(
        tmp_path, monkeypatch, capsys):
    """The command (under a minute), then `measure` with its prediction beside the TPU's."""
    from tpuinfer.cli import main
    from tpuinfer.measure import measure
    monkeypatch.setenv("TPUINFER_CACHE", str(tmp_path))
    assert main(["calibrate", "--json"]) == 0
    written = json.loads(capsys.readouterr().out)
    assert written["path"] == str(tmp_path / "host.json")
    host = get_hardware("host")
    assert host.interconnect == "host" and host.rule == "sum"
    assert host.peak_flops > 1e9 and host.hbm_bandwidth > 1e8  # a CPU, not a zero
    assert 0 < host.flops_efficiency and 0 < host.hbm_efficiency
    for kind, *coef in host.host_collectives:
        assert all(x >= 0 for x in coef) and any(coef), kind
    m = measure("tiny", (2, 2, 2), ti.Layout("ws2d", "heads"), phase="decode", batch=8)
    got, want = m.measured.time_s, m.predicted.time_s
    # benchmarks/bench_measure.py reports the error over 28 configurations; this bound only
    # catches a pricing that is off by a factor (the first attempt was 10-25x high)
    assert want is not None and 1 / 3 < want / got < 3, (want, got)
    out = m.to_json()
    assert out["predicted"]["time_hardware"] == "host"
    assert out["predicted"]["tpu_v4_time_s"] == m.tpu_time_s
    assert not any("no host profile" in n for n in m.notes)


def test_a_host_profile_round_trips_through_the_cache(tmp_path, monkeypatch):
    from tpuinfer.hardware import save_host_profile
    monkeypatch.setenv("TPUINFER_CACHE", str(tmp_path))
    save_host_profile(HOST)
    assert get_hardware("host") == HOST  # the collectives' table comes back as tuples


def test_an_unreadable_host_profile_leaves_measure_without_a_host_time(tmp_path, monkeypatch):
    """... and so cannot stop `tpuinfer calibrate`, which measures steps, from rewriting it."""
    from tpuinfer.hardware import host_profile_path
    from tpuinfer.measure import measure
    monkeypatch.setenv("TPUINFER_CACHE", str(tmp_path))
    host_profile_path().write_text("{not json")
    m = measure("tiny", (2, 2, 2), ti.Layout("ws2d", "heads"), phase="decode", batch=8,
                repeats=0)
    assert m.predicted.time_s is None
    assert any("run `tpuinfer calibrate`" in n for n in m.notes)
