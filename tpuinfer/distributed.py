"""Inside each process of a multi-process emulation: what `tpuinfer.emulate(n, processes=P,
...)` runs before JAX starts, and how a worker reports its step to the launcher
(`tpuinfer.multihost.launch`, which supervises the workers from outside).

Each process is a JAX controller of JAX's own multi-controller runtime (`jax.distributed`): it
holds n/P emulated CPU devices, and XLA's gloo collectives carry the collectives between
processes over 127.0.0.1. This module sits below the mesh (`tpuinfer.mesh.emulate` calls it)
and needs nothing else of tpuinfer; only `initialize` imports JAX, so the launcher's side (the
demo's command) reads the rest without it.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
import time

from .errors import TpuinferError, UsageError

LAUNCHER_ENV = "TPUINFER_LAUNCHER_PID"  # set in each worker: the process that must outlive it
PROGRESS_ENV = "TPUINFER_PROGRESS_FILE"  # set in each worker: where `progress` writes its step
_following = False  # this process has asked to end with its launcher


class LauncherEnded(TpuinferError):
    """A worker's launcher ended before the worker started: it stops, saying so."""


def check_args(n: int, processes: int, process_id: int, coordinator: str | None) -> None:
    """Raise a ValueError naming what is wrong with a multi-process emulation request."""
    if not isinstance(processes, int) or processes < 1:
        raise UsageError(f"processes must be a positive number of processes, got {processes!r}")
    if n % processes:
        divisors = ", ".join(str(p) for p in range(1, n + 1) if n % p == 0)
        raise UsageError(f"{n} devices do not split evenly over {processes} processes; choose a "
                         f"process count that divides {n}: {divisors}")
    if not isinstance(process_id, int) or not 0 <= process_id < processes:
        raise UsageError(f"process_id must be one of 0..{processes - 1} for {processes} "
                         f"processes, got {process_id!r}")
    if processes == 1:
        if coordinator is not None:
            raise UsageError("a coordinator is only needed with processes > 1")
        return
    host, _, port = (coordinator or "").rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"processes={processes} needs coordinator='HOST:PORT' (process 0's "
                         f"address, the same in every process, e.g. '127.0.0.1:12345'), got "
                         f"{coordinator!r}")


def initialize(n: int, processes: int, process_id: int, coordinator: str,
               timeout_s: int = 120) -> None:
    """Start this process's share of an n-device emulation across `processes` processes.

    Call before JAX's backend starts. The coordinator service (run by process 0) listens only
    on the coordinator's own address, so '127.0.0.1:PORT' never opens a port to the network.
    A worker whose launcher has already ended stops here (`LauncherEnded`).
    """
    import jax  # configured here, before its backend starts (the module's docstring)
    ended = follow_launcher()
    if ended:
        raise LauncherEnded(ended)
    jax.config.update("jax_platforms", "cpu")
    jax.config.update("jax_num_cpu_devices", n // processes)
    # CPU collectives stay inside one process unless an implementation that crosses processes
    # is chosen; gloo is the one every jaxlib ships.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    # The preemption service turns SIGTERM into a notice for a checkpointing loop and lets the
    # process run on; an emulated host has nothing to checkpoint, so SIGTERM ends it.
    jax.config.update("jax_enable_preemption_service", False)
    _raise_open_file_limit()
    progress(f"joining {processes} processes at {coordinator} (jax.distributed.initialize)")
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=processes,
                               process_id=process_id, coordinator_bind_address=coordinator,
                               # the arguments are complete: do not let a scheduler's
                               # environment (Slurm, MPI, TPU VM) override them
                               cluster_detection_method="deactivate",
                               initialization_timeout=timeout_s)
    progress(f"joined {processes} processes")


def follow_launcher() -> str | None:
    """In a worker that `launch` started: end this process when the launcher ends, however it
    ends (a SIGKILLed launcher cannot stop anyone). No-op in a process `launch` did not start.
    Returns None, or, when the launcher had already ended before this asked (no signal will
    come), what to tell the user: the caller stops the worker (`LauncherEnded`).

    Linux sends the parent-death signal chosen by prctl(PR_SET_PDEATHSIG) when the thread that
    started this process exits; elsewhere a thread watches the parent process id instead.
    """
    global _following
    launcher = os.environ.get(LAUNCHER_ENV)
    if not launcher:
        return None
    if not _following:
        _following = True
        if not _parent_death_signal(signal.SIGKILL):
            threading.Thread(target=_watch_parent, args=(int(launcher),), daemon=True).start()
    if os.getppid() != int(launcher):
        return f"the launcher (pid {launcher}) has ended; this worker stops too"
    return None


def _parent_death_signal(signum: int) -> bool:
    """Linux: have the kernel send `signum` to this process when its parent exits."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes  # here, not at the top: only Linux takes this path
    PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
    return ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signum), 0, 0, 0) == 0


def _watch_parent(launcher: int) -> None:
    while os.getppid() == launcher:
        time.sleep(0.5)
    os._exit(1)


def progress(step: str) -> None:
    """Tell the launcher which step this worker is on now (no-op outside `launch`). A run whose
    workers all stay on their steps for `stall_s` is stopped and each step is named."""
    path = os.environ.get(PROGRESS_ENV)
    if path:
        with open(path + ".new", "w") as f:
            f.write(step)
        os.replace(path + ".new", path)  # the launcher never reads half a line


def _raise_open_file_limit() -> None:
    """Gloo's sockets need many open files (`open_files_needed`): take all the system allows."""
    try:  # resource is POSIX-only: a local import that may fail
        import resource
    except ImportError:  # not POSIX: nothing to raise
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):  # macOS refuses an unlimited soft limit: keep the soft one
            pass


