"""`Layout`: the names a user picks for one phase (feed-forward and attention layouts, and
the schedule), checked against the layouts that exist."""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import UsageError

FFN_LAYOUTS = ("ws1d", "ws2d", "wg-x", "wg-xy", "wg-xyz")
# a mixture of experts' layouts, in the `ffn` place: experts over x, x·y or every chip
EXPERT_LAYOUTS = ("ep-x", "ep-xy", "ep-xyz")
ATTENTION_LAYOUTS = ("heads", "batch")


@dataclass(frozen=True)
class Layout:
    """How one phase (prefill or decode) is partitioned: a feed-forward layout, an attention
    layout, and whether the collectives that border the matmuls run as Looped
    CollectiveEinsum (collective permutes round a ring, one way or in both directions)."""
    ffn: str = "ws2d"
    attention: str = "heads"
    looped: bool = False
    bidirectional: bool = False  # looped only: halves travel both ways round the ring

    def __post_init__(self):
        if self.ffn not in FFN_LAYOUTS + EXPERT_LAYOUTS:
            raise UsageError(f"unknown feed-forward layout {self.ffn!r}; choose one of "
                             f"{', '.join(FFN_LAYOUTS)} (a mixture of experts: "
                             f"{', '.join(EXPERT_LAYOUTS)})")
        if self.attention not in ATTENTION_LAYOUTS:
            raise UsageError(f"unknown attention layout {self.attention!r}; choose one of "
                             f"{', '.join(ATTENTION_LAYOUTS)}")
        if self.bidirectional and not self.looped:
            raise UsageError("bidirectional=True needs looped=True: it is the looped "
                             "schedule's variant that uses both directions of the ring")

    @property
    def schedule(self) -> str:
        """How the collectives around the matmuls run, in words."""
        return "looped both ways" if self.bidirectional else "looped" if self.looped else "plain"

    def __str__(self):
        loop = "/looped-bidir" if self.bidirectional else "/looped" if self.looped else ""
        return f"{self.ffn}/{self.attention}{loop}"

