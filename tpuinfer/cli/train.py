"""`tpuinfer train`: train the tiny model on the project's prose (`tpuinfer.train`), the shipped
checkpoint from scratch. Each option left out takes the recipe's value (`train.DEFAULTS`)."""
from __future__ import annotations

import gzip
import math
from pathlib import Path

from .options import add_json_flag

INTS = ("steps", "batch", "seq_len", "warmup", "seed", "eval_every")
FLOATS = ("lr", "weight_decay")


def register(sub) -> None:
    p = sub.add_parser("train", help="train the tiny model on the project's prose (the "
                                     "shipped checkpoint, from scratch)")
    p.add_argument("--model", default=None, help="default: tiny")
    for names, kind in ((INTS, int), (FLOATS, float)):
        for name in names:
            p.add_argument("--" + name.replace("_", "-"), type=kind, default=None,
                           help="default: the recipe's (tpuinfer.train.DEFAULTS)")
    p.add_argument("--out", type=Path, default=None,
                   help="directory for <model>.npz and <model>.json (default: the package's)")
    p.add_argument("--new-corpus", type=Path, metavar="REPO",
                   help="train on a new snapshot of the prose of the tpuinfer checkout REPO, "
                        "written to OUT/corpus.txt.gz beside the checkpoint (default: the "
                        "shipped snapshot)")
    add_json_flag(p)
    p.set_defaults(func=run)


def run(args):
    # the engine (JAX), imported as the command runs: registering it must not start JAX
    from .. import checkpoint, text
    from ..train import DEFAULTS, train  # JAX: as above

    recipe = {name: DEFAULTS[name] if getattr(args, name) is None else getattr(args, name)
              for name in ("model",) + INTS + FLOATS}
    out = args.out or text.DATA
    corpus = None
    if args.new_corpus:
        corpus = text.collect_prose(args.new_corpus).encode("utf-8")
        out.mkdir(parents=True, exist_ok=True)
        (out / text.CORPUS.name).write_bytes(gzip.compress(corpus, mtime=0))
    record = train(recipe["model"], recipe["steps"], recipe["batch"], recipe["seq_len"],
                   recipe["lr"], recipe["warmup"], recipe["weight_decay"], recipe["seed"],
                   recipe["eval_every"], out, corpus, progress=not args.json)
    lines = [f"{c['step']:>6} {c['train_loss']:>8.4f} {c['held_out_loss']:>9.4f} "
             f"{c['elapsed_s']:>7.0f}" for c in record["curve"]]
    txt = "\n".join(
        [" step    train  held-out  wall s   (nats per byte)"] + lines +
        [f"kept step {record['kept_step']}: held-out {record['held_out_loss']:.4f} nats "
         f"per byte ({record['held_out_loss'] / math.log(2):.3f} bits), against "
         f"{record['unigram_held_out_loss']:.4f} for byte frequencies alone (unigram)",
         f"wrote {checkpoint.path_for(recipe['model'], out)}"])
    return record, txt
