"""Checkers for chapter 1's tokenizer (solutions/tokenizer.py): byte-level BPE."""

# In the order the chapter teaches them: the order of import is the order `summary` lists.
# isort: off
from checks.tokenizer.pairs import check_count_pairs, check_merge, check_most_frequent_pair
from checks.tokenizer.bpe_tokenizer import check_bpe_tokenizer, check_train_incremental
from checks.tokenizer.gpt2_tokenizer import (
    check_bpe,
    check_bytes_to_unicode,
    check_load_merge_ranks,
)
# isort: on

__all__ = [
    "check_count_pairs",
    "check_most_frequent_pair",
    "check_merge",
    "check_bpe_tokenizer",
    "check_train_incremental",
    "check_bytes_to_unicode",
    "check_load_merge_ranks",
    "check_bpe",
]
