"""Every test process starts JAX once with 256 emulated CPU devices (the full 4x8x8 mesh);
smaller meshes are built from the first devices.

Tests never read or write the user's own cache (`~/.cache/tpuinfer`, where `tpuinfer calibrate`
keeps the host profile): TPUINFER_CACHE points at an empty directory for the whole session, and
the notebook kernels nbval starts inherit it."""
import os
import tempfile

import tpuinfer

os.environ["TPUINFER_CACHE"] = tempfile.mkdtemp(prefix="tpuinfer-test-cache-")
tpuinfer.emulate(256)
