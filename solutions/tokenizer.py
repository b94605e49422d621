"""Chapter 1, first half: byte-level byte-pair encoding, the tokenizer of GPT-2 (text <-> ids)."""

import heapq
import json
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from functools import cache
from pathlib import Path

import regex

# GPT-2's pre-tokenisation pattern, exactly as OpenAI's encoder.py writes it, for the `regex`
# package: \p{L} is any letter and \p{N} any number, in any script. Python's `re` has neither.
# Every character matches some alternative, so the chunks always join back into the text.
GPT2_SPLIT_PATTERN = (
    r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
)


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
    adds a token whose bytes are those of a followed by those of b. Special tokens (such as
    "<|endoftext|>") take the ids after the merges', in the order given.
    """

    def __init__(self, merges: dict[tuple[int, int], int], special_tokens: Iterable[str] = ()):
        # Insertion order is training order; the new ids count up from 256.
        self.merges = dict(merges)
        self.vocab = {i: bytes([i]) for i in range(256)}
        for (a, b), new_id in self.merges.items():
            self.vocab[new_id] = self.vocab[a] + self.vocab[b]
        self.special_ids = {}
        for token in dict.fromkeys(special_tokens):
            self.special_ids[token] = len(self.vocab)
            self.vocab[len(self.vocab)] = token.encode("utf-8")
        # Longest first, so that where one special token is a prefix of another, the
        # longer one wins: the alternation takes the first alternative that matches.
        longest_first = sorted(self.special_ids, key=len, reverse=True)
        self.special_pattern = "|".join(map(regex.escape, longest_first)) or None

    @classmethod
    def train(cls, text: str, vocab_size: int) -> "BPETokenizer":
        """Learn vocab_size - 256 merges from `text`; return `cls(merges)`.

        Split `text` into chunks with GPT2_SPLIT_PATTERN (regex.findall) and each chunk into
        its UTF-8 bytes. Then for new_id = 256, 257, ..., vocab_size - 1: count the pairs
        inside every chunk (never across two chunks) and add the counts up, pick
        `most_frequent_pair`, record merges[pair] = new_id and merge the pair in every
        chunk. Stop early if no chunk has two ids left.
        """
        # Each distinct chunk is handled once and its pairs weighted by how often it
        # occurs: the same counts as going through every chunk, many times faster.
        chunks = Counter(regex.findall(GPT2_SPLIT_PATTERN, text))
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

    def encode_ordinary(self, text: str) -> list[int]:
        """Token ids of `text`, each GPT2_SPLIT_PATTERN chunk encoded on its own, as in training.

        A chunk starts as its UTF-8 bytes; then, while some adjacent pair has a merge, merge
        the pair learned earliest (the smallest new id) everywhere in the chunk.
        """
        tokens = []
        for chunk in regex.findall(GPT2_SPLIT_PATTERN, text):
            ids = list(chunk.encode("utf-8"))
            while len(ids) >= 2:
                rank = lambda pair: self.merges.get(pair, math.inf)  # noqa: E731
                pair = min(zip(ids, ids[1:], strict=False), key=rank)
                if pair not in self.merges:
                    break
                ids = merge(ids, pair, self.merges[pair])
            tokens += ids
        return tokens

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`: each special token one id, never merged with its neighbours.

        Find the special tokens with regex.finditer(self.special_pattern, text) (longest
        first, so "<|endoftext|><|endoftext|>" is not read as two "<|endoftext|>"); each match
        is its id in self.special_ids, and the text between matches goes through
        `encode_ordinary`. With no special tokens, self.special_pattern is None.
        """
        if self.special_pattern is None:
            return self.encode_ordinary(text)
        ids, start = [], 0
        for match in regex.finditer(self.special_pattern, text):
            ids += self.encode_ordinary(text[start : match.start()])
            ids.append(self.special_ids[match.group()])
            start = match.end()
        return ids + self.encode_ordinary(text[start:])

    def encode_iterable(self, texts: Iterable[str]) -> Iterator[int]:
        """The ids of "".join(texts), one at a time, without ever joining the whole input.

        Keep back only the text that the next string could still change: add each string to
        what was kept, encode the part before `self._settled(...)` and yield its ids, keep the
        rest. After the last string, encode whatever is left.
        """
        pending = ""
        for text in texts:
            pending += text
            cut = self._settled(pending)
            yield from self.encode(pending[:cut])
            pending = pending[cut:]
        yield from self.encode(pending)

    def _settled(self, text: str) -> int:
        """A length n such that text[:n] encodes to the same ids whatever text comes after.

        Text before a special token is settled. At the end, the last chunk may grow ("ab" +
        "c") and the one before it may join the next ("'" + "l" + "l" is the one chunk "'ll"),
        so both wait; and a cut never follows whitespace, whose chunks depend on the character
        after them ("\n\n" + "x" is "\n", "\n", "x"). A special token waits while a longer
        one could still be completed, and nothing closer to the end than the longest special
        token is settled: one may begin there.
        """
        longest = max(map(len, self.special_ids), default=1)
        open_from = len(text) - (longest - 1)  # a special token may still begin here
        settled, start = 0, 0
        pieces = regex.finditer(self.special_pattern, text) if self.special_pattern else ()
        for piece in [*pieces, None]:
            end = piece.start() if piece else len(text)
            chunks = list(regex.finditer(GPT2_SPLIT_PATTERN, text[start:end]))
            for chunk in chunks if piece else chunks[:-2]:
                if start + chunk.end() >= open_from:
                    return settled
                if not chunk.group()[-1].isspace():
                    settled = start + chunk.end()
            if not piece or piece.start() >= open_from:
                return settled
            settled = start = piece.end()
        return settled

    def decode(self, ids: list[int]) -> str:
        """The text of `ids`: join all the tokens' bytes, then decode them as UTF-8 once.

        A character's bytes may lie in several tokens, so decoding token by token would break
        it. Bytes that are not valid UTF-8 (say, one token holding half a character) become
        U+FFFD: use bytes.decode("utf-8", errors="replace").
        """
        return b"".join(self.vocab[i] for i in ids).decode("utf-8", errors="replace")


def train_incremental(text: str, vocab_size: int) -> dict[tuple[int, int], int]:
    """The merges BPETokenizer.train learns, in the same order, without recounting every pair.

    A merge changes only the chunks that contain its pair. Keep the summed pair counts and an
    index from each pair to the chunks it occurs in; after merging `pair`, go through just those
    chunks: subtract their old pair counts, merge, add their new ones (each times the chunk's
    frequency), and index the chunks under their new pairs. Pick each merge as
    most_frequent_pair would: highest count, then smallest pair.
    """
    chunks = Counter(regex.findall(GPT2_SPLIT_PATTERN, text))
    words = [list(chunk.encode("utf-8")) for chunk in chunks]
    freq = list(chunks.values())
    counts, where = Counter(), defaultdict(set)
    for w, ids in enumerate(words):
        for pair, k in count_pairs(ids).items():
            counts[pair] += k * freq[w]
            where[pair].add(w)
    # Scanning every count for the maximum would cost as much as recounting: a heap of
    # (-count, pair) pops the highest count, smallest pair first. A count that changes gets a
    # new entry; old entries are skipped when they reach the top.
    heap = [(-n, pair) for pair, n in counts.items()]
    heapq.heapify(heap)
    merges = {}
    for new_id in range(256, vocab_size):
        while heap and -heap[0][0] != counts.get(heap[0][1]):
            heapq.heappop(heap)
        if not heap:
            break
        pair = heapq.heappop(heap)[1]
        merges[pair] = new_id
        changed = set()
        for w in where.pop(pair):
            before = count_pairs(words[w])
            words[w] = merge(words[w], pair, new_id)
            after = count_pairs(words[w])
            for p in before.keys() | after.keys():
                if delta := (after.get(p, 0) - before.get(p, 0)) * freq[w]:
                    counts[p] += delta
                    changed.add(p)
            for p in after:
                where[p].add(w)  # a chunk may stay indexed under pairs it lost: harmless
        for p in changed:
            if counts[p]:
                heapq.heappush(heap, (-counts[p], p))
            else:
                del counts[p]
    return merges


# --- GPT-2's own tokenizer, from the files OpenAI published ------------------------------

GPT2_DATA = Path(__file__).parent / "data"
END_OF_TEXT = "<|endoftext|>"


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's table from each byte to the printable character that spells it in its files.

    vocab.json and merges.txt are text, one merge a line with a space between the two tokens,
    so a token's bytes must be spelled in characters that are neither whitespace nor control
    codes. The 188 bytes that are printable Latin-1 characters ('!'..'~', '¡'..'¬', '®'..'ÿ')
    stand for themselves; the other 68 take chr(256), chr(257), ... in byte order. A space
    (byte 32, the 33rd of them) is 'Ġ' = chr(288), a newline 'Ċ' = chr(266).
    """
    printable = {*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)}
    printable |= set(range(ord("®"), ord("ÿ") + 1))
    table, n = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + n)
            n += 1
    return table


def load_merge_ranks(path: str | Path) -> dict[tuple[str, str], int]:
    """GPT-2's merges.txt as ranks: each pair of token strings to its place, 0 for the first.

    The first line is a header ("#version: 0.2"); every other line is one merge, such as
    "Ġ t", in the order GPT-2 learned them. A lower rank means learned earlier.
    """
    lines = Path(path).read_text(encoding="utf-8").splitlines()[1:]
    return {tuple(line.split(" ")): rank for rank, line in enumerate(lines)}


def bpe(word: str, ranks: dict[tuple[str, str], int]) -> list[str]:
    """GPT-2's encoding of one chunk, spelled in bytes_to_unicode characters, into tokens.

    Start from the characters of `word`. While some adjacent pair has a rank, take the pair of
    lowest rank and join each of its occurrences into one string, left to right, as `merge`
    does ("aaa" with ("a", "a") gives ["aa", "a"]).
    """
    parts = list(word)
    while len(parts) >= 2:
        pair = min(zip(parts, parts[1:], strict=False), key=lambda p: ranks.get(p, math.inf))
        if pair not in ranks:
            break
        out, i = [], 0
        while i < len(parts):
            if i + 1 < len(parts) and (parts[i], parts[i + 1]) == pair:
                out.append(parts[i] + parts[i + 1])
                i += 2
            else:
                out.append(parts[i])
                i += 1
        parts = out
    return parts


class GPT2Tokenizer:
    """GPT-2's tokenizer: its pattern, byte table, merge ranks and ids, and <|endoftext|>.

    encode and decode give the ids of OpenAI's encoder and of HuggingFace's GPT-2 tokenizer.
    """

    def __init__(self, vocab: dict[str, int], ranks: dict[tuple[str, str], int]):
        self.vocab, self.ranks = vocab, ranks
        self.tokens = {i: token for token, i in vocab.items()}
        self.byte_char = bytes_to_unicode()
        self.char_byte = {c: b for b, c in self.byte_char.items()}
        self.cache: dict[str, list[int]] = {}  # chunk -> ids: most chunks recur

    def encode(self, text: str) -> list[int]:
        """Ids of `text`: <|endoftext|> anywhere in it is id 50256, never split into pieces."""
        ids = []
        for k, piece in enumerate(text.split(END_OF_TEXT)):
            if k:
                ids.append(self.vocab[END_OF_TEXT])
            for chunk in regex.findall(GPT2_SPLIT_PATTERN, piece):
                if chunk not in self.cache:
                    word = "".join(self.byte_char[b] for b in chunk.encode("utf-8"))
                    self.cache[chunk] = [self.vocab[t] for t in bpe(word, self.ranks)]
                ids += self.cache[chunk]
        return ids

    def decode(self, ids: list[int]) -> str:
        """The text of `ids`: tokens' characters -> bytes, then UTF-8, as BPETokenizer does."""
        chars = "".join(self.tokens[i] for i in ids)
        return bytes(self.char_byte[c] for c in chars).decode("utf-8", errors="replace")


@cache
def load_gpt2_tokenizer() -> GPT2Tokenizer:
    """GPT-2's tokenizer from the vocab.json and merges.txt in solutions/data (see its README)."""
    vocab = json.loads((GPT2_DATA / "vocab.json").read_text(encoding="utf-8"))
    return GPT2Tokenizer(vocab, load_merge_ranks(Path(str(GPT2_DATA / "merges.txt"))))
