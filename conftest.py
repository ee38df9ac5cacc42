"""How the suite is shared between pytest-xdist's workers (pyproject: `-n 2 --dist loadscope`).

A test process spends most of its time compiling on one core, so two workers on CI's two
cores take about half the time. Each worker is a fresh process (tests/conftest.py emulates
256 devices in each). The scheduler below hands out work units; what must stay in one
process is one unit:

- a chapter's cells: nbval runs them in order in one kernel, started by one worker;
- a module whose fixtures are expensive and shared (a multi-process launch, a widget built
  once): split, each worker would build its own.

Every other test is a unit of its own and goes to whichever worker is free. (xdist's own
`loadgroup` marks cannot do this under pytest 9, whose node ids xdist 3.8 cannot rename.)

Every process of the session (both workers, the notebooks' kernels, the multi-process
workers) shares one JAX persistent compilation cache in a temporary directory, set here
through the environment before anything imports JAX: a step one process compiled is read
back by the next that needs it, instead of compiled again. XLA:CPU spends most of a 4x8x8
step's compile on its collectives (one 256-way all-to-all took 8-20 s, one kernel per piece);
read back, 0.1 s. An executable read back reports the same HLO text, memory and cost analysis.
"""
import os
import tempfile

import pytest

# Set in the first process (pytest's own, before xdist starts its workers); inherited after.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", tempfile.mkdtemp(prefix="tpuinfer-test-jax-"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")

# Modules whose module-scoped fixtures are worth building once (test_measure's session cache
# of measurements is not among them: its steps are shared through the compilation cache, and
# its 117 tests, a third of the suite's time, must spread over both workers).
SHARED_FIXTURES = {"test_multihost.py", "test_widgets.py", "test_int8.py", "test_hlo.py"}


@pytest.hookimpl(tryfirst=True)
def pytest_xdist_make_scheduler(config, log):
    from xdist.scheduler import LoadScopeScheduling  # only under xdist (not with -p no:xdist)

    class Units(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            if path.endswith(".ipynb") or path.rsplit("/", 1)[-1] in SHARED_FIXTURES:
                return path
            return nodeid

    return Units(config, log)
