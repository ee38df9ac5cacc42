"""Model configurations and the model-wide counts that live beside them.

Letters follow the paper's notation (Pope et al. 2022, arXiv 2211.05102, Section 3.1): E d_model,
F d_ff, H query heads, K key/value heads (K = 1 is multiquery, K = H multihead, and in between
grouped-query attention: each K/V head shared by H/K query heads), D d_head, V vocabulary. Counts
here are the single source that the cost model, the planner, the tests and the book all call.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass

from . import kv_formats, quant, shapes
from .errors import UsageError


@dataclass(frozen=True)
class ModelConfig:
    name: str
    n_layers: int
    d_model: int  # E
    d_ff: int  # F
    n_heads: int  # H
    d_head: int  # D
    n_kv_heads: int  # K: 1 is multiquery, n_heads is multihead, between them grouped-query
    vocab: int  # V
    parallel_block: bool = True  # PaLM: y = x + Attn(norm x) + FFN(norm x)
    gated_ffn: bool = True  # SwiGLU (W_gate, W_up, W_down) or GELU (W_up, W_down)
    mfu_params: float | None = None  # the paper's N in MFU, where it rounds (540e9, 62.5e9)
    # PaLM's input embedding is also its output projection; Llama's are two tables
    tied_embeddings: bool = True

    def __post_init__(self):
        if not 1 <= self.n_kv_heads <= self.n_heads or self.n_heads % self.n_kv_heads:
            raise UsageError(
                f"{self.name}: K={self.n_kv_heads} key/value heads for H={self.n_heads} query "
                f"heads; K must divide H (1: multiquery, {self.n_heads}: multihead, a divisor "
                f"between: grouped-query attention)")
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

    @property
    def attention_kind(self) -> str:
        """"multiquery" (K = 1), "multihead" (K = H) or "grouped" (1 < K < H)."""
        return ("multiquery" if self.K == 1 else "multihead" if self.K == self.H
                else "grouped")

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
        """Parameters that take part in a matmul: every weight matrix and the output
        projection (the embedding table itself when tied). Norm scales do not, nor does an
        untied input embedding (a lookup)."""
        return _matmul_params(self)

    def n_params(self) -> int:
        """Every parameter, as `init_params` creates them (tested exactly)."""
        lookup = 0 if self.tied_embeddings else math.prod(shapes.shape(self, "embed"))
        return (self.matmul_params() + lookup + self.n_layers * self.norm_params_per_layer()
                + self.E)

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
    def kv_bytes(self, batch: int, context: int, bytes_per_elem: float = 2,
                 kv: str | None = None) -> float:
        """Total KV-cache bytes, all chips together: 2 tensors · layers · K · D · B · S, at
        `bytes_per_elem`, or in the KV format `kv` (`tpuinfer.kv_formats`: int8 adds one bf16
        scale per token and head)."""
        if kv is not None:
            shape = (batch, context, self.K, self.D)
            return 2.0 * self.n_layers * kv_formats.array_bytes(shape, kv_formats.check_kv(kv))
        return 2.0 * self.n_layers * self.K * self.D * batch * context * bytes_per_elem

    def kv_bytes_per_token(self, bytes_per_elem: float = 2, kv: str | None = None) -> float:
        return self.kv_bytes(1, 1, bytes_per_elem, kv)


@functools.lru_cache(maxsize=256)
def _matmul_params(cfg: ModelConfig) -> int:
    # Cached: the planner prices a model's MFU thousands of times per plan (a config is frozen).
    per_layer = cfg.attention_params_per_layer() + cfg.ffn_params_per_layer()
    return cfg.n_layers * per_layer + math.prod(shapes.shape(cfg, "embed"))


def _palm(name, n_layers, E, H, mfu_params=None):
    # PaLM: F = 4E, d_head 256, multiquery, 256k SentencePiece vocabulary, parallel SwiGLU
    return ModelConfig(name, n_layers, E, 4 * E, H, 256, 1, 256_000, mfu_params=mfu_params)


def _llama(name, n_layers, E, F, H, kv=8, vocab=128_256):
    # a Llama-shaped model: serial block, SwiGLU, d_head 128, grouped-query, untied table
    return ModelConfig(name, n_layers, E, F, H, 128, kv, vocab, parallel_block=False,
                       tied_embeddings=False)


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
    # tiny-llama: tiny with Llama's block (below): serial SwiGLU, grouped-query attention and an
    # untied output table. K = 4 (64 query heads per K/V head) splits the K/V heads over some
    # axes and repeats them over the rest on the meshes the tests run (2x2x2, 1x4x2, 4x8x8;
    # ws2d on 4x8x8, whose z = 8 does not divide 4, holds all four on every chip).
    "tiny-llama": ModelConfig("tiny-llama", 2, 256, 1024, 256, 8, 4, 512, parallel_block=False,
                              tied_embeddings=False),
    # Llama 3 (Meta): serial SwiGLU blocks, grouped-query attention with 8 K/V heads, RoPE
    # (base 500,000; tpuinfer's engine uses 10,000, which changes no cost), untied output
    # table of 128,256 rows. Source for every number: the Llama 3 paper (Grattafiori et al.
    # 2024, arXiv 2407.21783, Table 3: layers, d_model, FFN dimension, heads, K/V heads) and
    # Meta's configs (huggingface.co/meta-llama/Meta-Llama-3-8B/blob/main/config.json and
    # the 70B's, meta-llama/Llama-3.1-405B's: vocab_size 128256, tie_word_embeddings false,
    # head_dim 128). The 405B model was released as Llama 3.1.
    "llama-3-8b": _llama("llama-3-8b", 32, 4096, 14336, 32),
    "llama-3-70b": _llama("llama-3-70b", 80, 8192, 28672, 64),
    "llama-3-405b": _llama("llama-3-405b", 126, 16384, 53248, 128),
    # Qwen2.5 (Alibaba): the same block with biases on Q, K, V (left out here: 129,024
    # parameters of 7.6B, 0.002%), a 152,064-row vocabulary, untied. Source:
    # huggingface.co/Qwen/Qwen2.5-7B/blob/main/config.json and Qwen/Qwen2.5-72B's (hidden,
    # intermediate, heads, key/value heads, layers, vocab_size, tie_word_embeddings false).
    "qwen2.5-7b": _llama("qwen2.5-7b", 28, 3584, 18944, 28, kv=4, vocab=152_064),
    "qwen2.5-72b": _llama("qwen2.5-72b", 80, 8192, 29568, 64, vocab=152_064),
}


def get_model(name: str | ModelConfig) -> ModelConfig:
    if isinstance(name, ModelConfig):
        return name
    try:
        return MODELS[name]
    except KeyError:
        raise UsageError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}") from None
