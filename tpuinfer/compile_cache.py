"""Compile once per machine: JAX's persistent compilation cache, on by default.

XLA:CPU spends most of a 4x8x8 step's compile on its 256-way collectives (one all-to-all
becomes a piece per device, each its own kernel): on 2 cores the batch-256 ws2d/batch decode
compiles in 3.2 s (8.2 s with XLA:CPU's default emitters: `mesh.CPU_FLAGS`), and a later
process traces it and reads it back in 0.6 s. So `tpuinfer.emulate` points JAX's persistent cache at
`$TPUINFER_CACHE/jax` (default `~/.cache/tpuinfer/jax`, beside the host profile) before the
first compile, and every later process on this machine reads back what an earlier one compiled
(`tpuinfer warmup` compiles a workshop's steps ahead of the day).

The switch: `TPUINFER_COMPILE_CACHE=off` (or 0, no, false) leaves JAX's cache alone. A cache
directory given to JAX itself (`JAX_COMPILATION_CACHE_DIR`, `jax.config`) is used as given.
Only one-process runs turn it on: the processes of a multi-process run would share one
directory, and JAX writes there from process 0 only.
"""
from __future__ import annotations

import os
from pathlib import Path

import jax

from .paths import cache_dir

SWITCH = "TPUINFER_COMPILE_CACHE"
OFF = ("0", "off", "no", "false")
# Compiles shorter than this are not kept (JAX's default keeps none under 1 s): the tiny
# model's initializers compile in about 0.4 s each, ten of them a run; a trivial op's compile
# is not worth a file.
MIN_COMPILE_S = 0.1


def directory() -> Path | None:
    """Where tpuinfer keeps compiled steps, or None when the switch turns the cache off."""
    if os.environ.get(SWITCH, "").strip().lower() in OFF:
        return None
    return cache_dir() / "jax"


def enable() -> Path | None:
    """Turn JAX's persistent compilation cache on in `directory()` (call before the first
    compile; `emulate` does). Returns the directory in use: JAX's own where one was set
    already, None when switched off."""
    own = jax.config.jax_compilation_cache_dir
    if own:
        return Path(own)
    where = directory()
    if where is None:
        return None
    where.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(where))
    if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_S)
    return where


def in_use() -> Path | None:
    """The directory JAX's persistent cache writes to in this process, if any."""
    own = jax.config.jax_compilation_cache_dir
    return Path(own) if own else None
