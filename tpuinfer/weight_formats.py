"""Weight formats: what one stored weight costs, written once for the whole library.

f32 (exact comparisons), bf16, and int8 or fp8 with a bf16 scale per output channel: a
quantized matrix is one byte a value plus one scale per output channel, and its scales are
split as its output dimensions are (`scale_spec`). Every count of weight bytes (`step_terms`,
`ModelConfig.weight_bytes`, `measure`'s prediction) goes through `stored_arrays` and
`weight_bytes` below; quantizing real weights is `tpuinfer.quant`'s (JAX). Imports nothing of
JAX, as `kv_formats` for the KV cache.
"""
from __future__ import annotations

import math
from typing import NamedTuple

from .errors import UsageError
from .shapes import CONTRACT, dims, is_matrix, layer_matrices, output_channels, shape, tables

WEIGHT_FORMATS = ("f32", "bf16", "int8", "fp8")
QUANTIZED = ("int8", "fp8")  # stored one byte a value with a bf16 scale per output channel
BYTES = {"f32": 4, "bf16": 2, "int8": 1, "fp8": 1}
SCALE_BYTES = 2  # bf16 scales
HLO_TYPE = {"f32": "f32", "bf16": "bf16", "int8": "s8", "fp8": "f8e4m3fn"}  # as XLA prints them


def check_format(weights: str) -> str:
    if weights not in WEIGHT_FORMATS:
        raise UsageError(f"unknown weight format {weights!r}; choose one of "
                         f"{', '.join(WEIGHT_FORMATS)}")
    return weights


class QWeight(NamedTuple):
    """A quantized matrix (a pytree, so sharding specs, all-gathers and `device_put` treat
    weights and scales alike); its partition specs are a QWeight of specs."""
    q: object  # int8 or float8_e4m3fn, the matrix's shape
    scale: object  # bf16, the shape of its output dimensions (contracting dims dropped)


def scale_spec(name: str, spec) -> tuple:
    """A scale vector is split like its matrix's output dimensions."""
    entries = tuple(spec) + (None,) * (3 - len(spec))
    ndim = len(dims(name))
    return tuple(e for d, e in enumerate(entries[:ndim]) if d not in CONTRACT[name])


def stored_arrays(name: str, shape, spec, weights: str):
    """The arrays one parameter is stored as, each (label, shape, spec, bytes per element):
    the matrix, plus for int8 and fp8 its bf16 scale vector. Norm scales are never
    quantized."""
    if weights not in QUANTIZED or not is_matrix(name):
        yield name, tuple(shape), spec, (BYTES[weights] if weights not in QUANTIZED
                                         else SCALE_BYTES)
        return
    yield name, tuple(shape), spec, 1
    out_shape = tuple(d for i, d in enumerate(shape) if i not in CONTRACT[name])
    yield name + ".scale", out_shape, scale_spec(name, spec), SCALE_BYTES


def weight_bytes(cfg, weights: str = "bf16") -> float:
    """Bytes of the whole model in a weight format (int8 and fp8: matrices one byte a value,
    one bf16 scale per output channel, norm scales bf16)."""
    check_format(weights)
    norms = cfg.n_layers * cfg.norm_params_per_layer() + cfg.E
    n_tables = len(tables(cfg))  # an untied model's lookup table besides its output table
    matrices = cfg.matmul_params() + (n_tables - 1) * math.prod(shape(cfg, "embed"))
    if weights not in QUANTIZED:
        return (matrices + norms) * BYTES[weights]
    scales = cfg.n_layers * sum(output_channels(cfg, n) for n in layer_matrices(cfg))
    scales += n_tables * output_channels(cfg, "embed")
    return matrices * 1 + (scales + norms) * SCALE_BYTES
