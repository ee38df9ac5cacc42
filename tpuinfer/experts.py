"""Mixture-of-experts counts: the capacity rule and the experts a batch touches.

Letters beside the paper's (Pope et al. 2022, arXiv 2211.05102, Section 3.1): M routed experts,
k of them per token (its R = k routes), C slots per expert per sequence (the capacity), U the
shared experts' hidden size; F is each routed expert's hidden size. Standard library only: the
cost model, the planner and the engine all call these, so each rule has one source.

**Capacity.** Static shapes need a fixed number of slots per expert, so a step compiles once.
A sequence's L·k routes queue at their experts in token order (a token's k experts are
distinct, so its order among its own routes never matters), and each expert keeps the first

    C = min(L, max(1, ceil(capacity_factor · L · k / M)))

of each sequence; the rest are dropped: that token gets nothing from that expert (its other
experts, the shared experts and the residual still reach it). Dropping over capacity is how
GShard (Lepikhin et al. 2020, arXiv 2006.16668, Section 2.2) and the Switch Transformer (Fedus
et al. 2021, arXiv 2101.03961, Section 2.2) run with static shapes; counting capacity per
sequence is MaxText's dropping path (AI-Hypercomputer/maxtext, layers/moe.py,
`generate_masks`: `tokens_per_batch = seq_len · num_experts_per_tok`). Per sequence, the
dropped routes are a property of the batch, not of how a layout places it: the reference and
every expert-parallel layout drop the same ones. C ≤ L because a sequence cannot send one
expert more than its L tokens: in decode (L = 1) C = 1 and nothing is ever dropped, but every
sequence carries a slot for every expert, M slots for its k routes.

**Experts touched.** A step's expert weights need only be read for the experts some token
went to. With uniform routing, each of T tokens picks k of the M experts, every k-subset
alike: expert m is missed by one token with probability 1 − k/M, by all T (independent tokens)
with probability (1 − k/M)^T, so the expected number of distinct experts touched is

    E[touched] = M · (1 − (1 − k/M)^T)

k at T = 1, rising to all M once T passes a few times M/k (`experts_touched`). Real routing
departs in two ways, both towards fewer experts than this: (1) load is uneven: with expert m
chosen by a token with probability p_m (Σ p_m = k), E[touched] = Σ (1 − (1 − p_m)^T), which is
concave in the p_m and so largest when they are equal (load-balancing losses push routers
towards uniform, never past it); (2) tokens are not independent: the tokens of one sequence,
or of one topic, favour the same experts. So the formula is an upper bound on the weights a
decode step reads at a given batch, and a router's measured statistics can only lower it.
"""
from __future__ import annotations

import math


def capacity(cfg, tokens: int) -> int:
    """C: the slots each expert keeps per sequence, in a step of `tokens` tokens a sequence
    (the rule in the module docstring)."""
    want = math.ceil(cfg.capacity_factor * tokens * cfg.top_k / cfg.n_experts)
    return min(tokens, max(1, want))


def experts_touched(n_experts: int, top_k: int, tokens: float) -> float:
    """E[distinct experts touched] by `tokens` tokens each routed to `top_k` of `n_experts`,
    uniformly and independently: M · (1 − (1 − k/M)^T)."""
    if tokens <= 0:
        return 0.0
    return n_experts * (1.0 - (1.0 - top_k / n_experts) ** tokens)


def touched_fraction(cfg, tokens: float) -> float:
    """The expected fraction of the experts that `tokens` tokens touch (1 for a dense model)."""
    if not cfg.n_experts:
        return 1.0
    return experts_touched(cfg.n_experts, cfg.top_k, tokens) / cfg.n_experts


def all_experts_batch(cfg, fraction: float = 0.99) -> float:
    """The tokens T at which uniform routing is expected to touch `fraction` of the experts:
    (1 − k/M)^T = 1 − fraction, so T = ln(1 − fraction) / ln(1 − k/M). Past it a decode
    step reads nearly every expert's weights, as a dense model of the MoE's total size does."""
    return math.log(1.0 - fraction) / math.log(1.0 - cfg.top_k / cfg.n_experts)
