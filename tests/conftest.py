"""Every test process starts JAX once with 256 emulated CPU devices (the full 4x8x8 mesh);
smaller meshes are built from the first devices.

Tests never read or write the user's own cache (`~/.cache/tpuinfer`, where `tpuinfer calibrate`
keeps the host profile): TPUINFER_CACHE points at an empty directory for the whole session, and
the notebook kernels nbval starts inherit it.

A test process compiles with LLVM's optimizations off (`--xla_backend_optimization_level=0`):
its tests compile many steps and run each a few times, and what they check (values, HLO,
collectives, bytes) is decided before LLVM runs. On an idle machine a ws1d/batch run on 4x8x8
compiled in 49 s instead of 60, test_measure's 4x8x8 steps in 168 s instead of 192. The flag
is taken out of the environment once this process's backend has read it: the processes the
tests start (the demo, notebook kernels, multi-process runs) run steps more than they compile,
and unoptimized code ran a 4x8x8 prefill in 16.9 s instead of 8.5.
"""
import os
import tempfile

import jax

import tpuinfer

os.environ["TPUINFER_CACHE"] = tempfile.mkdtemp(prefix="tpuinfer-test-cache-")
_FLAGS = os.environ.get("XLA_FLAGS")
if "xla_backend_optimization_level" not in (_FLAGS or ""):
    os.environ["XLA_FLAGS"] = f"{_FLAGS or ''} --xla_backend_optimization_level=0".strip()
tpuinfer.emulate(256)
jax.devices()  # the backend starts here, and reads XLA_FLAGS once
if _FLAGS is None:
    os.environ.pop("XLA_FLAGS")
else:
    os.environ["XLA_FLAGS"] = _FLAGS
