"""Model configurations and the model-wide counts that live beside them.

Letters follow the paper's notation (Pope et al. 2022, arXiv 2211.05102, Section 3.1): E d_model,
F d_ff, H query heads, K key/value heads (K = 1 is multiquery), D d_head, V vocabulary. Counts
here are the single source that the cost model, the planner, the tests and the book all call.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from . import quant, shapes
from .errors import UsageError


@dataclass(frozen=True)
class ModelConfig:
    name: str
    n_layers: int
    d_model: int  # E
    d_ff: int  # F
    n_heads: int  # H
    d_head: int  # D
    n_kv_heads: int  # K: 1 is multiquery, n_heads is multihead
    vocab: int  # V
    parallel_block: bool = True  # PaLM: y = x + Attn(norm x) + FFN(norm x)
    gated_ffn: bool = True  # SwiGLU (W_gate, W_up, W_down) or GELU (W_up, W_down)
    mfu_params: float | None = None  # the paper's N in MFU, where it rounds (540e9, 62.5e9)

    def __post_init__(self):
        if self.n_kv_heads not in (1, self.n_heads):
            raise UsageError(
                f"{self.name}: K={self.n_kv_heads} key/value heads; tpuinfer supports multiquery "
                f"(K=1) and multihead (K=H={self.n_heads}) attention")
        if self.d_head % 2:
            raise UsageError(f"{self.name}: D={self.d_head} must be even for RoPE")

    # Short aliases in the paper's alphabet, so formulas read like the paper's.
    @property
    def E(self): return self.d_model
    @property
    def F(self): return self.d_ff
    @property
    def H(self): return self.n_heads
    @property
    def D(self): return self.d_head
    @property
    def K(self): return self.n_kv_heads
    @property
    def V(self): return self.vocab

    @property
    def multiquery(self) -> bool:
        return self.n_kv_heads == 1

    def replace(self, **changes) -> "ModelConfig":
        return dataclasses.replace(self, **changes)

    # ---- parameter counts -------------------------------------------------------------
    def attention_params_per_layer(self) -> int:
        return sum(math.prod(shapes.shape(self, n)) for n in shapes.ATTENTION)  # W_q, W_k, W_v, W_o

    def ffn_params_per_layer(self) -> int:
        return sum(math.prod(shapes.shape(self, n)) for n in shapes.layer_matrices(self)
                   if n not in shapes.ATTENTION)

    def norm_params_per_layer(self) -> int:
        return self.E * len(shapes.layer_norms(self))

    def matmul_params(self) -> int:
        """Parameters that take part in a matmul: every weight matrix and the (tied)
        embedding, which is the output projection. Norm scales do not."""
        per_layer = self.attention_params_per_layer() + self.ffn_params_per_layer()
        return self.n_layers * per_layer + math.prod(shapes.shape(self, "embed"))

    def n_params(self) -> int:
        """Every parameter, as `init_params` creates them (tested exactly)."""
        return self.matmul_params() + self.n_layers * self.norm_params_per_layer() + self.E

    def weight_bytes(self, weights: str = "bf16") -> float:
        """Bytes of all parameters in a weight format; int8 adds a bf16 scale per output
        channel of each matrix (norms stay bf16)."""
        return quant.weight_bytes(self, weights)  # one formula, shared with the int8 path

    # ---- compute ------------------------------------------------------------------------
    def flops_per_token(self) -> float:
        """2·N FLOPs per token: only the weight matmuls count (the paper's Section 2)."""
        return 2.0 * self.matmul_params()

    def mfu_flops_per_token(self) -> float:
        """The FLOPs the paper's MFU figures assume (its rounded N where it gives one)."""
        return 2.0 * (self.mfu_params if self.mfu_params is not None else self.matmul_params())

    def attention_flops(self, batch: int, tokens: int, context: int,
                        heads: int | None = None) -> float:
        """Score and value matmuls (QK^T and PV) of `tokens` queries per sequence against
        `context` positions, on `heads` query heads (all H by default; a chip's share in a
        layout's terms): not part of 2·N, reported separately."""
        heads = self.H if heads is None else heads
        return 2.0 * 2.0 * self.n_layers * batch * tokens * context * heads * self.D

    # ---- KV cache -----------------------------------------------------------------------
    def kv_bytes(self, batch: int, context: int, bytes_per_elem: float = 2) -> float:
        """Total KV-cache bytes, all chips together: 2 tensors · layers · K · D · B · S."""
        return 2.0 * self.n_layers * self.K * self.D * batch * context * bytes_per_elem

    def kv_bytes_per_token(self, bytes_per_elem: float = 2) -> float:
        return self.kv_bytes(1, 1, bytes_per_elem)


def _palm(name, n_layers, E, H, mfu_params=None):
    # PaLM: F = 4E, d_head 256, multiquery, 256k SentencePiece vocabulary, parallel SwiGLU
    return ModelConfig(name, n_layers, E, 4 * E, H, 256, 1, 256_000, mfu_params=mfu_params)


MODELS: dict[str, ModelConfig] = {
    # tiny: every dimension a layout splits divides by the axes it is split over on the full
    # 4x8x8 mesh (E, F, H and V by 256), so every layout runs there; H=256 because attention by
    # heads gives each chip whole heads, as the paper pads PaLM 540B's heads to the chip count.
    "tiny": ModelConfig("tiny", 2, 256, 1024, 256, 8, 1, 512),
    # tiny-mtnlg: tiny with MT-NLG 530B's shape of block (below): serial, GELU MLP, multihead
    # (K = H). Its dimensions divide as tiny's, so every layout runs it on the full 4x8x8
    # mesh; H·D is 8E, not E as in MT-NLG, so that 256 chips each get whole heads.
    "tiny-mtnlg": ModelConfig("tiny-mtnlg", 2, 256, 1024, 256, 8, 256, 512,
                              parallel_block=False, gated_ffn=False),
    # mini: deeper and wider than tiny (8 layers, 36M parameters), still a few seconds per
    # forward pass on a CPU: where int8's error is checked on more than two layers. E, F and V
    # divide by 256; its 16 heads limit attention by heads to 16 chips.
    "mini": ModelConfig("mini", 8, 512, 2048, 16, 64, 1, 4096),
    "palm-8b": _palm("palm-8b", 32, 4096, 16),
    "palm-62b": _palm("palm-62b", 64, 8192, 32, mfu_params=62.5e9),
    "palm-540b": _palm("palm-540b", 118, 18432, 48, mfu_params=540e9),
    # heads padded 48 -> 64 so that attention by heads partitions over 64+ chips (Section 4.4)
    "palm-540b-64heads": _palm("palm-540b-64heads", 118, 18432, 64, mfu_params=540e9),
    # MT-NLG 530B (the FasterTransformer comparison): multihead, serial block, GELU MLP,
    # GPT-2 vocabulary padded to 51200. Biases are left out, as in every tpuinfer model.
    "mt-nlg-530b": ModelConfig("mt-nlg-530b", 105, 20480, 4 * 20480, 128, 160, 128, 51_200,
                               parallel_block=False, gated_ffn=False),
}


def get_model(name: str | ModelConfig) -> ModelConfig:
    if isinstance(name, ModelConfig):
        return name
    try:
        return MODELS[name]
    except KeyError:
        raise UsageError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}") from None
