"""The same code on several processes, as on the hosts of a multi-host slice: JAX's own
multi-controller runtime (`jax.distributed`) with gloo collectives between the processes.

This test process already runs JAX with 256 devices (conftest.py), so the workers are fresh
Python processes (tests/multihost_worker.py) started by `tpuinfer.multihost.launch`. They save
what they gathered; the single-process reference is computed here.
"""
import functools
import json
import os
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

import tpuinfer as ti
from tpuinfer import multihost
from tpuinfer.demo import format_report
from tpuinfer.mesh import parse_shape

CFG = ti.MODELS["tiny"]
PROMPT_LEN, STEPS = 4, 3  # as the worker's defaults
WORKER = os.path.join(os.path.dirname(__file__), "multihost_worker.py")
TIMEOUT_S = 240  # a run past this stops its workers and fails: never a hang

# (devices, mesh) -> layout pairs "prefill:decode". On 2 x 128 devices gloo needs a socket per
# pair of devices in each collective group (multihost.open_files_needed): the weight-gathered
# pair's groups (at most 64 devices) fit any machine; ws2d's groups of all 256 devices need
# about 41,000 open files per process, so that pair runs only where the limit allows.
RUNS = {
    (8, "2x2x2"): ["ws2d/heads:ws2d/batch", "wg-xyz/batch:ws2d/batch"],
    (256, "4x8x8"): ["wg-x/heads:wg-xy/batch", "ws2d/heads:ws2d/batch"],
}
MEASURED = ("ws2d", "batch", "decode")  # measured on the 2 x 4 run, and here on one process


def worker_argv(devices, mesh, out, extra):
    def argv(process_id, coordinator):
        return [sys.executable, WORKER, "--devices", str(devices), "--processes", "2",
                "--process-id", str(process_id), "--coordinator", coordinator, "--mesh", mesh,
                "--out", str(out), *extra]
    return argv


def layouts(pair):
    return [ti.Layout(*phase.split("/")) for phase in pair.split(":")]


def fits(pair, mesh) -> bool:
    limit = multihost.open_file_limit()
    shape = parse_shape(mesh)
    need = multihost.open_files_for(CFG, layouts(pair), shape, int(np.prod(shape)), 2)
    return limit is None or need + multihost.RESERVED_FILES <= limit


def children() -> list[int]:
    """Live processes whose parent is this test process."""
    pids = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # exited meanwhile
        if ppid == os.getpid():
            pids.append(int(entry))
    return pids


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One launch of 2 processes per (devices, mesh), every fitting pair in it, on demand."""
    @functools.lru_cache(maxsize=None)
    def run(devices, mesh):
        out = tmp_path_factory.mktemp(f"run{devices}")
        pairs = [p for p in RUNS[devices, mesh] if fits(p, mesh)]
        extra = ["--pairs", *pairs] + (["--measure", *MEASURED] if devices == 8 else [])
        multihost.launch(worker_argv(devices, mesh, out, extra), 2, timeout_s=TIMEOUT_S)
        assert children() == []
        return out, pairs
    return run


@functools.lru_cache(maxsize=None)
def reference(batch):
    prompt_BL = np.random.default_rng(batch).integers(0, CFG.V, (batch, PROMPT_LEN))
    return ti.generate(ti.init_params(CFG, seed=0), CFG, prompt_BL, STEPS)


# ---- generation across processes ------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("devices, mesh, pair",
                         [(d, m, p) for (d, m), pairs in RUNS.items() for p in pairs],
                         ids=lambda v: str(v).replace("/", "-").replace(":", "_"))
def test_two_processes_match_reference(runs, devices, mesh, pair):
    """Tokens identical to one process's unsharded reference, as gathered by every process."""
    if not fits(pair, mesh):
        pytest.skip(f"{pair} on 2 x {devices // 2} devices needs more open files per process "
                    f"than this machine allows ({multihost.open_file_limit()})")
    out, pairs = runs(devices, mesh)
    ref = reference(devices)
    for process in range(2):
        got = np.load(out / f"pair{pairs.index(pair)}-process{process}.npz")
        np.testing.assert_array_equal(got["tokens"], ref.tokens)
        rel = np.linalg.norm(got["step_logits"] - ref.step_logits) / np.linalg.norm(
            ref.step_logits)
        assert rel < 1e-4, rel


@pytest.mark.slow
def test_measurement_on_two_processes_reports_the_same_collectives(runs):
    out, _ = runs(8, "2x2x2")
    ffn, attention, phase = MEASURED
    one = ti.measure(CFG, ti.make_mesh((2, 2, 2)), ti.Layout(ffn, attention), phase=phase, batch=8,
                  repeats=1).measured.to_json()["collectives"]
    assert one  # a layout with collectives, so the comparison says something
    for process in range(2):
        with open(out / f"measure-process{process}.json") as f:
            assert json.load(f) == one


# ---- failures: a clear error, in time, and no process left behind ---------------------------
@pytest.mark.slow
def test_a_killed_worker_stops_the_others_with_a_clear_error(tmp_path):
    """Worker 1 SIGKILLs itself after its first generation, while worker 0 goes on into the
    next and waits in a collective for it."""
    extra = ["--pairs", "ws2d/heads:ws2d/heads", "ws2d/batch:ws2d/batch", "--die-after-first"]
    t0 = time.monotonic()
    with pytest.raises(multihost.WorkerError,
                       match=r"worker 1 of 2 failed \(killed by SIGKILL\).*stopped the other"):
        multihost.launch(worker_argv(8, "2x2x2", tmp_path, extra), 2, timeout_s=TIMEOUT_S)
    assert time.monotonic() - t0 < 120
    assert (tmp_path / "pair0-process1.npz").exists()  # it died mid-run, not at the start
    assert not (tmp_path / "pair1-process0.npz").exists()
    assert children() == []


def test_a_failing_worker_is_named_with_its_output_and_the_others_stopped():
    def argv(process_id, coordinator):
        code = ("import sys; sys.exit('bad input on worker 0')" if process_id == 0 else
                "import time; time.sleep(60)")
        return [sys.executable, "-c", code]
    t0 = time.monotonic()
    with pytest.raises(multihost.WorkerError,
                       match=r"(?s)worker 0 of 2 failed \(exit status 1\).*bad input on worker 0"):
        multihost.launch(argv, 2, timeout_s=30)
    assert time.monotonic() - t0 < 15
    assert children() == []


def test_workers_past_the_timeout_are_stopped():
    t0 = time.monotonic()
    with pytest.raises(multihost.WorkerError, match=r"worker\(s\) 0, 1 of 2 still running after 1"):
        multihost.launch(lambda i, c: [sys.executable, "-c", "import time; time.sleep(60)"], 2,
                         timeout_s=1)
    assert time.monotonic() - t0 < 15
    assert children() == []


# ---- the command and the arguments ----------------------------------------------------------
@pytest.mark.slow
def test_demo_on_two_processes_prints_one_report_from_process_0():
    proc = subprocess.run([sys.executable, "-m", "tpuinfer", "demo", "--processes", "2",
                           "--mesh", "2x2x2", "--batch", "8", "--prompt-len", "4", "--steps",
                           "3", "--prefill", "ws2d", "heads", "--decode", "ws2d", "batch",
                           "--json", "--timeout", str(TIMEOUT_S)],
                          capture_output=True, text=True, timeout=TIMEOUT_S + 30)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)  # one object, nothing else on stdout
    assert report["tokens_match"] is True
    assert (report["processes"], report["devices"], report["mesh"]) == (2, 8, [2, 2, 2])
    assert [p["layout"] for p in report["phases"]] == ["ws2d/heads", "ws2d/batch"]
    assert "on 8 emulated devices in 2 processes" in format_report(report)
    assert "EQUAL to the unsharded reference" in format_report(report)


def test_bad_emulation_arguments_say_what_would_work():
    with pytest.raises(ValueError, match="256 devices do not split evenly over 3 processes; "
                                         "choose a process count that divides 256: 1, 2, 4"):
        ti.emulate(256, processes=3, coordinator="127.0.0.1:1234")
    with pytest.raises(ValueError, match=r"process_id must be one of 0\.\.1"):
        ti.emulate(8, processes=2, process_id=2, coordinator="127.0.0.1:1234")
    for coordinator in (None, "localhost", "127.0.0.1:http"):
        with pytest.raises(ValueError, match="needs coordinator='HOST:PORT'"):
            ti.emulate(8, processes=2, coordinator=coordinator)
    assert jax.device_count() == 256  # the backend has started (conftest asked for 256)
    with pytest.raises(ti.EmulationError, match=r"already started with 256 device\(s\); "
                                                r"emulate\(256, processes=2, \.\.\.\) cannot"):
        ti.emulate(256, processes=2, coordinator="127.0.0.1:1234")


def test_demo_refuses_more_open_files_than_allowed_before_starting(monkeypatch, capsys):
    from tpuinfer.cli import main
    monkeypatch.setattr(multihost, "open_file_limit", lambda: 20000)
    assert main(["demo", "--processes", "2", "--json"]) == 2
    error = json.loads(capsys.readouterr().out)["error"]
    assert "2 processes of 128 devices each need about 41088 open files" in error
    assert "allows 20000 (ulimit -Hn); use 8 processes or more" in error
    assert main(["demo", "--processes", "3"]) == 2
    assert "do not split evenly over 3 processes" in capsys.readouterr().err
