"""Text for the trained tiny model: a byte-level tokenizer and the corpus it was trained on.

The tokenizer is the simplest that needs no files: token i is the byte i of the text's UTF-8.
The tiny model's vocabulary of 512 holds the 256 bytes; it is 512, not 256, so that V divides
by the 256 chips of the full mesh with room to spare in every layout. Ids 256-511 are never
produced by `encode`, and `decode` drops any that a model predicts.

The corpus is this project's own prose (README, the book's chapters, the library's docstrings),
snapshotted into `tpuinfer/data/` so that `tpuinfer train` reproduces the shipped checkpoint
from the very bytes it was trained on; it is Apache-2.0, as the project. One 2,048-byte block in
ten is held out: a split by blocks, so the held-out text comes from every chapter and module.
"""
from __future__ import annotations

import ast
import gzip
import hashlib
import re
from pathlib import Path

import numpy as np

from .errors import UsageError

N_BYTES = 256
DATA = Path(__file__).parent / "data"
CORPUS = DATA / "corpus.txt.gz"
BLOCK = 2048  # bytes per block of the train / held-out split
HELD_OUT_EVERY = 10  # block i is held out when i % 10 == 9


def encode(text: str) -> list[int]:
    """Token ids of `text`: its UTF-8 bytes."""
    return list(text.encode("utf-8"))


def decode(tokens) -> str:
    """Text of token ids: the bytes among them, decoded as UTF-8 (a character cut in half
    shows as the replacement character); ids beyond the bytes are left out."""
    ids = np.asarray(tokens).reshape(-1)
    return bytes(int(t) for t in ids if 0 <= t < N_BYTES).decode("utf-8", errors="replace")


def check_vocab(cfg) -> None:
    if cfg.V < N_BYTES:
        raise UsageError(f"{cfg.name}: vocabulary {cfg.V} cannot hold the {N_BYTES} bytes of "
                         f"tpuinfer's byte-level tokenizer; it needs V >= {N_BYTES}")


# ---- the corpus ---------------------------------------------------------------------------
def corpus_bytes() -> bytes:
    """The shipped corpus snapshot (what the checkpoint was trained on)."""
    return gzip.decompress(CORPUS.read_bytes())


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def split(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """(train, held_out) byte arrays: every tenth block of `BLOCK` bytes is held out."""
    arr_N = np.frombuffer(data, dtype=np.uint8)
    n_blocks = -(-len(arr_N) // BLOCK)
    held = np.zeros(len(arr_N), bool)
    for i in range(HELD_OUT_EVERY - 1, n_blocks, HELD_OUT_EVERY):
        held[i * BLOCK:(i + 1) * BLOCK] = True
    return arr_N[~held], arr_N[held]


def collect_prose(root: Path) -> str:
    """The project's prose, for a new corpus snapshot (`tpuinfer train --new-corpus`): the
    READMEs and the workshop guide, each chapter's markdown cells, and every docstring of the
    library. Code is left out: the model is to write sentences, not Python."""
    parts = [(root / p).read_text() for p in ("README.md", "book/README.md", "book/WORKSHOP.md")
             if (root / p).exists()]
    for chapter in sorted((root / "book" / "_src").glob("[0-9]*.py")):
        parts += _markdown_cells(chapter.read_text())
    for module in sorted((root / "tpuinfer").rglob("*.py")):
        parts += _docstrings(module.read_text())
    text = "\n\n".join(p.strip() for p in parts if p.strip())
    return re.sub(r"\n{3,}", "\n\n", text) + "\n"


def _markdown_cells(source: str) -> list[str]:
    """The markdown cells of a jupytext percent-format chapter, without their '# ' prefixes."""
    cells = re.split(r"^# %%", source, flags=re.M)
    out = []
    for cell in cells:
        head, _, body = cell.partition("\n")
        if "[markdown]" in head:
            out.append("\n".join(line[2:] if line.startswith("# ") else line.lstrip("#")
                                 for line in body.splitlines()))
    return out


def _docstrings(source: str) -> list[str]:
    nodes = [n for n in ast.walk(ast.parse(source))
             if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef))]
    return [ast.get_docstring(n) for n in nodes if ast.get_docstring(n)]


def prompts(batch: int, length: int, seed: int = 0) -> np.ndarray:
    """[batch, length] token ids: snippets of the held-out text, each starting at a word (a
    letter after a space or newline: not inside a table, a formula or code), at random places
    drawn with `seed`. Prompts the model never saw in training, as a test set's."""
    held_N = split(corpus_bytes())[1]
    starts_W = np.flatnonzero(np.isin(held_N[:-length - 1], (ord(" "), ord("\n")))) + 1
    first_W = held_N[starts_W] | 0x20  # ASCII lower case
    starts_W = starts_W[(first_W >= ord("a")) & (first_W <= ord("z"))]
    pick_B = np.random.default_rng(seed).choice(starts_W, batch, replace=len(starts_W) < batch)
    return np.stack([held_N[s:s + length] for s in pick_B]).astype(np.int32)
