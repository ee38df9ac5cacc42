"""Weight formats: f32 (exact comparisons), bf16, and int8 or fp8 with a bf16 scale per output
channel.

int8 follows the paper: symmetric per-output-channel quantization, the scale applied after the
matmul, activations and the matmul itself in bf16. fp8 (float8_e4m3fn) is stored the same way:
one byte a value, scaled so that each output channel's largest |w| is e4m3's 448, with the same
bf16 scale per output channel. The engine dequantizes both to the activation dtype inside the
matmul (XLA:CPU has no fp8 matmul); the cost model prices fp8 weights at a chip's fp8 matmul
rate where it has one (`HardwareProfile.fp8_flops`: H100, H200), as a server that also runs
its activations in fp8 would, and refuses them on a chip without. A quantized matrix is a
`QWeight(q, scale)` pytree, so sharding specs, all-gathers and `device_put` treat weights and
scales alike.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from .errors import UsageError
from .shapes import CONTRACT, TABLES, is_matrix
# the formats themselves (bytes, scales, specs) are the cost path's: `weight_formats`
from .weight_formats import (BYTES, HLO_TYPE, QUANTIZED, SCALE_BYTES, WEIGHT_FORMATS, QWeight,
                             check_format, scale_spec, stored_arrays, weight_bytes)

__all__ = ["BYTES", "HLO_TYPE", "QUANTIZED", "SCALE_BYTES", "WEIGHT_FORMATS", "QWeight",
           "check_format", "scale_spec", "stored_arrays", "weight_bytes", "quantize", "prepare",
           "format_of", "activation_dtype"]
# the quantized values: their dtype and the largest magnitude a channel's largest |w| maps to
_QDTYPE = {"int8": (jnp.int8, 127.0), "fp8": (jnp.float8_e4m3fn, 448.0)}


def quantize(w: jax.Array, contract_axes: tuple[int, ...], fmt: str = "int8") -> QWeight:
    """Symmetric int8 (or fp8) over the contracting axes: one scale per output channel. The
    scale is rounded to bf16 (how it is stored) before the weights are divided by it, so the
    stored pair dequantizes to the nearest of its levels (int8: 255 of them), with no
    systematic per-channel error from the scale's own rounding. An int8 KV cache is quantized
    by the same formula over D: one scale per token and head (`model.write_kv`)."""
    dtype, top = _QDTYPE[fmt]
    w32 = w.astype(jnp.float32)
    amax = jnp.max(jnp.abs(w32), axis=contract_axes, keepdims=True)
    scale = jnp.where(amax > 0, amax / top, 1.0).astype(jnp.bfloat16)
    scaled = jnp.clip(w32 / scale.astype(jnp.float32), -top, top)
    q = (jnp.round(scaled) if fmt == "int8" else scaled).astype(dtype)
    return QWeight(q, jnp.squeeze(scale, axis=contract_axes))


def prepare(params: dict, weights: str | None) -> dict:
    """Parameters in a weight format: None keeps them as they are; 'f32'/'bf16' cast;
    'int8' and 'fp8' quantize every matrix (norm scales become bf16)."""
    if weights is None:
        return params
    check_format(weights)

    def one(name, w):
        if isinstance(w, QWeight):
            raise UsageError(f"parameters are already {format_of(params)}; pass the "
                             "unquantized parameters")
        if weights in QUANTIZED:
            return quantize(w, CONTRACT[name], weights) if is_matrix(name) else \
                w.astype(jnp.bfloat16)
        return w.astype(jnp.float32 if weights == "f32" else jnp.bfloat16)

    return {**{t: one(t, params[t]) for t in TABLES if t in params},
            "final_norm": one("final_norm", params["final_norm"]),
            "layers": [{n: one(n, w) for n, w in layer.items()} for layer in params["layers"]]}


def format_of(params: dict) -> str:
    """The weight format parameters are in."""
    e = params["embed"]
    if isinstance(e, QWeight):
        return "fp8" if e.q.dtype == jnp.float8_e4m3fn else "int8"
    return {jnp.dtype(jnp.float32): "f32", jnp.dtype(jnp.bfloat16): "bf16"}[jnp.dtype(e.dtype)]


def activation_dtype(weights: str):
    """f32 weights compute in f32 (exact comparisons); bf16, int8 and fp8 compute in bf16."""
    return jnp.float32 if weights == "f32" else jnp.bfloat16
