"""Checkers for chapter 7's samplers, KV cache and beam search (solutions/sampling.py).

Deterministic filters are checked on hand-made logits whose answer is known, then on random
ones. Random draws are checked statistically, but with a seeded generator, so that a check
gives the same verdict at every run: 20,000 draws must pass a chi-square test against the
distribution the settings call for (a correct sampler fails it with probability under one
in a million), and a wrong distribution that fits the draws better is named.
"""

# In the order the chapter teaches them: the order of import is the order `summary` lists.
# isort: off
from checks.sampling.penalties import check_apply_penalties, check_repetition_penalty
from checks.sampling.filters import check_top_k_filter, check_top_p_filter
from checks.sampling.next_token import check_sample_next_token
from checks.sampling.kv_cache import check_cached_attention
from checks.sampling.generate import check_generate
from checks.sampling.beam_search import check_beam_search
# isort: on

# Not a checker: the bigram model that traps greedy decoding, which the tests use too.
from checks.sampling.beam_search import greedy_trap  # noqa: F401

__all__ = [
    "check_apply_penalties",
    "check_repetition_penalty",
    "check_top_k_filter",
    "check_top_p_filter",
    "check_sample_next_token",
    "check_cached_attention",
    "check_generate",
    "check_beam_search",
]
