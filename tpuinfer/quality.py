"""A model's quality on held-out text, per weight format and per KV-cache format: what the paper
means by int8 costing "no noticeable loss" (arXiv 2211.05102, Section 3.6), measured on the
trained tiny model.

- held-out loss in nats per byte, its perplexity, and bits per byte (one token is one byte);
- top-1 agreement: the share of held-out positions whose most likely next byte is the same
  under two formats (int8 against bf16, bf16 against f32);
- per matrix, the relative error of int8's dequantized weights, ||W - dequant(Q)|| / ||W||;
- per KV-cache format (int8 with a scale per token and head, fp8: `tpuinfer.kv_formats`), the
  held-out loss of bf16 weights with the cache in that format, beside bf16's own cache: every
  position attends to keys and values read back from the cache, as each decode step does.

Held-out text is cut into windows of `seq_len` + 1 bytes; every byte after a window's first
is predicted from those before it in the window.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import model, quant
from .config import ModelConfig

FORMATS = ("f32", "bf16", "int8")
SEQ_LEN = 64  # bytes of context per held-out window: what the tiny model was trained on


def windows(data_N: np.ndarray, seq_len: int) -> np.ndarray:
    """[W, seq_len + 1] non-overlapping windows of a token array (the remainder dropped)."""
    n = (len(data_N) - 1) // seq_len
    return np.stack([data_N[i * seq_len:i * seq_len + seq_len + 1] for i in range(n)]).astype(
        np.int32)


@functools.partial(jax.jit, static_argnames=("cfg", "dtype", "kv"))
def scores(params, cfg: ModelConfig, window_BL1, dtype=jnp.float32, kv=None):
    """(negative log-likelihood [B, L], most likely token [B, L]) of each window's bytes
    after its first, with the KV cache in format `kv` (None: `dtype`)."""
    x_BL, y_BL = window_BL1[:, :-1], window_BL1[:, 1:]
    cache = model.init_cache(cfg, *x_BL.shape, dtype, kv)
    logits_BLV, _ = model.forward(params, cfg, x_BL, cache, 0, dtype=dtype)
    logp_BLV = jax.nn.log_softmax(logits_BLV.astype(jnp.float32), axis=-1)
    nll_BL = -jnp.take_along_axis(logp_BLV, y_BL[..., None], axis=-1)[..., 0]
    return nll_BL, jnp.argmax(logits_BLV, axis=-1)


def held_out_scores(params, cfg: ModelConfig, data_N: np.ndarray, weights: str,
                    seq_len: int = SEQ_LEN, batch: int = 16,
                    kv: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """`scores` over every window of `data_N`, with the parameters in `weights` (f32, bf16 or
    int8; bf16 and int8 compute in bf16, as served) and the KV cache in `kv` (None: the
    activations' dtype)."""
    qparams = quant.prepare(params, weights)
    dtype = quant.activation_dtype(weights)
    win_WL1 = windows(data_N, seq_len)
    nll, top = [], []
    for i in range(0, len(win_WL1), batch):
        n, t = scores(qparams, cfg, jnp.asarray(win_WL1[i:i + batch]), dtype=dtype, kv=kv)
        nll.append(np.asarray(n))
        top.append(np.asarray(t))
    return np.concatenate(nll), np.concatenate(top)


@dataclass(frozen=True)
class Quality:
    """Held-out quality of one model per weight format and per KV format (`evaluate`)."""
    model: str
    held_out_bytes: int
    loss: dict[str, float]  # nats per byte, per weight format
    agreement: dict[tuple[str, str], float]  # share of positions with the same top token
    # nats per byte with bf16 weights, per KV-cache format (bf16: the same run as loss["bf16"])
    kv_loss: dict[str, float] = field(default_factory=dict)
    # share of positions whose top token is bf16 cache's, per KV-cache format
    kv_agreement: dict[str, float] = field(default_factory=dict)

    def perplexity(self, fmt: str) -> float:
        return float(np.exp(self.loss[fmt]))

    def kv_perplexity_change(self, kv: str) -> float:
        """Held-out perplexity with the cache in `kv`, relative to the bf16 cache's, less 1
        (bf16 weights both): +0.01 is 1% worse."""
        return float(np.exp(self.kv_loss[kv] - self.kv_loss["bf16"]) - 1)

    def bits_per_byte(self, fmt: str) -> float:
        return self.loss[fmt] / np.log(2)

    def rows(self) -> list[list[str]]:
        return [[f, f"{self.loss[f]:.4f}", f"{self.perplexity(f):.4f}",
                 f"{self.bits_per_byte(f):.4f}"] for f in self.loss]

    def kv_rows(self) -> list[list[str]]:
        """Per KV format: its loss, perplexity, the perplexity's change against the bf16
        cache and the top-token agreement with it."""
        return [[kv, f"{loss:.4f}", f"{np.exp(loss):.4f}",
                 f"{self.kv_perplexity_change(kv):+.3%}", f"{self.kv_agreement[kv]:.2%}"]
                for kv, loss in self.kv_loss.items()]


def evaluate(params, cfg: ModelConfig, data_N: np.ndarray, formats=FORMATS,
             seq_len: int = SEQ_LEN, kv=()) -> Quality:
    """Held-out loss per weight format, and the top-1 agreement of each format with the next
    wider one (bf16 with f32, int8 with bf16). With `kv` (KV-cache formats, e.g. ("int8",
    "fp8")), the loss of bf16 weights with the cache in each, beside the bf16 cache's."""
    out = {f: held_out_scores(params, cfg, data_N, f, seq_len) for f in formats}
    loss = {f: float(nll.mean()) for f, (nll, _) in out.items()}
    pairs = [(a, b) for a, b in (("int8", "bf16"), ("bf16", "f32")) if a in out and b in out]
    agreement = {(a, b): float(np.mean(out[a][1] == out[b][1])) for a, b in pairs}
    kv_out = {}
    if kv:
        kv_out["bf16"] = out.get("bf16") or held_out_scores(params, cfg, data_N, "bf16", seq_len)
        kv_out |= {f: held_out_scores(params, cfg, data_N, "bf16", seq_len, kv=f)
                   for f in kv if f != "bf16"}
    return Quality(cfg.name, int(next(iter(out.values()))[0].size), loss, agreement,
                   kv_loss={f: float(nll.mean()) for f, (nll, _) in kv_out.items()},
                   kv_agreement={f: float(np.mean(top == kv_out["bf16"][1]))
                                 for f, (_, top) in kv_out.items()})


def matrix_errors(params) -> dict[str, float]:
    """Per weight matrix, ||W - dequant(Q)|| / ||W|| of its int8 form (`quant.quantize`)."""
    q = quant.prepare(params, "int8")
    pairs = [("embed", params["embed"], q["embed"])] + [
        (f"layer {i} {name}", w, qlayer[name])
        for i, (layer, qlayer) in enumerate(zip(params["layers"], q["layers"]))
        for name, w in layer.items() if quant.is_matrix(name)]
    errors = {}
    for label, w, qw in pairs:
        axes = quant.CONTRACT[label.split()[-1]]
        deq = np.asarray(qw.q, np.float32) * np.expand_dims(np.asarray(qw.scale, np.float32), axes)
        w32 = np.asarray(w, np.float32)
        errors[label] = float(np.linalg.norm(deq - w32) / np.linalg.norm(w32))
    return errors


def unigram_loss(train_N: np.ndarray, held_out_N: np.ndarray, vocab: int = 256) -> float:
    """Nats per byte of the held-out bytes under the train split's byte frequencies (add-one
    smoothed): the baseline a model that ignores context reaches."""
    counts = np.bincount(train_N, minlength=vocab).astype(np.float64) + 1.0
    logp = np.log(counts / counts.sum())
    return float(-logp[held_out_N].mean())


class LogitChange(NamedTuple):
    """How far one weight format moves the logits from another's (`logits_change`)."""
    relative_norm: float  # ||logits_weights - logits_against|| / ||logits_against||
    top1_agreement: float  # share of positions whose most likely token is the same
    noise: float  # mean over positions of the standard deviation of the difference
    median_lead: float  # median over positions of (top logit - second) under `against`
    spread: float  # mean over positions of the logits' standard deviation under `against`


def logits_change(params, cfg: ModelConfig, tokens_BL, weights: str = "int8",
                  against: str = "bf16") -> LogitChange:
    """How far a weight format moves the logits, over every position of `tokens_BL`: the
    measure that means something on random weights too; with the size of the difference at
    each position, the lead of the top choice and the logits' spread, which together say how
    much that difference can change."""
    logits = {}
    for fmt in (weights, against):
        dtype = quant.activation_dtype(fmt)
        cache = model.init_cache(cfg, *np.shape(tokens_BL), dtype)
        out, _ = model.forward(quant.prepare(params, fmt), cfg, jnp.asarray(tokens_BL), cache, 0,
                               dtype=dtype)
        logits[fmt] = np.asarray(out, np.float32)
    a, b = logits[weights], logits[against]
    top2 = np.sort(b, axis=-1)[..., -2:]
    return LogitChange(float(np.linalg.norm(a - b) / np.linalg.norm(b)),
                       float(np.mean(a.argmax(-1) == b.argmax(-1))),
                       float((a - b).std(axis=-1).mean()),
                       float(np.median(top2[..., 1] - top2[..., 0])),
                       float(b.std(axis=-1).mean()))
