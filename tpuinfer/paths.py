"""Where tpuinfer keeps what it writes for this machine: one directory, `$TPUINFER_CACHE` or
`~/.cache/tpuinfer` (the host profile, the compiled steps). Imports nothing of the package, so
every module may ask."""
from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    return Path(os.environ.get("TPUINFER_CACHE") or Path.home() / ".cache" / "tpuinfer")
