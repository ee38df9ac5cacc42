"""Data-parallel replicas: R copies of a layout's mesh side by side (`make_mesh(shape,
replicas=R)`, axes r, x, y, z), each running its B/R sequences; in the engine against the
reference and as compiled (every collective inside one replica's group), and in the planner
(R replicas of n/R chips weighed beside one group of n)."""
import functools
import json

import numpy as np
import pytest

import tpuinfer as ti
from tpuinfer.cli import main
from tpuinfer.errors import LayoutError, UsageError
from tpuinfer.hardware import get_hardware
from tpuinfer.measure import measure
from tpuinfer.planner import pareto, phase_estimate, plan, replica_counts

CFG = ti.MODELS["tiny"]
L_ = ti.Layout
PROMPT_LEN, STEPS = 4, 3


@functools.lru_cache(maxsize=None)
def params():
    return ti.init_params(CFG, seed=0)


@functools.lru_cache(maxsize=None)
def reference(batch, kv=None):
    return ti.generate(params(), CFG, prompt(batch), STEPS, kv=kv)


@functools.lru_cache(maxsize=None)
def prompt(batch):
    return np.random.default_rng(3).integers(0, CFG.V, (batch, PROMPT_LEN))


# ---- the engine ------------------------------------------------------------------------------
def test_a_mesh_of_replicas_has_an_r_axis_in_front():
    mesh = ti.make_mesh((1, 4, 2), replicas=2)
    assert mesh.axis_names == ("r", "x", "y", "z") and dict(mesh.shape) == {
        "r": 2, "x": 1, "y": 4, "z": 2}
    assert [d.id for d in mesh.devices[1].flat] == list(range(8, 16))  # replica 1: 8 .. 15
    assert ti.make_mesh((4, 8, 8)).axis_names == ("x", "y", "z")  # one replica: as ever
    with pytest.raises(UsageError, match=r"2 replicas of mesh 4x8x8 needs 512 devices but "
                                         r"JAX has 256"):
        ti.make_mesh((4, 8, 8), replicas=2)
    with pytest.raises(UsageError, match="replicas must be a positive number"):
        ti.make_mesh((2, 2, 2), replicas=0)
    with pytest.raises(LayoutError, match=r"batch B=12 does not split over 8 replicas"):
        ti.generate(params(), CFG, prompt(12), 1, mesh=ti.make_mesh((1, 2, 2), replicas=8))


# (layout's mesh, replicas, batch, prefill, decode, KV format)
RUNS = [((2, 2, 2), 2, 16, L_("ws2d", "heads"), L_("ws2d", "batch"), None),
        ((1, 4, 2), 2, 16, L_("wg-x", "heads"), L_("wg-xy", "batch"), None),
        ((2, 2, 2), 4, 32, L_("wg-xyz", "batch"), L_("ws1d", "heads"), "int8")]


@pytest.mark.slow
@pytest.mark.parametrize("shape, replicas, batch, prefill, decode, kv", RUNS,
                         ids=[f"{r}x{'x'.join(map(str, s))}-{p}-{d}" for s, r, b, p, d, k in RUNS])
def test_replicas_match_reference(shape, replicas, batch, prefill, decode, kv):
    """Each replica runs the layouts on its own B/R sequences: tokens identical to the
    reference, logits and cache to f32 rounding (an int8 cache: within one level), and the
    cache split over r first."""
    mesh = ti.make_mesh(shape, replicas=replicas)
    out = ti.generate(params(), CFG, prompt(batch), STEPS, mesh=mesh, prefill=prefill,
                      decode=decode, kv=kv)
    ref = reference(batch, kv)
    np.testing.assert_array_equal(out.tokens, ref.tokens)
    for got, want in [(out.prefill_logits, ref.prefill_logits), (out.step_logits, ref.step_logits)]:
        assert np.linalg.norm(got - want) / np.linalg.norm(want) < (1e-3 if kv else 1e-4)
    for layer_out, layer_ref in zip(out.cache, ref.cache):
        for t in "kv":
            np.testing.assert_allclose(np.asarray(layer_out[t], np.float32),
                                       np.asarray(layer_ref[t], np.float32),
                                       rtol=1e-5, atol=1 if kv else 1e-5)
        assert layer_out["k"].sharding.spec[0][0] == "r"


@functools.lru_cache(maxsize=None)
def measured(shape, replicas, layout, phase, batch):
    mesh = ti.make_mesh(shape, replicas=replicas) if replicas > 1 else ti.make_mesh(shape)
    return measure(CFG, mesh, layout, phase=phase, batch=batch, context=7, repeats=0,
                   tokens=PROMPT_LEN if phase == "prefill" else None, kv="int8")


@pytest.mark.slow
@pytest.mark.parametrize("shape, layout, phase", [
    ((2, 2, 2), L_("ws2d", "batch"), "decode"),  # all-to-alls over all of a replica's chips
    ((1, 4, 2), L_("wg-xy", "heads"), "prefill")],  # weights gathered over a replica's x, y
    ids=str)
def test_every_collective_stays_inside_a_replica(shape, layout, phase):
    """Compiled on two replicas of a mesh: every collective's groups lie inside one replica
    (no group spans r), and kind, axes, group size, count and bytes equal the prediction for
    one replica's mesh at B/R, and the step one replica alone compiles (batch 8)."""
    two = measured(shape, 2, layout, phase, 16)
    one = measured(shape, 1, layout, phase, 8)
    exact = lambda side: sorted((c.kind, c.axes, c.group, c.count, c.bytes, c.dtype)
                                for c in side.collectives)
    assert all("r" not in c.axes for c in two.measured.collectives)
    assert exact(two.measured) == exact(two.predicted) == exact(one.measured)
    assert all(len(set(g)) == len(g) and max(g) - min(g) < 8 and min(g) // 8 == max(g) // 8
               for c in two.hlo_collectives for g in c.groups)  # device ids of one replica
    assert two.measured.kv_bytes_per_device == two.predicted.kv_bytes_per_device == \
        one.measured.kv_bytes_per_device
    assert two.measured.weight_bytes_per_device == one.measured.weight_bytes_per_device
    report = two.to_json()
    assert (report["replicas"], report["mesh"], report["batch"]) == (2, "x".join(
        map(str, shape)), 16)


# ---- the planner ------------------------------------------------------------------------------
def test_a_phase_on_replicas_is_one_replicas_phase():
    """R replicas of a mesh at batch B: latency, MFU and memory of one replica at B/R; cost
    per token over every chip, the same number; chips, batch and tokens all replicas'."""
    kw = dict(input_len=0, history_len=2048, gen_len=64, hardware="tpu-v4", pad=True)
    two = phase_estimate("palm-62b", L_("ws2d", "batch"), (2, 2, 4), "decode", batch=256,
                         replicas=2, **kw)
    one = phase_estimate("palm-62b", L_("ws2d", "batch"), (2, 2, 4), "decode", batch=128, **kw)
    assert (two.chips, two.batch, two.tokens) == (32, 256, 256 * 64)
    assert two.latency_s == one.latency_s and two.mfu == pytest.approx(one.mfu)
    assert two.cost == pytest.approx(32 * two.latency_s / (256 * 64)) == pytest.approx(one.cost)
    assert two.memory_per_chip_bytes == one.memory_per_chip_bytes
    j = two.to_json()
    assert (j["replicas"], j["chips_per_replica"], j["batch_per_replica"], j["mesh"]) == (
        2, 16, 128, [2, 2, 4])


def test_replicas_inside_nvlink_nodes_beat_one_group_across_them():
    """Llama 3 8B decode on 64 H100s (8 nodes of 8) at batch 64: one group over all 64 chips
    sends its collectives through the nodes' InfiniBand; replicas of at most 8 chips keep
    every collective on a node's NVLink, and `auto` takes them."""
    kw = dict(input_len=0, history_len=1024, gen_len=64, weights="int8")
    auto = plan("llama-3-8b", "h100-sxm", 64, 64, replicas="auto", **kw)
    one = plan("llama-3-8b", "h100-sxm", 64, 64, **kw)
    best = auto.decode.best
    assert best.replicas > 1 and best.chips == 64 and np.prod(best.mesh_shape) <= 8
    assert best.latency_s < one.decode.best.latency_s / 5
    hw = get_hardware("h100-sxm")
    for r in replica_counts(hw, 64, 64, "auto"):
        forced = plan("llama-3-8b", hw, 64, 64, replicas=r, **kw).decode.best
        assert best.latency_s <= forced.latency_s
    j = auto.to_json()
    assert j["replicas"] == "auto" and j["decode"]["replicas"] == best.replicas
    assert j["decode"]["chips_per_replica"] * best.replicas == 64
    assert plan("llama-3-8b", "h100-sxm", 64, 64, **kw).to_json()["decode"]["replicas"] == 1


def test_replica_counts_and_their_errors():
    hw = get_hardware("tpu-v4")
    assert replica_counts(hw, 64, 8, "auto") == (1, 2, 4, 8)  # R divides the chips and batch
    assert replica_counts(hw, 64, 64, 4) == (4,)
    with pytest.raises(UsageError, match=r"3 replicas need 3 to divide the chips \(64\)"):
        replica_counts(hw, 64, 64, 3)
    with pytest.raises(UsageError, match="mesh 2x2x2 has 8 chips, not 16 \\(64 chips over 4 "
                                         "replicas\\)"):
        plan("palm-8b", "tpu-v4", 64, 64, mesh=(2, 2, 2), replicas=4)
    # a replica's mesh given: auto means as many replicas as fill the chips
    p = plan("palm-8b", "tpu-v4", 64, 64, input_len=128, gen_len=8, mesh=(2, 2, 4),
             replicas="auto")
    assert p.prefill.best.replicas == p.decode.best.replicas == 4


def test_pareto_frontier_includes_replica_points():
    """The Llama 3 8B frontier on 8 and 16 H100s (one node, two): with replicas weighed, a
    point of two 8-chip replicas replaces the one 16-chip group across the nodes."""
    kw = dict(chips=[8, 16], batches=[16, 64], input_len=0, history_len=1024, gen_len=32,
              weights="int8", looped="no")
    res = pareto("llama-3-8b", "h100-sxm", replicas="auto", **kw)
    plain = pareto("llama-3-8b", "h100-sxm", **kw)
    assert res["replicas"] == "auto" and any(pt["replicas"] > 1 for pt in res["decode"])
    assert all(pt["replicas"] == 1 for pt in plain["decode"])
    assert res["considered"] > plain["considered"]


def test_plan_and_pareto_command_lines_take_replicas(capsys):
    args = ["plan", "--model", "llama-3-8b", "--hardware", "h100-sxm", "--chips", "64",
            "--batch", "64", "--input-len", "0", "--history-len", "1024", "--gen-len", "64",
            "--weights", "int8", "--kv", "int8"]
    assert main(args + ["--replicas", "auto", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["replicas"] == "auto" and out["kv"] == "int8" and out["decode"]["replicas"] > 1
    assert main(args + ["--replicas", "auto"]) == 0
    text = capsys.readouterr().out
    assert "replicas" in text.splitlines()[1] and "int8 KV cache" in text.splitlines()[0]
    assert main(args) == 0
    assert "replicas" not in capsys.readouterr().out  # one group: the table as before
    assert main(["pareto", "--model", "palm-8b", "--chips", "8", "--batches", "8",
                 "--input-len", "128", "--gen-len", "8", "--replicas", "2", "--no-progress",
                 "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert {pt["replicas"] for ph in ("prefill", "decode") for pt in res[ph]} == {2}
    with pytest.raises(SystemExit) as bad:  # argparse's own usage error
        main(["plan", "--model", "palm-8b", "--replicas", "none"])
    assert bad.value.code == 2
    assert "expected auto or a positive count" in capsys.readouterr().err
