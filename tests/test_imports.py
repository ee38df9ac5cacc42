"""Imports follow the architecture: every module imports on its own in a fresh interpreter (no
cycle that only a lucky import order hides), and an import inside a function says why."""
import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

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


# ---- the wings: the cost path, the engine, the front-ends -------------------------------------
# The engine's modules (JAX). Every other module of the package is the cost path or a
# front-end on it, and imports neither JAX nor numpy: a new module is in the cost path unless
# it is named here.
ENGINE = {"mesh", "model", "moe", "quant", "placement", "engine", "generate", "measure", "hlo",
          "compile_cache", "checkpoint", "text", "quality", "train", "calibrate", "sweeps",
          "layouts.looped", "layouts._spmd"}
BLOCKED = ("jax", "jaxlib", "numpy", "scipy", "tqdm", "ml_dtypes")

# In a fresh interpreter where the heavy packages cannot be imported (as in Pyodide, whose core
# has none of them), import every cost-path module and the command line, and plan Table 2.
WITHOUT_JAX = """
import importlib, json, sys
blocked = tuple(sys.argv[1].split(","))

class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in blocked:
            raise ImportError(f"{name} is not importable here")

sys.meta_path.insert(0, Refuse())
for name in sys.argv[2:]:
    importlib.import_module(name)
from tpuinfer.paper import TABLE2
plans = {}
for column in TABLE2:
    p = column.plan("tpu-v4-calibrated")
    b = (p.prefill or p.decode).best
    plans[column.name] = [str(b.layout), list(b.mesh_shape), b.latency_s]
print(json.dumps({"plans": plans, "loaded": sorted(m for m in sys.modules
                                                    if m.split(".")[0] in blocked)}))
"""


def cost_path() -> list[str]:
    return [m for m in _modules() if m.removeprefix("tpuinfer.") not in ENGINE]


def test_the_cost_path_imports_without_jax_or_numpy_and_plans_table_2():
    run = subprocess.run([sys.executable, "-c", WITHOUT_JAX, ",".join(BLOCKED), *cost_path()],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout)
    assert out["loaded"] == []
    assert {"tpuinfer.planner", "tpuinfer.paper", "tpuinfer.cli"} <= set(cost_path())
    from tpuinfer.paper import TABLE2
    # the planner chooses the paper's layouts (Table 2), and prices them as it does with
    # numpy and JAX loaded (this process has both)
    for column in TABLE2:
        layout, mesh, latency = out["plans"][column.name]
        assert layout.split("/")[:2] == [column.ffn, column.attention], column.name
        best = (lambda p: (p.prefill or p.decode).best)(column.plan("tpu-v4-calibrated"))
        assert (layout, tuple(mesh)) == (str(best.layout), best.mesh_shape)
        assert latency == pytest.approx(best.latency_s, rel=1e-12)


def _imports(path: Path) -> list[str]:
    """Every module `path` imports, anywhere in it, as an absolute name."""
    package = ".".join(path.relative_to(PACKAGE.parent).parent.parts)  # where `.` points
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            names += [base] + [f"{base}.{a.name}" for a in node.names]
    return names


def test_no_library_module_imports_the_command_line():
    """The front-ends sit on the library: nothing outside tpuinfer/cli/ (the package's
    `__main__` runs it) imports it, even inside a function."""
    offenders = [f"{path.relative_to(PACKAGE.parent)} imports {name}"
                 for path in PACKAGE.rglob("*.py")
                 if "cli" not in path.relative_to(PACKAGE).parts[:1]
                 and path.name != "__main__.py"
                 for name in _imports(path) if name.split(".")[:2] == ["tpuinfer", "cli"]]
    assert offenders == []


def test_every_command_is_registered_in_plain_sight():
    """`tpuinfer.cli` imports each command module by name (no importlib) and registers each."""
    cli = PACKAGE / "cli"
    source = (cli / "__init__.py").read_text()
    assert "importlib" not in source
    from tpuinfer import cli as package
    commands = {m.__name__.rpartition(".")[2] for m in package.COMMANDS}
    modules = {p.stem for p in cli.glob("*.py")} - {"__init__", "options"}
    assert commands == modules
    assert all(f"tpuinfer.cli.{name}" in _imports(cli / "__init__.py") for name in commands)
    sub = package.build_parser()._subparsers._group_actions[0].choices
    assert {"demo", "plan", "pareto", "max-context", "paper", "measure", "calibrate", "book",
            "warmup", "train", "accuracy"} == set(sub)


LAZY = """
import sys
import tpuinfer as ti
assert "jax" not in sys.modules, "import tpuinfer started JAX"
assert ti.MODELS["tiny"].name == "tiny" and "jax" not in sys.modules
import tpuinfer.generate, tpuinfer.measure  # the modules named as the functions they hold
print(ti.generate.__module__, ti.measure.__module__, ti.emulate.__module__,
      ti.engine.__name__, "jax" in sys.modules)
"""


def test_the_package_loads_the_engines_names_when_first_asked():
    """`import tpuinfer` starts no JAX; `ti.generate`, `ti.measure`, `ti.emulate` and the
    submodules (`ti.engine`) arrive when asked, the functions even once their modules of the
    same name are imported."""
    run = subprocess.run([sys.executable, "-c", LAZY], capture_output=True, text=True,
                         timeout=300, env=dict(os.environ, JAX_PLATFORMS="cpu"))
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.split() == ["tpuinfer.generate", "tpuinfer.measure", "tpuinfer.mesh",
                                  "tpuinfer.engine", "True"]
