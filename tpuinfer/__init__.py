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
"""
from .caches import cache_sizes, clear_caches
from .checkpoint import load_params
from .config import MODELS, ModelConfig, get_model
from .generate import Generation, generate
from .layouts import ATTENTION_LAYOUTS, EXPERT_LAYOUTS, FFN_LAYOUTS, Layout
from .measure import Measurement, measure
from .mesh import EmulationError, emulate, make_mesh
from .model import init_params
from .terms import Collective, StepTerms
from .text import decode, encode

__all__ = ["MODELS", "ModelConfig", "get_model", "Generation", "generate", "ATTENTION_LAYOUTS",
           "FFN_LAYOUTS", "EXPERT_LAYOUTS", "Layout", "EmulationError", "emulate", "make_mesh",
           "init_params",
           "load_params", "encode", "decode", "Collective", "StepTerms", "measure",
           "Measurement", "clear_caches", "cache_sizes"]
