"""Placing arrays on the mesh (tpuinfer/placement.py): through the host on the emulated CPU
mesh, device to device elsewhere; caches made once per configuration; the session's caches
bounded and cleared by `ti.clear_caches()`."""
import importlib

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

import tpuinfer as ti
from tpuinfer import caches, engine, placement
from tpuinfer.shapes import param_shapes

measure = importlib.import_module("tpuinfer.measure")  # the module (ti.measure: its function)

CFG = ti.MODELS["tiny"]
SHAPE = (2, 2, 2)


@pytest.fixture
def host_path_calls(monkeypatch):
    """How often the host path ran, counting calls to the real `_via_host`."""
    calls = []
    real = placement._via_host

    def counted(x, sharding):
        calls.append(sharding)
        return real(x, sharding)
    monkeypatch.setattr(placement, "_via_host", counted)
    return calls


def _tree():
    x = np.arange(8 * 16, dtype=np.float32).reshape(8, 16)
    return {"a": x, "b": [x + 1]}


def test_emulated_mesh_places_through_the_host(host_path_calls):
    mesh = ti.make_mesh(SHAPE)
    placed = placement.place(_tree(), mesh, {"a": P("x", "y"), "b": [P(None, ("y", "z"))]})
    assert len(host_path_calls) == 2
    np.testing.assert_array_equal(placed["b"][0], _tree()["b"][0])


def test_real_devices_place_device_to_device(host_path_calls, monkeypatch):
    """The platform check says "not the emulator" (mocked); the transfer itself is real:
    `jax.device_put` onto, and then between, shardings; no host path taken."""
    monkeypatch.setattr(placement, "through_host", lambda mesh: False)
    mesh = ti.make_mesh(SHAPE)
    specs = {"a": P("x", "y"), "b": [P(None, ("y", "z"))]}
    first = placement.place(_tree(), mesh, specs)
    again = placement.place(first, mesh, {"a": P(None, "z"), "b": [P("x")]})  # resharded
    assert host_path_calls == []
    assert again["a"].sharding.spec == P(None, "z")
    for got in (first, again):
        np.testing.assert_array_equal(got["a"], _tree()["a"])
        np.testing.assert_array_equal(got["b"][0], _tree()["b"][0])
    assert placement.place(again, mesh, {"a": P(None, "z"), "b": [P("x")]}) is again


def test_measure_without_params_creates_them_in_their_shards(monkeypatch):
    """Off the emulator `measure` asks `init_params` for its parameters in their shards
    (never whole); host arrays of the same shapes stand in for them, to compile nothing."""
    monkeypatch.setattr(placement, "through_host", lambda mesh: False)
    asked = []
    rng = np.random.default_rng(0)
    host = jax.tree.map(lambda shape: rng.standard_normal(shape, np.float32),
                        param_shapes(CFG), is_leaf=lambda x: isinstance(x, tuple))
    monkeypatch.setattr(measure, "init_params", lambda cfg, seed, **kw: asked.append(kw) or host)
    mesh = ti.make_mesh(SHAPE)
    placed = measure._placed.__wrapped__(CFG, "ws2d", mesh, "f32", 0)  # not kept
    assert asked == [{"shardings": engine.param_shardings(CFG, ti.Layout("ws2d"), mesh)}]
    np.testing.assert_array_equal(placed["layers"][1]["w_down"], host["layers"][1]["w_down"])


def test_init_cache_compiles_once_per_configuration(monkeypatch):
    monkeypatch.setattr(placement, "through_host", lambda mesh: False)
    mesh, layout = ti.make_mesh(SHAPE), ti.Layout("ws2d", "batch")
    placement._zeros_fn.cache_clear()
    for _ in range(3):
        cache = engine.init_cache(CFG, layout, mesh, 8, 7, "f32")
    assert placement._zeros_fn.cache_info().misses == 1
    spec = engine.cache_specs(CFG, layout, SHAPE, 8)[0]["k"]
    assert cache[0]["k"].sharding.is_equivalent_to(
        jax.NamedSharding(mesh, placement.partition_spec(spec)), 4)
    assert not np.asarray(cache[-1]["v"]).any()


def test_compiled_steps_are_bounded():
    recent = engine._Recent(2)
    for k in "abc":
        recent[k] = k
    assert list(recent) == ["b", "c"]
    recent["b"]  # used: now the most recent
    recent["d"] = "d"
    assert list(recent) == ["b", "d"]


def test_clear_caches_empties_every_cache(monkeypatch):
    # the engine and measure (imported above) register their caches where they make them
    assert {"tpuinfer.engine._COMPILED", "tpuinfer.measure._RAN"} <= set(ti.cache_sizes())
    # the session's compiled steps stay for the other tests: clear a stand-in, registered as
    # a module registers its own
    monkeypatch.setattr(caches, "_REGISTERED", {})
    held = caches.register("a test's compiled steps", engine._Recent(engine.COMPILED_STEPS))
    held["step"] = object()
    cleared = []
    monkeypatch.setattr(jax, "clear_caches", lambda: cleared.append(True))
    engine.init_cache(CFG, ti.Layout("ws1d", "heads"), None, 1, 2, "f32")
    assert ti.cache_sizes()["a test's compiled steps"] == 1
    ti.clear_caches()
    assert not any(ti.cache_sizes().values()) and cleared == [True] and not held
