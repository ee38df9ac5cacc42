"""Several JAX processes on one machine, as the hosts of a multi-host slice are.

Each process is a JAX controller of JAX's own multi-controller runtime (`jax.distributed`):
it holds n/P emulated CPU devices, and XLA's gloo collectives carry the collectives between
processes over 127.0.0.1. `initialize` is what `tpuinfer.emulate(n, processes=P, ...)` runs in
each process; `launch` starts P local worker processes and supervises them, so that one failed
worker stops the others and the launch ends with an error naming it: never a hang, never a
process left behind.

On a real slice or GPU cluster neither is used: every host runs the same script, which calls
`jax.distributed.initialize()` with no arguments instead of `tpuinfer.emulate` (README).
"""
from __future__ import annotations

import math
import os
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from typing import Callable

LOCALHOST = "127.0.0.1"
RESERVED_FILES = 1000  # open files a JAX process needs besides gloo's sockets


class WorkerError(RuntimeError):
    """A worker process failed or ran past its time; the others have been stopped."""


# ---- inside each process ----------------------------------------------------------------------
def check_args(n: int, processes: int, process_id: int, coordinator: str | None) -> None:
    """Raise a ValueError naming what is wrong with a multi-process emulation request."""
    if not isinstance(processes, int) or processes < 1:
        raise ValueError(f"processes must be a positive number of processes, got {processes!r}")
    if n % processes:
        divisors = ", ".join(str(p) for p in range(1, n + 1) if n % p == 0)
        raise ValueError(f"{n} devices do not split evenly over {processes} processes; choose a "
                         f"process count that divides {n}: {divisors}")
    if not isinstance(process_id, int) or not 0 <= process_id < processes:
        raise ValueError(f"process_id must be one of 0..{processes - 1} for {processes} "
                         f"processes, got {process_id!r}")
    if processes == 1:
        if coordinator is not None:
            raise ValueError("a coordinator is only needed with processes > 1")
        return
    host, _, port = (coordinator or "").rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"processes={processes} needs coordinator='HOST:PORT' (process 0's "
                         f"address, the same in every process, e.g. '127.0.0.1:12345'), got "
                         f"{coordinator!r}")


def initialize(n: int, processes: int, process_id: int, coordinator: str,
               timeout_s: int = 120) -> None:
    """Start this process's share of an n-device emulation across `processes` processes.

    Call before JAX's backend starts. The coordinator service (run by process 0) listens only
    on the coordinator's own address, so '127.0.0.1:PORT' never opens a port to the network.
    """
    import jax
    jax.config.update("jax_platforms", "cpu")
    jax.config.update("jax_num_cpu_devices", n // processes)
    # CPU collectives stay inside one process unless an implementation that crosses processes
    # is chosen; gloo is the one every jaxlib ships.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    _raise_open_file_limit()
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=processes,
                               process_id=process_id, coordinator_bind_address=coordinator,
                               # the arguments are complete: do not let a scheduler's
                               # environment (Slurm, MPI, TPU VM) override them
                               cluster_detection_method="deactivate",
                               initialization_timeout=timeout_s)


def _raise_open_file_limit() -> None:
    """Gloo's sockets need many open files (`open_files_needed`): take all the system allows."""
    try:
        import resource
    except ImportError:  # not POSIX: nothing to raise
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):  # macOS refuses an unlimited soft limit: keep the soft one
            pass


def open_files_needed(local_devices: int, group_sizes) -> int:
    """Sockets one process opens for its collectives, at least. Gloo makes every emulated
    device a rank and joins each pair of ranks in a collective's group by its own socket, once
    per distinct group: a process of d devices in groups of g1, g2, ... needs d·Σ(g-1) open
    files (2 processes x 128 devices with one group of all 256 devices: 32,640)."""
    return local_devices * sum(g - 1 for g in group_sizes)


def open_files_for(cfg, layouts, mesh_shape, batch: int, processes: int) -> int:
    """`open_files_needed` by each process for the collectives the layout files list (one
    group per set of mesh axes): a lower bound, as resharding and sampling add a few."""
    from .layouts import step_terms
    groups = {frozenset(c.axes): c.group for layout in layouts
              for c in step_terms(cfg, layout, mesh_shape, batch=batch, tokens=1,
                                  context=1).collectives}
    return open_files_needed(math.prod(mesh_shape) // processes, groups.values())


def check_open_files(cfg, layouts, mesh_shape, batch: int, processes: int) -> None:
    """A ValueError, before any process starts, when the layouts need more open files per
    process than this machine allows, naming a process count that fits."""
    limit = open_file_limit()
    need = open_files_for(cfg, layouts, mesh_shape, batch, processes)
    if limit is None or need + RESERVED_FILES <= limit:
        return
    n = math.prod(mesh_shape)
    fits = [p for p in range(processes + 1, n + 1) if n % p == 0 and
            open_files_for(cfg, layouts, mesh_shape, batch, p) + RESERVED_FILES <= limit]
    raise ValueError(
        f"{processes} processes of {n // processes} devices each need about {need} open files "
        f"each for these layouts' collectives (gloo joins every pair of devices in a "
        f"collective group by its own socket), but this machine allows {limit} (ulimit -Hn); "
        + (f"use {fits[0]} processes or more, " if fits else "") + "or raise the limit")


def open_file_limit() -> int | None:
    """The most files a process may open here (`ulimit -Hn`), None where there is no limit."""
    try:
        import resource
    except ImportError:
        return None
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return None if hard == resource.RLIM_INFINITY else hard


# ---- the launcher ---------------------------------------------------------------------------
def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now (the coordinator binds it moments later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOCALHOST, 0))
        return s.getsockname()[1]


@dataclass
class Finished:
    """What one worker printed, once every worker has exited cleanly."""
    process_id: int
    stdout: str
    stderr: str


@dataclass
class _Worker:
    process_id: int
    proc: subprocess.Popen | None  # None until it has started
    out: object  # the files its stdout and stderr go to (pipes could fill and block it)
    err: object

    def text(self, f) -> str:
        f.flush()
        f.seek(0)
        return f.read()


def launch(argv_of: Callable[[int, str], list[str]], processes: int, timeout_s: float = 600,
           stop_grace_s: float = 5.0) -> list[Finished]:
    """Run `argv_of(process_id, coordinator)` as `processes` local processes and wait for all.

    The coordinator is 127.0.0.1 on a free port. If any worker exits non-zero, or the whole
    run passes `timeout_s`, every other worker is stopped (SIGTERM, then SIGKILL after
    `stop_grace_s`) and a `WorkerError` says which worker failed and shows its last output.
    """
    coordinator = f"{LOCALHOST}:{free_port()}"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    workers: list[_Worker] = []
    with tempfile.TemporaryDirectory(prefix="tpuinfer-workers-") as logs:
        try:
            for i in range(processes):
                worker = _Worker(i, None, open(os.path.join(logs, f"{i}.out"), "w+"),
                                 open(os.path.join(logs, f"{i}.err"), "w+"))
                workers.append(worker)  # before it starts: `finally` closes its files anyway
                worker.proc = subprocess.Popen(argv_of(i, coordinator), stdout=worker.out,
                                               stderr=worker.err, stdin=subprocess.DEVNULL,
                                               env=env)
            _supervise(workers, timeout_s)
            return [Finished(w.process_id, w.text(w.out), w.text(w.err)) for w in workers]
        finally:
            _stop(workers, stop_grace_s)
            for w in workers:
                w.out.close()
                w.err.close()


def _supervise(workers: list[_Worker], timeout_s: float) -> None:
    start = time.monotonic()
    while True:
        codes = [w.proc.poll() for w in workers]
        failed = [w for w, code in zip(workers, codes) if code not in (None, 0)]
        if failed:
            raise WorkerError(_failure_message(workers, failed, time.monotonic() - start))
        if all(code == 0 for code in codes):
            return
        if time.monotonic() - start > timeout_s:
            running = [str(w.process_id) for w, code in zip(workers, codes) if code is None]
            raise WorkerError(f"worker(s) {', '.join(running)} of {len(workers)} still running "
                              f"after {timeout_s:.0f} s; stopped every worker")
        time.sleep(0.1)


def _stop(workers: list[_Worker], grace_s: float) -> None:
    """Stop every worker still running and reap them all, so none outlives the launch."""
    alive = [w.proc for w in workers if w.proc is not None and w.proc.poll() is None]
    for p in alive:
        p.terminate()
    deadline = time.monotonic() + grace_s
    for p in alive:
        try:
            p.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def _failure_message(workers, failed, elapsed: float) -> str:
    def status(w):
        code = w.proc.returncode
        return (f"killed by {signal.Signals(-code).name}" if code < 0
                else f"exit status {code}")

    first = failed[0]
    tail = "\n".join(first.text(first.err).splitlines()[-15:])
    lines = [f"worker {w.process_id} of {len(workers)} failed ({status(w)})" for w in failed]
    msg = "; ".join(lines) + f" after {elapsed:.1f} s; stopped the other workers."
    if any("Too many open files" in w.text(w.out) + w.text(w.err) for w in failed):
        msg += (" The open-file limit ran out: gloo opens one socket per pair of devices in a "
                "collective group, a process of d devices in a group of g needs d*(g-1); "
                "raise `ulimit -n`, or use more processes with fewer devices each.")
    if tail:
        msg += f"\nlast lines of worker {first.process_id}'s error output:\n{tail}"
    return msg
