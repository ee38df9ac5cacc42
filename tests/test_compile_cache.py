"""Compile once per machine: the persistent compilation cache, its switch, and `tpuinfer warmup`."""
import json
import os
import subprocess
import sys

import pytest

import tpuinfer as ti
from tpuinfer import compile_cache, engine
from tpuinfer.config import get_model
from tpuinfer.cli.demo import DEFAULTS, planned_layouts
from tpuinfer.cli.warmup import FULL, workshop_steps

# One step compiled in a fresh process that owns its cache (the suite's own cache directory,
# set through JAX_COMPILATION_CACHE_DIR, is taken out of its environment).
STEP = """
import tpuinfer as ti
ti.emulate(8)
from tpuinfer.cli.warmup import Step, compile_steps
compile_steps([Step("one", (2, 2, 2), ti.Layout("ws2d", "batch"), "decode", 8, 8)])
"""


def fresh_process(cache, **env):
    environ = {k: v for k, v in os.environ.items()
               if k not in ("JAX_COMPILATION_CACHE_DIR", "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS",
                            compile_cache.SWITCH)}
    return environ | {"TPUINFER_CACHE": str(cache)} | env


def entries(cache):
    return sorted(p.name for p in (cache / "jax").iterdir())


def test_the_switch_turns_the_cache_off(tmp_path, monkeypatch):
    monkeypatch.setenv("TPUINFER_CACHE", str(tmp_path))
    monkeypatch.delenv(compile_cache.SWITCH, raising=False)
    assert compile_cache.directory() == tmp_path / "jax"  # on by default, beside host.json
    for off in ("off", "0", "No", "false"):
        monkeypatch.setenv(compile_cache.SWITCH, off)
        assert compile_cache.directory() is None


@pytest.mark.slow
def test_a_second_process_reads_back_what_the_first_compiled(tmp_path):
    run = lambda env: subprocess.run([sys.executable, "-c", STEP], env=env, capture_output=True,
                                     text=True, timeout=300)
    # every compile kept, however long it took: under load a compile near the threshold
    # (compile_cache.MIN_COMPILE_S) falls on either side of it from one run to the next
    keep_all = {"JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
    first = run(fresh_process(tmp_path, **keep_all))
    assert first.returncode == 0, first.stderr
    written = entries(tmp_path)
    assert written  # the step (and its initializers) kept
    second = run(fresh_process(tmp_path, **keep_all))
    assert second.returncode == 0, second.stderr
    assert entries(tmp_path) == written  # every compile read back: nothing new to write

    off = run(fresh_process(tmp_path / "off", **{compile_cache.SWITCH: "off"}))
    assert off.returncode == 0, off.stderr
    assert not (tmp_path / "off" / "jax").exists()  # switched off: nothing written anywhere


def test_warmup_refuses_when_the_cache_is_off(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "tpuinfer", "warmup", "--json"],
                          env=fresh_process(tmp_path, **{compile_cache.SWITCH: "off"}),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    error = json.loads(proc.stdout)["error"]
    assert "compilation cache is off" in error and f"unset {compile_cache.SWITCH}" in error


def test_warmup_compiles_the_demos_steps_and_the_explorers():
    steps = workshop_steps()
    demo = planned_layouts(get_model("tiny"), FULL, DEFAULTS["batch"], DEFAULTS["prompt_len"],
                           DEFAULTS["steps"])
    assert [s.layout for s in steps[:2]] == list(demo)
    assert steps[1].context == DEFAULTS["prompt_len"] + DEFAULTS["steps"]
    for s in steps:  # each one the engine runs on the full mesh
        assert s.mesh == FULL
        engine.check(get_model(s.model), s.layout, s.mesh, s.batch)
    assert {(s.phase, s.batch) for s in steps} >= {("prefill", 256), ("decode", 256)}
    assert ti.Layout("ws2d", "batch") in {s.layout for s in steps if s.phase == "decode"}
