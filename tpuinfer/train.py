"""Train the tiny model on the project's own prose, from scratch (`tpuinfer train` runs it:
`tpuinfer.cli.train`).

Reproduces the shipped checkpoint (`tpuinfer/data/tiny.npz`, read by `load_params`; a second
run on the 2-core machine that trained it wrote the same bf16 values, bit for bit): the
reference model of `tpuinfer.model` (the same forward every layout is checked against), byte
tokens (`tpuinfer.text`), AdamW from optax with a warm-up and a cosine decay, a fixed seed for
the initial weights and for every batch. It evaluates the held-out split as it goes and keeps
the parameters of the best evaluation (the corpus is small: 184 kB to train on, so a model of
3.8M parameters starts to learn it by heart; in the shipped run the train loss fell to 1.06
nats per byte while the held-out loss stopped improving at 1.47).

Needs the `train` extra (`pip install -e ".[train]"`, in `dev` too) for optax.
"""
from __future__ import annotations

import functools
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from . import checkpoint, model, quality, text
from .config import get_model
from .errors import UsageError

# seq_len 64: tiny's 256 heads of 8 make attention, not the matmuls, most of a training step
# on a CPU (a [B, 256, L, L] softmax per layer): at 64 bytes a step of 2,048 tokens takes about
# 2 s on 2 cores, at 128 twice that per token.
DEFAULTS = {"model": "tiny", "steps": 600, "batch": 32, "seq_len": quality.SEQ_LEN,
            "lr": 3e-3, "warmup": 50, "weight_decay": 0.1, "seed": 0, "eval_every": 50}
SOURCE = ("the project's own prose at the time of training: README.md, book/README.md, "
          "book/WORKSHOP.md, the markdown cells of book/_src/*.py and the docstrings of "
          "tpuinfer/**/*.py (tpuinfer.text.collect_prose)")
LICENCE = "Apache-2.0 (the project's licence)"


def _optimizer(steps: int, lr: float, warmup: int, weight_decay: float):
    try:
        import optax  # optional: the `train` extra, not needed to run or plan
    except ImportError:
        raise UsageError("tpuinfer train needs optax: pip install -e \".[train]\"") from None
    warmup = min(warmup, steps - 1)  # a short run (a test) keeps a step of decay
    schedule = optax.warmup_cosine_decay_schedule(0.0, lr, warmup, max(steps, warmup + 1),
                                                  end_value=lr / 10)
    # the norm scales are not decayed: pulling them to 0 would only shrink the activations
    decay_mask = lambda params: jax.tree.map(lambda w: w.ndim > 1, params)
    return optax.chain(optax.clip_by_global_norm(1.0),
                       optax.adamw(schedule, b1=0.9, b2=0.98, weight_decay=weight_decay,
                                   mask=decay_mask))


def _loss(params, cfg, window_BL1):
    nll_BL, _ = quality.scores(params, cfg, window_BL1)
    return nll_BL.mean()


def batches(train_N: np.ndarray, batch: int, seq_len: int, seed: int):
    """Endless [batch, seq_len + 1] windows at random offsets of the train split."""
    rng = np.random.default_rng(seed)
    while True:
        starts = rng.integers(0, len(train_N) - seq_len - 1, batch)
        yield np.stack([train_N[s:s + seq_len + 1] for s in starts]).astype(np.int32)


def train(model_name: str = DEFAULTS["model"], steps: int = DEFAULTS["steps"],
          batch: int = DEFAULTS["batch"], seq_len: int = DEFAULTS["seq_len"],
          lr: float = DEFAULTS["lr"], warmup: int = DEFAULTS["warmup"],
          weight_decay: float = DEFAULTS["weight_decay"], seed: int = DEFAULTS["seed"],
          eval_every: int = DEFAULTS["eval_every"], out: Path | None = text.DATA,
          corpus: bytes | None = None, progress: bool = True) -> dict:
    """Train from scratch; write the checkpoint to `out` (None: write nothing) and return
    its record (`checkpoint.metadata`). `corpus` None trains on the shipped snapshot."""
    cfg = get_model(model_name)
    text.check_vocab(cfg)
    data = text.corpus_bytes() if corpus is None else corpus
    train_N, held_N = text.split(data)
    if len(train_N) <= seq_len + 1 or len(held_N) <= seq_len + 1:
        raise UsageError(f"a corpus of {len(data):,} bytes is too short for windows of "
                         f"{seq_len} bytes; give more text or a shorter --seq-len")
    opt = _optimizer(steps, lr, warmup, weight_decay)  # says so when optax is missing
    import optax  # optional: the `train` extra
    params = model.init_params(cfg, seed)
    state = opt.init(params)

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def update(params, state, window_BL1):
        loss, grads = jax.value_and_grad(_loss)(params, cfg, window_BL1)
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state, loss

    def held_out_loss(p):
        return float(quality.held_out_scores(p, cfg, held_N, "f32", seq_len)[0].mean())

    curve, best, recent = [], (np.inf, 0, None), []
    t0 = time.perf_counter()
    bar = tqdm(total=steps, desc=f"training {cfg.name}", disable=not progress)
    for step, window_BL1 in zip(range(1, steps + 1), batches(train_N, batch, seq_len, seed)):
        params, state, loss = update(params, state, jnp.asarray(window_BL1))
        recent.append(float(loss))
        bar.update(1)
        if step % eval_every == 0 or step == steps:
            held = held_out_loss(params)
            curve.append({"step": step, "train_loss": float(np.mean(recent)),
                          "held_out_loss": held, "elapsed_s": time.perf_counter() - t0})
            recent = []
            bar.set_postfix(train=f"{curve[-1]['train_loss']:.3f}", held_out=f"{held:.3f}")
            if held < best[0]:
                best = (held, step, jax.tree.map(np.asarray, params))
    bar.close()
    record = {
        "corpus": {"source": SOURCE, "licence": LICENCE, "bytes": len(data),
                   "sha256": text.sha256(data), "train_bytes": int(len(train_N)),
                   "held_out_bytes": int(len(held_N)),
                   "split": f"every {text.HELD_OUT_EVERY}th block of {text.BLOCK} bytes held out"},
        "training": {"steps": steps, "batch": batch, "seq_len": seq_len, "seed": seed,
                     "optimizer": f"optax {optax.__version__}: clip_by_global_norm(1.0), adamw "
                                  f"(b1 0.9, b2 0.98, weight decay {weight_decay} on matrices), "
                                  f"warm-up {warmup} steps to {lr:g}, cosine decay to {lr / 10:g}",
                     "jax": jax.__version__, "devices": str(jax.devices()[0].platform),
                     "wall_s": time.perf_counter() - t0},
        "kept_step": best[1], "held_out_loss": best[0],
        "unigram_held_out_loss": quality.unigram_loss(train_N, held_N),
        "curve": curve}
    if out is not None:
        checkpoint.save(best[2], cfg, record, out)
    return record
