"""Chapter 1, first half: byte-level byte-pair encoding, the tokenizer of GPT-2 (text <-> ids)."""

import math
import re
from collections import Counter

# GPT-2's pre-tokenisation pattern, written for Python's `re`, which has no \p{L} or \p{N}:
# a letter is a word character that is neither a digit nor "_" ([^\W\d_]), a number is \d,
# and "_" joins the punctuation class. Every character matches some alternative, so the
# chunks always join back into the text.
GPT2_SPLIT_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?[^\W\d_]+| ?\d+| ?(?:[^\s\w]|_)+|\s+(?!\S)|\s+"""


def count_pairs(ids: list[int]) -> dict[tuple[int, int], int]:
    """How often each adjacent pair occurs in `ids`, overlaps included: [5, 5, 5] has (5, 5) twice."""
    return dict(Counter(zip(ids, ids[1:], strict=False)))


def most_frequent_pair(counts: dict[tuple[int, int], int]) -> tuple[int, int]:
    """The pair with the highest count; among equal counts, the smallest pair as a tuple.

    (3, 9) beats (4, 1), and (4, 1) beats (4, 2). Never the first one met: a dict's order
    depends on how it was built, and the merges must not.
    """
    return min(counts, key=lambda pair: (-counts[pair], pair))


def merge(ids: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
    """A new list with each occurrence of `pair` replaced by `new_id`, scanning left to right.

    Overlapping occurrences cannot both merge: [5, 5, 5] with pair (5, 5) gives [new_id, 5].
    """
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and (ids[i], ids[i + 1]) == pair:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


class BPETokenizer:
    """Byte-level byte-pair encoding, as in GPT-2, on the UTF-8 bytes of the text.

    Ids 0..255 are the 256 bytes, so every string has an encoding. Each merge (a, b) -> new_id
    adds a token whose bytes are those of a followed by those of b.
    """

    def __init__(self, merges: dict[tuple[int, int], int]):
        # Insertion order is training order; the new ids count up from 256.
        self.merges = dict(merges)
        self.vocab = {i: bytes([i]) for i in range(256)}
        for (a, b), new_id in self.merges.items():
            self.vocab[new_id] = self.vocab[a] + self.vocab[b]

    @classmethod
    def train(cls, text: str, vocab_size: int) -> "BPETokenizer":
        """Learn vocab_size - 256 merges from `text`; return `cls(merges)`.

        Split `text` into chunks with GPT2_SPLIT_PATTERN (re.findall) and each chunk into
        its UTF-8 bytes. Then for new_id = 256, 257, ..., vocab_size - 1: count the pairs
        inside every chunk (never across two chunks) and add the counts up, pick
        `most_frequent_pair`, record merges[pair] = new_id and merge the pair in every
        chunk. Stop early if no chunk has two ids left.
        """
        # Each distinct chunk is handled once and its pairs weighted by how often it
        # occurs: the same counts as going through every chunk, many times faster.
        chunks = Counter(re.findall(GPT2_SPLIT_PATTERN, text))
        words = [(list(chunk.encode("utf-8")), n) for chunk, n in chunks.items()]
        merges = {}
        for new_id in range(256, vocab_size):
            counts = Counter()
            for ids, n in words:
                for pair, k in count_pairs(ids).items():
                    counts[pair] += k * n
            if not counts:
                break
            pair = most_frequent_pair(counts)
            merges[pair] = new_id
            words = [(merge(ids, pair, new_id), n) for ids, n in words]
        return cls(merges)

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`, each GPT2_SPLIT_PATTERN chunk encoded on its own, as in training.

        A chunk starts as its UTF-8 bytes; then, while some adjacent pair has a merge, merge
        the pair learned earliest (the smallest new id) everywhere in the chunk.
        """
        tokens = []
        for chunk in re.findall(GPT2_SPLIT_PATTERN, text):
            ids = list(chunk.encode("utf-8"))
            while len(ids) >= 2:
                rank = lambda pair: self.merges.get(pair, math.inf)  # noqa: E731
                pair = min(zip(ids, ids[1:], strict=False), key=rank)
                if pair not in self.merges:
                    break
                ids = merge(ids, pair, self.merges[pair])
            tokens += ids
        return tokens

    def decode(self, ids: list[int]) -> str:
        """The text of `ids`: join all the tokens' bytes, then decode them as UTF-8 once.

        A character's bytes may lie in several tokens, so decoding token by token would break
        it. Bytes that are not valid UTF-8 (say, one token holding half a character) become
        U+FFFD: use bytes.decode("utf-8", errors="replace").
        """
        return b"".join(self.vocab[i] for i in ids).decode("utf-8", errors="replace")
