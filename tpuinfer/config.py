"""Model configurations and the model-wide counts that live beside them.

Letters follow the paper's notation (Pope et al. 2022, arXiv 2211.05102, Section 3.1): E d_model,
F d_ff, H query heads, K key/value heads (K = 1 is multiquery, K = H multihead, and in between
grouped-query attention: each K/V head shared by H/K query heads), D d_head, V vocabulary. A
mixture of experts (`tpuinfer.experts`) adds M routed experts, k of them per token, each a
feed-forward block of hidden size F, and shared experts of hidden size U. Counts here are the
single source that the cost model, the planner, the tests and the book all call.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass

from . import experts, kv_formats, shapes, weight_formats
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
    # A mixture of experts in place of every feed-forward block (0 experts: a dense model).
    # F is then each expert's hidden size (Mixtral's intermediate_size, Qwen3's
    # moe_intermediate_size); the router's top-k weights are renormalised to sum to 1
    # (Mixtral; Qwen3's norm_topk_prob). Capacity and drops: `tpuinfer.experts`.
    n_experts: int = 0  # M
    top_k: int = 0  # k experts per token
    shared_d_ff: int = 0  # U: hidden size of the shared experts every token goes through
    capacity_factor: float = 1.25  # slots per expert over its share of a sequence's routes

    def __post_init__(self):
        if not 1 <= self.n_kv_heads <= self.n_heads or self.n_heads % self.n_kv_heads:
            raise UsageError(
                f"{self.name}: K={self.n_kv_heads} key/value heads for H={self.n_heads} query "
                f"heads; K must divide H (1: multiquery, {self.n_heads}: multihead, a divisor "
                f"between: grouped-query attention)")
        if self.d_head % 2:
            raise UsageError(f"{self.name}: D={self.d_head} must be even for RoPE")
        if self.n_experts or self.top_k or self.shared_d_ff:
            self._check_experts()

    def _check_experts(self):
        if not 1 <= self.top_k <= self.n_experts:
            raise UsageError(f"{self.name}: top_k={self.top_k} of n_experts={self.n_experts}; a "
                             f"mixture of experts routes each token to 1..M experts (a dense "
                             f"model: n_experts=0, top_k=0, shared_d_ff=0)")
        if self.parallel_block:
            raise UsageError(f"{self.name}: a mixture of experts runs in the serial block "
                             f"(Mixtral, Qwen3); set parallel_block=False")
        if self.capacity_factor <= 0:
            raise UsageError(f"{self.name}: capacity_factor={self.capacity_factor} must be > 0")

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
    def M(self): return self.n_experts
    @property
    def U(self): return self.shared_d_ff

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

    def expert_params(self) -> int:
        """One routed expert's parameters in one layer (0 for a dense model)."""
        if not self.n_experts:
            return 0
        return sum(math.prod(shapes.shape(self, n)) for n in shapes.layer_matrices(self)
                   if n in shapes.EXPERTS) // self.n_experts

    def n_active_params(self) -> int:
        """The parameters one token uses: all of them but the M − k experts per layer it is not
        routed to (as model cards count "activated" parameters, the embeddings included).
        A dense model's are all of them."""
        idle = self.n_layers * (self.n_experts - self.top_k) * self.expert_params()
        return self.n_params() - idle

    def active_matmul_params(self) -> int:
        """The matmul parameters one token multiplies by (`matmul_params` less the experts it
        is not routed to): its 2·N FLOPs, and the N of a mixture of experts' MFU."""
        return self.matmul_params() - self.n_layers * (self.n_experts - self.top_k) * \
            self.expert_params()

    def capacity(self, tokens: int) -> int:
        """C, the slots each expert keeps per sequence in a step of `tokens` tokens a
        sequence (`tpuinfer.experts.capacity`)."""
        return experts.capacity(self, tokens)

    def weight_bytes(self, weights: str = "bf16") -> float:
        """Bytes of all parameters in a weight format; int8 adds a bf16 scale per output
        channel of each matrix (norms stay bf16)."""
        return weight_formats.weight_bytes(self, weights)  # one formula, shared with the int8 path

    # ---- compute ------------------------------------------------------------------------
    def flops_per_token(self) -> float:
        """2·N FLOPs per token: only the weight matmuls count (the paper's Section 2); a
        mixture of experts' N counts only the k experts a token is routed to."""
        return 2.0 * self.active_matmul_params()

    def mfu_flops_per_token(self) -> float:
        """The FLOPs the paper's MFU figures assume (its rounded N where it gives one; a
        mixture of experts' active N)."""
        return 2.0 * (self.mfu_params if self.mfu_params is not None
                      else self.active_matmul_params())

    def attention_flops(self, batch: int, tokens: int, context: int,
                        heads: int | None = None) -> float:
        """Score and value matmuls (QK^T and PV) of `tokens` queries per sequence against
        `context` positions, on `heads` query heads (all H by default; a chip's share in a
        layout's terms): not part of 2·N, reported separately."""
        heads = self.H if heads is None else heads
        return 2.0 * 2.0 * self.n_layers * batch * tokens * context * heads * self.D

    def score_bytes(self, batch: int, tokens: int, context: int,
                    heads: int | None = None) -> float:
        """The f32 attention scores of `tokens` queries per sequence against `context`
        positions, on `heads` query heads (all H by default), every layer: 4 bytes each."""
        heads = self.H if heads is None else heads
        return 4.0 * self.n_layers * batch * tokens * context * heads

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
    # ---- mixtures of experts (`tpuinfer.experts`; the layouts ep-x, ep-xy, ep-xyz) ----------
    # tiny-moe: a serial block with multiquery attention, 256 experts (as DeepSeek-V3 has), 2
    # per token, and a shared expert: 256 experts so that ep-xyz holds one on each chip of the
    # full 4x8x8 mesh; E = H = 64 and F = U = 128 so that ep-x splits them over its 64 chips
    # of y·z with two columns of F each (with one, XLA turns the down-projection into a
    # multiply that its FLOP count prices at half a matmul's), and no larger, since a step's
    # capacity buffers hold M slots a sequence of E each.
    "tiny-moe": ModelConfig("tiny-moe", 2, 64, 128, 64, 8, 1, 512, parallel_block=False,
                            n_experts=256, top_k=2, shared_d_ff=128),
    # Mixtral 8x7B (Mistral AI): 8 experts, 2 per token, Llama's block otherwise (GQA with 8
    # K/V heads, untied table of 32,000 rows; sliding-window attention off in this config).
    # Source: huggingface.co/mistralai/Mixtral-8x7B-v0.1/blob/main/config.json
    # (hidden_size 4096, intermediate_size 14336, num_hidden_layers 32,
    # num_attention_heads 32, num_key_value_heads 8, num_local_experts 8,
    # num_experts_per_tok 2, vocab_size 32000, tie_word_embeddings false; head_dim 4096/32).
    # Published: 46.7B parameters in total, 12.9B used per token (mistral.ai/news/
    # mixtral-of-experts; Jiang et al. 2024, arXiv 2401.04088, Section 2: "47B", "13B active").
    "mixtral-8x7b": ModelConfig("mixtral-8x7b", 32, 4096, 14336, 32, 128, 8, 32_000,
                                parallel_block=False, tied_embeddings=False, n_experts=8,
                                top_k=2),
    # Qwen3 MoE (Alibaba): 128 experts, 8 per token, no shared experts, every layer MoE
    # (decoder_sparse_step 1, mlp_only_layers []), top-k weights renormalised
    # (norm_topk_prob true), GQA with 4 K/V heads of 128, untied table of 151,936 rows. QK-norm
    # (an RMS-norm of 128 on each query and key head, 256 parameters a layer) is left out.
    # Source: huggingface.co/Qwen/Qwen3-30B-A3B/blob/main/config.json (hidden_size 2048,
    # moe_intermediate_size 768, num_hidden_layers 48, num_attention_heads 32,
    # num_key_value_heads 4, head_dim 128, num_experts 128, num_experts_per_tok 8,
    # vocab_size 151936, tie_word_embeddings false) and Qwen/Qwen3-235B-A22B's (hidden_size
    # 4096, moe_intermediate_size 1536, num_hidden_layers 94, num_attention_heads 64, the
    # rest alike). Published on the model cards: 30.5B in total, 3.3B activated (29.9B
    # without embeddings); 235B in total, 22B activated (234B without embeddings); the
    # Qwen3 technical report (Yang et al. 2025, arXiv 2505.09388, Table 2) lists the shapes.
    "qwen3-30b-a3b": ModelConfig("qwen3-30b-a3b", 48, 2048, 768, 32, 128, 4, 151_936,
                                 parallel_block=False, tied_embeddings=False, n_experts=128,
                                 top_k=8),
    "qwen3-235b-a22b": ModelConfig("qwen3-235b-a22b", 94, 4096, 1536, 64, 128, 4, 151_936,
                                   parallel_block=False, tied_embeddings=False,
                                   n_experts=128, top_k=8),
    # Not here: DeepSeek-V3 (and R1), whose attention is multi-head latent attention (a
    # compressed K/V projection the engine and cost model do not implement).
}


def get_model(name: str | ModelConfig) -> ModelConfig:
    if isinstance(name, ModelConfig):
        return name
    try:
        return MODELS[name]
    except KeyError:
        raise UsageError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}") from None
