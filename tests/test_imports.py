"""Imports follow the architecture: every module imports on its own in a fresh interpreter (no
cycle that only a lucky import order hides), and an import inside a function says why."""
import ast
import os
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "tpuinfer"


def _modules() -> list[str]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__main__":  # runs the command line when imported
            continue
        out.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return out


# Run in one fresh interpreter: JAX is imported once (every module needs it; the question is
# tpuinfer's own graph), then for each module every tpuinfer module is forgotten and the module
# is imported under a bare `tpuinfer` package, so only what it imports itself comes with it
# (the real `tpuinfer/__init__` would import nearly everything first, and hide a cycle).
ALONE = """
import importlib, sys, types
import jax
failed = []
for name in sys.argv[2:]:
    for loaded in [m for m in sys.modules if m == "tpuinfer" or m.startswith("tpuinfer.")]:
        del sys.modules[loaded]
    if name != "tpuinfer":
        bare = types.ModuleType("tpuinfer")
        bare.__path__ = [sys.argv[1]]
        sys.modules["tpuinfer"] = bare
    try:
        importlib.import_module(name)
    except Exception as err:
        failed.append(f"{name}: {type(err).__name__}: {err}")
print("\\n".join(failed))
sys.exit(1 if failed else 0)
"""


def test_every_module_imports_alone():
    run = subprocess.run([sys.executable, "-c", ALONE, str(PACKAGE), *_modules()],
                         capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, JAX_PLATFORMS="cpu"))
    assert run.returncode == 0, run.stdout + run.stderr[-2000:]


def test_every_function_local_import_says_why():
    """A local import is for a dependency that is optional or slow to import: a comment on its
    line or the line before says which (a cycle is fixed by the dependency's direction)."""
    silent = []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text()
        lines = text.splitlines()
        for fn in ast.walk(ast.parse(text)):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    here, before = lines[node.lineno - 1], lines[node.lineno - 2]
                    if "#" not in here and not before.strip().startswith(("#", "try:  #")):
                        silent.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}")
    assert not silent, "function-local imports without a reason: " + ", ".join(silent)
