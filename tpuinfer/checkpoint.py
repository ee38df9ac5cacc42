"""Trained checkpoints shipped with the package: `load_params("tiny")`.

A checkpoint is `tpuinfer/data/<model>.npz` (every parameter in bf16, stored as its 16 bits)
beside `<model>.json` (how it was trained: the corpus's source, licence and SHA-256, the
optimizer, the seed, the loss curve and the held-out loss it reached). `tpuinfer train`
writes both; `tpuinfer.text` is the tokenizer.

bf16 halves the file (6.0 MB compressed for tiny's 3.8M parameters; 15 MB in f32) and is the
format the model is served in; loaded as f32 the weights are those same bf16 values, widened
exactly. So on a trained checkpoint "f32 against bf16" compares arithmetic only, and "int8
against bf16" the weights' quantization only.
"""
from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from .config import ModelConfig, get_model
from .errors import UsageError
from .shapes import param_shapes
from .text import DATA


def path_for(model: str, directory: Path = DATA) -> Path:
    return Path(directory) / f"{model}.npz"


def trained_models(directory: Path = DATA) -> list[str]:
    return sorted(p.stem for p in Path(directory).glob("*.npz"))


def _flat(params: dict) -> dict[str, jax.Array]:
    out = {k: params[k] for k in ("embed", "unembed", "final_norm") if k in params}
    for i, layer in enumerate(params["layers"]):
        out |= {f"layers.{i}.{name}": w for name, w in layer.items()}
    return out


def save(params: dict, cfg: ModelConfig, meta: dict, directory: Path = DATA) -> Path:
    """Write `params` (rounded to bf16) and `meta` as the checkpoint of `cfg`."""
    arrays = {k: np.asarray(jnp.asarray(w, jnp.bfloat16)).view(np.uint16)
              for k, w in _flat(params).items()}
    path = path_for(cfg.name, directory)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)
    meta = {**meta, "model": cfg.name, "file_bytes": path.stat().st_size,
            "n_params": cfg.n_params()}
    path.with_suffix(".json").write_text(json.dumps(meta, indent=1) + "\n")
    return path


def metadata(model: str = "tiny", directory: Path = DATA) -> dict:
    """How the checkpoint was made (`tpuinfer train`'s record)."""
    _check_exists(model, directory)
    return json.loads(path_for(model, directory).with_suffix(".json").read_text())


def load_params(model: str | ModelConfig = "tiny", dtype=jnp.float32, shardings=None,
                directory: Path = DATA) -> dict:
    """The trained parameters of `model`, as `init_params` lays them out. With `shardings` (a
    pytree of `NamedSharding`s, e.g. `engine.param_shardings`) each process reads the file and
    places only its own devices' shards, as `init_params(shardings=)` creates them."""
    cfg = get_model(model)
    _check_exists(cfg.name, directory)
    with np.load(path_for(cfg.name, directory)) as npz:
        flat = {k: npz[k].view(jnp.bfloat16) for k in npz.files}
    shapes = param_shapes(cfg)
    expected = _flat(shapes)
    if set(flat) != set(expected) or any(flat[k].shape != tuple(s) for k, s in expected.items()):
        raise UsageError(f"checkpoint {path_for(cfg.name, directory)} does not hold the "
                         f"parameters of {cfg.name}: retrain it with `tpuinfer train`")
    sh = shardings or {**{k: None for k in shapes if k != "layers"},
                       "layers": [{k: None for k in l} for l in shapes["layers"]]}
    flat_sh = _flat(sh)

    def put(key):
        host = flat[key].astype(jnp.dtype(dtype))
        if flat_sh[key] is None:
            return jnp.asarray(host)
        return jax.make_array_from_callback(host.shape, flat_sh[key], lambda idx: host[idx])

    return {**{k: put(k) for k in shapes if k != "layers"},
            "layers": [{name: put(f"layers.{i}.{name}") for name in layer}
                       for i, layer in enumerate(shapes["layers"])]}


def _check_exists(model: str, directory: Path) -> None:
    if not path_for(model, directory).exists():
        have = ", ".join(trained_models(directory)) or "none"
        raise UsageError(f"no trained checkpoint for {model!r} (trained: {have}); use "
                         f"init_params for random weights, or `tpuinfer train --model {model}`")
