"""Several JAX processes on one machine, as the hosts of a multi-host slice are.

Each process is a JAX controller of JAX's own multi-controller runtime (`jax.distributed`):
it holds n/P emulated CPU devices, and XLA's gloo collectives carry the collectives between
processes over 127.0.0.1. `distributed.initialize` is what `tpuinfer.emulate(n, processes=P,
...)` runs in each process; `launch` starts P local worker processes and supervises them.

A launch never leaves a process behind and never hangs:
- a failed worker stops the others, and the launch raises a `WorkerError` naming it;
- a run in which no worker reports progress (`progress`) for `stall_s` is stopped, naming each
  worker's process id and the step it was on (a collective waits for every process);
- Ctrl-C, SIGTERM or SIGHUP to the launcher stops every worker (SIGTERM to its process group,
  SIGKILL a few seconds later) and raises `Stopped`;
- a launcher killed outright takes its workers with it: each worker asks Linux for a signal
  when its parent dies (`follow_launcher`, which `initialize` calls).

On a real slice or GPU cluster neither is used: every host runs the same script, which calls
`jax.distributed.initialize()` with no arguments instead of `tpuinfer.emulate` (README).
"""
from __future__ import annotations

import contextlib
import math
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Callable

from .distributed import LAUNCHER_ENV, PROGRESS_ENV, progress
from .errors import TpuinferError, UsageError
from .layouts import step_terms

LOCALHOST = "127.0.0.1"
RESERVED_FILES = 1000  # open files a JAX process needs besides gloo's sockets
STOP_GRACE_S = 3.0  # from SIGTERM to SIGKILL for a worker that has not exited
STARTING = "starting Python (before its first progress report)"
FINISHED = "finished (exit status 0)"


class WorkerError(TpuinferError, RuntimeError):
    """A worker process failed, hung or ran past its time; every worker has been stopped."""


class Stopped(KeyboardInterrupt):
    """The launcher was told to stop (Ctrl-C, SIGTERM, SIGHUP) and has stopped its workers.

    A KeyboardInterrupt, so that whatever lets Ctrl-C through lets this through too.
    `exit_status` is the shell's for that signal: 130 for Ctrl-C, 143 for SIGTERM."""

    def __init__(self, signum: int, stopped: list[str]):
        self.signum, self.stopped = signum, stopped
        self.exit_status = 128 + signum
        name = signal.Signals(signum).name
        what = (f"stopped {len(stopped)} worker process(es): " + "; ".join(stopped)
                if stopped else "no worker process was still running")
        super().__init__(f"{name} received: {what}")


@contextlib.contextmanager
def report_steps(decode_steps: int):
    """Within: every step `tpuinfer.generate` runs is reported as this worker's `progress`
    ("decode step 5 of 31 (ws1d/heads)"), by wrapping the engine's `compiled_step`, which each
    step calls before it runs. A hung collective then names the step it hangs in."""
    from . import engine  # JAX: a worker's engine, wrapped as it runs (the launcher has none)
    compiled_step = engine.compiled_step
    calls = {True: 0, False: 0}  # by "runs the unsharded reference"

    def reporting(cfg, layout, mesh, *args):
        reference = mesh is None
        calls[reference] += 1
        k = calls[reference] - 1
        where = "reference" if reference else str(layout)
        progress(f"prefill ({where})" if k == 0 else
                 f"decode step {k} of {decode_steps} ({where})")
        return compiled_step(cfg, layout, mesh, *args)

    engine.compiled_step = reporting
    try:
        yield
    finally:
        engine.compiled_step = compiled_step


# ---- what a run needs: open files and time --------------------------------------------------
def open_files_needed(local_devices: int, group_sizes) -> int:
    """Sockets one process opens for its collectives, at least. Gloo makes every emulated
    device a rank and joins each pair of ranks in a collective's group by its own socket, once
    per distinct group: a process of d devices in groups of g1, g2, ... needs d·Σ(g-1) open
    files (2 processes x 128 devices with one group of all 256 devices: 32,640)."""
    return local_devices * sum(g - 1 for g in group_sizes)


def open_files_for(cfg, layouts, mesh_shape, batch: int, processes: int) -> int:
    """`open_files_needed` by each process for the collectives the layout files list (one
    group per set of mesh axes): a lower bound, as resharding and sampling add a few."""
    groups = {frozenset(c.axes): c.group for layout in layouts
              for c in step_terms(cfg, layout, mesh_shape, batch=batch, tokens=1,
                                  context=1).collectives}
    return open_files_needed(math.prod(mesh_shape) // processes, groups.values())


def open_file_limit() -> int | None:
    """The most files a process may open here (`ulimit -Hn`), None where there is no limit."""
    try:  # resource is POSIX-only: a local import that may fail
        import resource
    except ImportError:
        return None
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return None if hard == resource.RLIM_INFINITY else hard


# Seconds the multi-process demo takes on 2 cores, fitted to its runs on a 2-core machine of the
# workshop's kind (32 to 256 devices in 2 to 8 processes; `estimate_seconds`). Gloo sends every
# hop of a ring collective as its own TCP message over 127.0.0.1, even between two devices of
# one process, so a decode step costs what its messages cost, not what its FLOPs do.
START_S_PER_PROCESS = 12.0  # Python, JAX, jax.distributed, parameters: processes share 2 cores
COMPILE_S_PER_PROCESS = 2.0  # per phase: every process compiles the same step at once
MESSAGE_S = 80e-6  # per gloo message: one hop of one device in one collective
STEP_S = 0.3  # per step: sampling, gathering the tokens to every process, dispatch
PREFILL_S_PER_DEVICE = 0.2  # a prompt-long step's work and first connections, per device
REFERENCE_S = 25.0  # process 0 alone: parameters in one piece, the unsharded reference


def estimate_seconds(cfg, layouts, mesh_shape, batch: int, prompt_len: int, steps: int,
                     processes: int) -> float:
    """Wall time of the multi-process demo on 2 cores, mostly from how many messages its
    collectives send: each device sends g-1 per all-gather, reduce-scatter or all-to-all over
    a group of g, 2(g-1) per all-reduce. Within a factor of 1.5 of the measured runs."""
    n = math.prod(mesh_shape)

    def messages(layout, tokens):
        terms = step_terms(cfg, layout, mesh_shape, batch=batch, tokens=tokens,
                           context=prompt_len + steps)
        return n * sum(c.count * (c.group - 1) * (2 if c.kind == "all-reduce" else 1)
                       for c in terms.collectives)

    prefill, decode = layouts
    return (START_S_PER_PROCESS * processes + 2 * COMPILE_S_PER_PROCESS * processes
            + PREFILL_S_PER_DEVICE * n + messages(prefill, prompt_len) * MESSAGE_S
            + max(steps - 1, 0) * (STEP_S + messages(decode, 1) * MESSAGE_S) + REFERENCE_S)


def about(seconds: float) -> str:
    """'about 40 s', 'about 3 min', rounded up: an estimate errs long."""
    return (f"about {math.ceil(seconds / 10) * 10} s" if seconds < 90 else
            f"about {math.ceil(seconds / 60)} min")


def check_open_files(cfg, layouts_for: Callable, mesh_shape, batch: int, processes: int,
                     prompt_len: int, steps: int) -> float:
    """Before any process starts: the run's `estimate_seconds` when each process's open files
    (`open_files_for` the layouts `layouts_for(shape)` returns) fit this machine's limit, else
    a ValueError advising a run that fits and finishes within `REASONABLE_S`: the largest
    smaller mesh in `REHEARSAL_PROCESSES` processes, with its time."""
    limit = open_file_limit()
    layouts = layouts_for(mesh_shape)
    need = open_files_for(cfg, layouts, mesh_shape, batch, processes)
    time_s = estimate_seconds(cfg, layouts, mesh_shape, batch, prompt_len, steps, processes)
    if limit is None or need + RESERVED_FILES <= limit:
        return time_s
    n, p = math.prod(mesh_shape), REHEARSAL_PROCESSES
    options = []
    if processes == p and time_s <= REASONABLE_S:
        options.append(f"raise the open-file limit to {need + RESERVED_FILES} (`ulimit -n`; the "
                       f"hard limit needs root) and run this ({about_here(time_s)})")
    for shape in _smaller_meshes(mesh_shape, p):
        try:
            smaller = layouts_for(shape)
            fits = open_files_for(cfg, smaller, shape, batch, p) + RESERVED_FILES <= limit
        except UsageError:  # the model or batch does not split over this mesh
            continue
        t = estimate_seconds(cfg, smaller, shape, batch, prompt_len, steps, p)
        if fits and t <= REASONABLE_S:
            options.insert(0, f"run fewer devices: `--processes {p} --mesh "
                              f"{'x'.join(map(str, shape))}` ({math.prod(shape)} devices, "
                              f"{about_here(t)})")
            break
    msg = (f"{processes} processes of {n // processes} devices each need about {need} open "
           f"files each for these layouts' collectives (gloo joins every pair of devices in a "
           f"collective group by its own socket), but this machine allows {limit} (ulimit -Hn)")
    if not options:
        raise UsageError(f"{msg}; no smaller mesh finishes within {about(REASONABLE_S)} here: "
                         f"raise the limit to {need + RESERVED_FILES}, or choose layouts with "
                         f"smaller collective groups")
    raise UsageError(f"{msg}; instead " + ", or ".join(options))


# What an error message may advise: a run in 2 processes (more share 2 cores more slowly, and
# gloo has aborted on a collective mismatch in 4: mesh 4x4x4, wg-x/heads prefill) that finishes
# within 5 minutes here.
REHEARSAL_PROCESSES = 2
REASONABLE_S = 300


def _smaller_meshes(shape, processes: int):
    """Halve the largest axis (the last of equals) while every process keeps a device."""
    shape = list(shape)
    while True:
        axis = max(reversed(range(3)), key=lambda a: shape[a])
        if shape[axis] % 2:
            return
        shape[axis] //= 2
        if math.prod(shape) < processes or math.prod(shape) % processes:
            return
        yield tuple(shape)


def about_here(seconds: float) -> str:
    """`about` for this machine: the estimates are for 2 idle cores (more cores, less time;
    other work running, more)."""
    cores = os.cpu_count() or 1
    text = (f"{about(seconds * 2 / cores)} on this {cores}-core machine" if cores < 2 else
            f"{about(seconds)} on 2 cores" + (" like this machine's" if cores == 2 else ""))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    if load > cores / 2:
        text += f" when idle (it is busy now, load {load:.1f}: expect longer)"
    return text


# ---- the launcher ---------------------------------------------------------------------------
def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now (the coordinator binds it moments later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOCALHOST, 0))
        return s.getsockname()[1]


@dataclass
class _Worker:
    process_id: int
    out: object  # the files its stdout and stderr go to (pipes could fill and block it)
    err: object
    progress_path: str
    proc: subprocess.Popen | None = None  # None until it has started
    step: str = STARTING
    since: float = 0.0  # when it reported `step` (launcher's monotonic clock)

    def text(self, f) -> str:
        f.flush()
        f.seek(0)
        return f.read()

    def read_step(self, now: float) -> None:
        try:
            with open(self.progress_path) as f:
                step = f.read()
        except FileNotFoundError:
            return
        if step and step != self.step:
            self.step, self.since = step, now

    def name(self, n: int) -> str:
        return f"worker {self.process_id} of {n} (pid {self.proc.pid})"


def launch(argv_of: Callable[[int, str], list[str]], processes: int,
           timeout_s: float | None = None, stall_s: float | None = None,
           stop_grace_s: float = STOP_GRACE_S,
           on_start: Callable[[list[int]], None] | None = None) -> None:
    """Run `argv_of(process_id, coordinator)` as `processes` local processes and wait for all.

    The coordinator is 127.0.0.1 on a free port. Each worker runs in its own process group
    (so a terminal's Ctrl-C reaches the launcher alone, which stops them in order) with
    `LAUNCHER_ENV` and `PROGRESS_ENV` set (`follow_launcher`, `progress`). Every worker is
    stopped (SIGTERM to its group, SIGKILL after `stop_grace_s`) and a `WorkerError` raised
    when one exits non-zero, when none has reported progress for `stall_s` (None: no limit;
    workers that never call `progress` stay on their first step), or when the run passes
    `timeout_s`; `Stopped` is raised after Ctrl-C, SIGTERM or SIGHUP. `on_start` gets the
    workers' process ids once all have started.
    """
    for name, value in (("timeout_s", timeout_s), ("stall_s", stall_s)):
        if value is not None and not value > 0:
            raise UsageError(f"{name} must be a positive number of seconds (or None for no "
                             f"limit), got {value!r}")
    coordinator = f"{LOCALHOST}:{free_port()}"
    workers: list[_Worker] = []
    signals = _Signals()
    with tempfile.TemporaryDirectory(prefix="tpuinfer-workers-") as logs:
        try:
            signals.raise_on_stop()
            for i in range(processes):
                worker = _Worker(i, open(os.path.join(logs, f"{i}.out"), "w+"),
                                 open(os.path.join(logs, f"{i}.err"), "w+"),
                                 os.path.join(logs, f"{i}.progress"), since=time.monotonic())
                workers.append(worker)  # before it starts: `finally` closes its files anyway
                env = dict(os.environ, PYTHONUNBUFFERED="1", **{
                    LAUNCHER_ENV: str(os.getpid()), PROGRESS_ENV: worker.progress_path})
                worker.proc = subprocess.Popen(argv_of(i, coordinator), stdout=worker.out,
                                               stderr=worker.err, stdin=subprocess.DEVNULL,
                                               env=env, start_new_session=True)
            if on_start:
                on_start([w.proc.pid for w in workers])
            _supervise(workers, timeout_s, stall_s)
            return
        except (KeyboardInterrupt, _Signal) as stop:
            signum = stop.signum if isinstance(stop, _Signal) else signal.SIGINT
            now = time.monotonic()
            running = [w for w in workers if w.proc is not None and w.proc.poll() is None]
            for w in running:
                w.read_step(now)
            names = [f"{w.name(processes)} on {w.step!r}" for w in running]
            _stop(workers, stop_grace_s, signals)
            raise Stopped(signum, names) from None
        finally:
            _stop(workers, stop_grace_s, signals)
            signals.restore()
            for w in workers:
                w.out.close()
                w.err.close()


class _Signal(BaseException):
    """SIGTERM or SIGHUP, raised in the launcher's main thread so that `finally` runs."""

    def __init__(self, signum):
        super().__init__(signum)
        self.signum = signum


class _Signals:
    """The launcher's handlers for Ctrl-C, SIGTERM and SIGHUP while it has workers. Python's
    default for SIGTERM and SIGHUP ends the process without running `finally` (the workers
    would be left to their parent-death signal); a second signal while the workers are being
    stopped must not cut the stopping short. Handlers can only be set in the main thread;
    elsewhere the caller's stay."""

    STOP = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP")
                 if hasattr(signal, name))

    def __init__(self):
        self.saved = {}
        self.hurry = False

    def _install(self, handler) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for s in self.STOP:
            self.saved.setdefault(s, signal.getsignal(s))
            if self.saved[s] is not signal.SIG_IGN:  # what the caller ignores stays ignored
                signal.signal(s, handler)

    def raise_on_stop(self) -> None:
        def handler(signum, frame):
            raise KeyboardInterrupt if signum == signal.SIGINT else _Signal(signum)
        self._install(handler)

    def hurry_on_stop(self) -> None:
        """While stopping: another signal sends SIGKILL at once instead of waiting."""
        def handler(signum, frame):
            self.hurry = True
        self._install(handler)

    def restore(self) -> None:
        for s, h in self.saved.items():
            signal.signal(s, signal.SIG_DFL if h is None else h)
        self.saved = {}


def _supervise(workers: list[_Worker], timeout_s: float | None, stall_s: float | None) -> None:
    start = time.monotonic()
    n = len(workers)
    while True:
        now = time.monotonic()
        codes = [w.proc.poll() for w in workers]
        failed = [w for w, code in zip(workers, codes) if code not in (None, 0)]
        if failed:
            raise WorkerError(_failure_message(workers, failed, now - start))
        if all(code == 0 for code in codes):
            return
        running = [w for w, code in zip(workers, codes) if code is None]
        for w, code in zip(workers, codes):
            if code is None:
                w.read_step(now)
            elif w.step != FINISHED:  # exiting is progress: the others may wait for it
                w.step, w.since = FINISHED, now
        if timeout_s is not None and now - start > timeout_s:
            raise WorkerError(f"worker(s) {', '.join(str(w.process_id) for w in running)} of "
                              f"{n} still running after {timeout_s:.0f} s; stopped every "
                              f"worker. Where each was: " + _steps(running, n, now))
        latest = max(w.since for w in workers)  # a worker that finished made progress then
        if stall_s is not None and now - latest > stall_s:
            raise WorkerError(
                f"no worker made progress for {now - latest:.0f} s (the limit is {stall_s:.0f} "
                f"s); stopped every worker. Where each was: " + _steps(running, n, now)
                + ". A collective waits until every process joins it, so one process stuck, "
                  "or slower than the limit on this machine, holds up all; if the step is "
                  "only slow here, allow more time (launch(stall_s=...), `tpuinfer demo "
                  "--stall SECONDS`).")
        time.sleep(0.1)


def _steps(running: list[_Worker], n: int, now: float) -> str:
    return "; ".join(f"{w.name(n)} on {w.step!r} for {now - w.since:.0f} s"
                     for w in sorted(running, key=lambda w: w.since))


def _stop(workers: list[_Worker], grace_s: float, signals: _Signals) -> None:
    """Stop every worker still running and reap them all, so none outlives the launch."""
    alive = [w.proc for w in workers if w.proc is not None and w.proc.poll() is None]
    if not alive:
        return
    signals.hurry_on_stop()
    for p in alive:
        _signal_group(p, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while (not signals.hurry and time.monotonic() < deadline
           and any(p.poll() is None for p in alive)):
        time.sleep(0.05)
    for p in alive:
        if p.poll() is None:
            _signal_group(p, signal.SIGKILL)
        p.wait()


def _signal_group(p: subprocess.Popen, signum: int) -> None:
    """Signal the worker's process group (it leads one: `start_new_session`), so whatever it
    started goes too. Only while it is unreaped, so the group id is still its own."""
    try:
        os.killpg(p.pid, signum)
    except (ProcessLookupError, PermissionError):
        try:
            p.send_signal(signum)
        except ProcessLookupError:
            pass


def _failure_message(workers, failed, elapsed: float) -> str:
    def status(w):
        code = w.proc.returncode
        return (f"killed by {signal.Signals(-code).name}" if code < 0
                else f"exit status {code}")

    first = failed[0]
    tail = "\n".join(first.text(first.err).splitlines()[-15:])
    lines = [f"{w.name(len(workers))} failed ({status(w)}) on {w.step!r}" for w in failed]
    msg = "; ".join(lines) + f" after {elapsed:.1f} s; stopped the other workers."
    if any("Too many open files" in w.text(w.out) + w.text(w.err) for w in failed):
        msg += (" The open-file limit ran out: gloo opens one socket per pair of devices in a "
                "collective group, a process of d devices in a group of g needs d*(g-1); "
                "raise `ulimit -n`, or run fewer devices (`tpuinfer demo --processes` checks "
                "this before it starts and advises a mesh that fits).")
    if tail:
        msg += f"\nlast lines of worker {first.process_id}'s error output:\n{tail}"
    return msg
