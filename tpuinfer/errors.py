"""The errors a user can act on.

`tpuinfer` raises these for requests that cannot be met as asked (an unknown model or layout, a
mesh that does not divide a dimension, a batch smaller than its sharding, a JAX backend started
with too few devices) and for runs that stopped for a reason outside the library (a worker that
exited, a stalled multi-process run). Their message names the problem and what would work, so
the command line prints it as one line and exits 2. Any other exception is a bug in tpuinfer or
a failure inside JAX/XLA (out of memory, a compile error): the command line lets it through with
its traceback.
"""
from __future__ import annotations


class TpuinferError(Exception):
    """A failure whose message is the whole story: shown as one line, never a traceback."""


class UsageError(TpuinferError, ValueError):
    """A request that cannot be met as asked. A `ValueError`, so `except ValueError` still
    catches it."""


class LayoutError(UsageError):
    """A layout cannot partition this model on this mesh at this batch (a sharded dimension the
    mesh does not divide, a batch smaller than its sharding). The planner records these as the
    reason a layout was not chosen; any other exception while pricing a layout is a bug."""
