"""KV-cache formats: what one cached key or value costs, written once for the whole library.

The cache of one layer is K and V, each [B, S, K, D] (`model.init_cache`). Its format:

- default (`kv=None`): the activation dtype, as every step computes (bf16 on a chip; the f32
  emulated engine keeps f32 for exact comparisons), no scales;
- "bf16": bf16 values whatever the activations;
- "int8": symmetric int8 values with one bf16 scale per [batch, position, K/V head] (per token,
  per head: the D values of a head share it), quantized when written and applied inside
  attention; real servers keep it so (jax-ml/jax-llm-examples, llama3/llama3_jax/model.py:
  `quant_cache`, int8 over head_dim with a 16-bit scale per token and head);
- "fp8": float8_e4m3fn values, a plain cast (clipped to e4m3's ±448) with no scales: one byte
  a value. vLLM keeps one f32 scale per tensor (docs.vllm.ai, "Quantized KV Cache"), a few
  bytes per layer; here that scale is 1, which the tiny models' keys and values need.

Every count of KV bytes (`step_terms`, `cost`, `kv.max_context`, `ModelConfig.kv_bytes`, and
`measure`'s prediction) goes through `array_bytes` below. Imports nothing of JAX.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from .errors import UsageError

KV_FORMATS = ("bf16", "int8", "fp8")  # what a user passes as `kv=` (None: the activations')


@dataclass(frozen=True)
class KvFormat:
    name: str
    value_bytes: int  # bytes per cached K or V value
    scale_bytes: int  # bytes per scale; one scale per [batch, position, K/V head] (0: none)
    dtype: str  # the cached values' element type (numpy/JAX name)
    hlo: str  # and as XLA prints it

    def bytes_per_value(self, d_head: int) -> float:
        """Bytes per cached value, its share of the head's scale included."""
        return self.value_bytes + self.scale_bytes / d_head


FORMATS = {f.name: f for f in (
    KvFormat("f32", 4, 0, "float32", "f32"),
    KvFormat("bf16", 2, 0, "bfloat16", "bf16"),
    KvFormat("int8", 1, 2, "int8", "s8"),
    KvFormat("fp8", 1, 0, "float8_e4m3fn", "f8e4m3fn"),
)}
SCALE_DTYPE = "bfloat16"  # an int8 cache's scales
FP8_MAX = 448.0  # the largest finite float8_e4m3fn


def check_kv(kv: str | None) -> str | None:
    """`kv` as given, after checking it names a format (None: the activation dtype)."""
    if kv is not None and kv not in KV_FORMATS:
        raise UsageError(f"unknown KV-cache format {kv!r}; choose one of "
                         f"{', '.join(KV_FORMATS)} (or leave it out: the activation dtype)")
    return kv


def resolve(kv: str | None, act_bytes: float) -> KvFormat:
    """The format a cache is held in: `kv` (any of `FORMATS`: "f32" too, as a format already
    resolved), or the activations' (f32 when `act_bytes` is 4, the emulated engine's exact
    runs; bf16 otherwise)."""
    if kv not in FORMATS:
        check_kv(kv)
    return FORMATS[kv or ("f32" if act_bytes == 4 else "bf16")]


def array_bytes(shape_BSKD, kv: str | KvFormat) -> float:
    """Bytes of one cached K (or V) of shape [B, S, K, D] in format `kv`, its scales (one per
    [B, S, K]) included."""
    f = FORMATS[kv] if isinstance(kv, str) else kv
    return math.prod(shape_BSKD) * f.value_bytes + math.prod(shape_BSKD[:3]) * f.scale_bytes
