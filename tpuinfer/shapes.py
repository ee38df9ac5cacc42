"""Every parameter's shape, from one table.

Each weight matrix is named by its dimensions in the paper's letters (Pope et al. 2022, arXiv
2211.05102, Section 3.1: E d_model, F d_ff, H query heads, K key/value heads, D d_head, V
vocabulary; for a mixture of experts, `tpuinfer.experts`: M routed experts, F each one's hidden
size, U the shared experts' hidden size) and by the dimensions its matmul contracts; the rest
are its output channels, one int8 scale each. Parameter shapes (`param_shapes`), parameter counts (`ModelConfig`), int8 scales
and their specs (`tpuinfer.quant`) all derive from `MATRICES`; nothing else lists them.

Beside them, the one activation shape the engine fixes and the cost model sizes memory by:
`QUERY_BLOCK`, the queries per block of attention scores. This module imports nothing of
tpuinfer, so `config` and `weight_formats` can both build on it.
"""
from __future__ import annotations

import math

# name: (dimensions, contracting dimensions). The embedding table is also the (tied) output
# projection, which contracts E; an untied model (Llama) has its own output table, `unembed`,
# stored as the embedding is.
MATRICES = {"w_q": ("EHD", (0,)), "w_k": ("EKD", (0,)), "w_v": ("EKD", (0,)),
            "w_o": ("HDE", (0, 1)), "w_gate": ("EF", (0,)), "w_up": ("EF", (0,)),
            "w_down": ("FE", (0,)), "embed": ("VE", (1,)), "unembed": ("VE", (1,)),
            # a mixture of experts in place of the feed-forward: the router, M experts (each a
            # SwiGLU or GELU block of hidden size F, its own output channels scaled), and the
            # shared experts every token goes through, one block of hidden size U
            "w_router": ("EM", (0,)), "w_expert_gate": ("MEF", (1,)),
            "w_expert_up": ("MEF", (1,)), "w_expert_down": ("MFE", (1,)),
            "w_shared_gate": ("EU", (0,)), "w_shared_up": ("EU", (0,)),
            "w_shared_down": ("UE", (0,))}
TABLES = ("embed", "unembed")
# queries per block of attention scores (`model.attend`): a long prefill never holds L×S
QUERY_BLOCK = 512
ATTENTION = ("w_q", "w_k", "w_v", "w_o")
DENSE_FFN = ("w_gate", "w_up", "w_down")
EXPERTS = ("w_expert_gate", "w_expert_up", "w_expert_down")  # one slice per expert (M first)
SHARED = ("w_shared_gate", "w_shared_up", "w_shared_down")
CONTRACT = {name: contract for name, (_, contract) in MATRICES.items()}


def is_matrix(name: str) -> bool:
    return name in MATRICES


def dims(name: str) -> str:
    """A matrix's dimensions in the paper's letters, e.g. "EHD" for W_q."""
    return MATRICES[name][0]


def shape(cfg, name: str) -> tuple[int, ...]:
    return tuple(getattr(cfg, letter) for letter in dims(name))


def layer_matrices(cfg) -> tuple[str, ...]:
    """The weight matrices of one layer: SwiGLU has W_gate, a GELU feed-forward does not; a
    mixture of experts has the router and the experts in place of the feed-forward, and the
    shared experts where U > 0."""
    if cfg.n_experts:
        ffn = ("w_router",) + EXPERTS + (SHARED if cfg.shared_d_ff else ())
    else:
        ffn = DENSE_FFN
    return tuple(n for n in MATRICES if (n in ATTENTION or n in ffn)
                 and (not n.endswith("_gate") or cfg.gated_ffn))


def layer_norms(cfg) -> tuple[str, ...]:
    """The parallel block shares one norm between its branches; the serial block has two."""
    return ("norm",) if cfg.parallel_block else ("norm_attn", "norm_ffn")


def output_channels(cfg, name: str) -> int:
    """A matrix's output channels (its dimensions the matmul does not contract)."""
    return math.prod(d for i, d in enumerate(shape(cfg, name)) if i not in CONTRACT[name])


def param_shapes(cfg) -> dict:
    """Shapes of every parameter, keyed as `tpuinfer.model.init_params` returns them."""
    layer = {n: shape(cfg, n) for n in layer_matrices(cfg)}
    layer |= {n: (cfg.E,) for n in layer_norms(cfg)}
    return {**{t: shape(cfg, t) for t in tables(cfg)}, "final_norm": (cfg.E,),
            "layers": [dict(layer) for _ in range(cfg.n_layers)]}


def tables(cfg) -> tuple[str, ...]:
    """The model's tables: the embedding, and an untied model's own output table."""
    return TABLES[:1] if cfg.tied_embeddings else TABLES


def output_table(cfg) -> str:
    """The parameter the output projection multiplies by: the embedding itself when tied."""
    return "embed" if cfg.tied_embeddings else "unembed"
