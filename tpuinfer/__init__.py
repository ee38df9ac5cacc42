"""tpuinfer: the partitioning of "Efficiently Scaling Transformer Inference" (Pope et al., 2022)
as real JAX code on an emulated mesh, with the analytical cost model that predicts it.

    import tpuinfer as ti
    ti.emulate(256)                      # before JAX starts its backend
    cfg = ti.MODELS["tiny"]
    params = ti.load_params("tiny")      # trained on the project's prose (or init_params)
    prompt_BL = np.array([ti.encode("The planner ")])
    mesh = ti.make_mesh((4, 8, 8))
    out = ti.generate(params, cfg, prompt_BL, steps=8, mesh=mesh,
                      prefill=ti.Layout("ws2d", "heads"), decode=ti.Layout("ws2d", "batch"))
    print(ti.decode(out.tokens[0]))
    ti.clear_caches()                    # what it compiled, dropped (the caches are bounded)

Two wings under one name: the cost path (configurations, layouts' terms, hardware, the cost
model and the planner) imports only the standard library, so `import tpuinfer.planner` (and
`tpuinfer plan`) runs without JAX, in Pyodide too; the engine's names below (`ti.emulate`,
`ti.generate`, ...) import JAX when first asked for, as does any submodule asked for by
attribute (`ti.engine`).
"""
from __future__ import annotations

import importlib
import sys
import types

from .caches import cache_sizes, clear_caches
from .config import MODELS, ModelConfig, get_model
from .layouts import ATTENTION_LAYOUTS, EXPERT_LAYOUTS, FFN_LAYOUTS, Layout
from .terms import Collective, StepTerms

# the engine's names (JAX): name -> the module that defines it, imported on first use
_ENGINE = {"Generation": "generate", "generate": "generate", "Measurement": "measure",
           "measure": "measure", "EmulationError": "mesh", "emulate": "mesh",
           "make_mesh": "mesh", "init_params": "model", "load_params": "checkpoint",
           "encode": "text", "decode": "text"}

__all__ = ["MODELS", "ModelConfig", "get_model", "ATTENTION_LAYOUTS", "FFN_LAYOUTS",
           "EXPERT_LAYOUTS", "Layout", "Collective", "StepTerms", "clear_caches",
           "cache_sizes", *_ENGINE]


def __getattr__(name: str):
    """An engine name or a submodule, imported when first asked for (PEP 562)."""
    if name in _ENGINE:
        value = getattr(importlib.import_module(f"{__name__}.{_ENGINE[name]}"), name)
    else:
        try:
            value = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as err:
            if err.name != f"{__name__}.{name}":  # the submodule exists; something it needs not
                raise
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


class _Package(types.ModuleType):
    """The package, whose `generate` and `measure` stay the functions: Python binds a submodule
    as an attribute of its package once it is imported (`tpuinfer.generate`, the module), and
    with the engine's names imported lazily nothing binds the function over it afterwards."""

    def __setattr__(self, name, value):
        if isinstance(value, types.ModuleType) and _ENGINE.get(name) == name:
            return  # the function of that name comes from `__getattr__`
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
