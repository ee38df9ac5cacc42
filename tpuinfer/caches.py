"""What a session keeps between calls, and how to let it go.

Compiling a step for 256 emulated devices takes seconds, so tpuinfer keeps what it compiled:
the compiled steps, the jitted functions behind them, the parameter and cache initializers, the
parameters `measure` placed, and memoised cost-model terms. Every one of these is bounded (least
recently used dropped first), so a workshop of widget clicks stays small; `clear_caches()`
empties them all at once, with JAX's own compilation caches.

Two kinds of cache: every `functools.lru_cache` in a tpuinfer module (found in the modules
loaded so far), and the containers a module registers where it makes them, anything with
`clear()` and a length (`_COMPILED = register("tpuinfer.engine._COMPILED", _Recent(32))`).
Nothing here reads another module's names, and nothing imports JAX (a process that never
started it has nothing of JAX's to clear).

Memory freed is not memory returned: glibc's allocator keeps the pages of freed compiled
programs for reuse, so a process's RSS kept rising (to 1.5 GB after 200 widget changes) with
every cache bounded; `release_memory` hands them back, after a clear and when a compiled step
is dropped.
"""
from __future__ import annotations

import ctypes
import gc
import sys

_REGISTERED: dict = {}  # name -> a container with clear() and len()


def register(name: str, container):
    """Count and clear `container` (anything with `clear()` and a length) with tpuinfer's
    caches, under `name`; returns it, so a module writes `_X = register("...", {})`."""
    _REGISTERED[name] = container
    return container


def _modules():
    """tpuinfer's modules loaded so far (the widgets' too), never importing one."""
    return [m for name, m in list(sys.modules.items())
            if m is not None and (name == "tpuinfer" or name.startswith(("tpuinfer.",
                                                                          "tpuinfer_widgets")))]


def _memoised(module):
    """(name, function) of each `functools.lru_cache` defined in `module`."""
    for name, value in vars(module).items():
        if callable(getattr(value, "cache_info", None)) and \
                getattr(value, "__module__", None) == module.__name__:
            yield f"{module.__name__}.{name}", value


def cache_sizes() -> dict[str, int]:
    """Entries held by each of tpuinfer's caches, by qualified name: what a long session
    has accumulated (each is bounded; see the module docstring)."""
    sizes = {name: len(container) for name, container in _REGISTERED.items()}
    for module in _modules():
        for name, fn in _memoised(module):
            sizes[name] = fn.cache_info().currsize
    return dict(sorted(sizes.items()))


def clear_caches() -> None:
    """Drop everything tpuinfer has compiled or memoised, and JAX's compilation caches: the
    next step of each configuration compiles again. For a session that wants its memory
    back at once (the caches are bounded anyway)."""
    for module in _modules():
        for _, fn in _memoised(module):
            fn.cache_clear()
    for container in _REGISTERED.values():
        container.clear()
    jax = sys.modules.get("jax")  # never imported here: a process without it compiled nothing
    if jax is not None:
        jax.clear_caches()
    release_memory()


def release_memory() -> None:
    """Return freed heap pages to the system (glibc's `malloc_trim`; elsewhere nothing)."""
    gc.collect()
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: its allocator decides
        pass
