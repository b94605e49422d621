"""How a tokenizer goes wrong: the reference with one decision changed, a replay that says
why a learned merge differs, and HuggingFace's GPT-2 tokenizer, for checks/tokenizer/.
"""

from collections import Counter
from functools import cache

import regex

from solutions import tokenizer as ref


def merge_overlapping(ids, pair, new_id):
    """A wrong merge that replaces overlapping occurrences too: [5, 5, 5] -> [new, new]."""
    hits = [i + 1 < len(ids) and (ids[i], ids[i + 1]) == pair for i in range(len(ids))]
    return [
        new_id if hit else x
        for i, (x, hit) in enumerate(zip(ids, hits, strict=True))
        if hit or i == 0 or not hits[i - 1]
    ]


@cache
def reference_tokenizer(text: str, vocab_size: int) -> ref.BPETokenizer:
    return ref.BPETokenizer.train(text, vocab_size)


def encode_variant(merges, text, *, split=True, order="earliest", merge=ref.merge):
    """The reference encoder with one decision changed, to recognise learners' mistakes."""
    chunks = regex.findall(ref.GPT2_SPLIT_PATTERN, text) if split else [text]
    out = []
    for chunk in chunks:
        ids = list(chunk.encode("utf-8"))
        while len(ids) >= 2:
            pairs = [p for p in zip(ids, ids[1:], strict=False) if p in merges]
            if not pairs:
                break
            pick = {"earliest": min, "latest": max}.get(order)
            pair = pick(pairs, key=merges.get) if pick else pairs[0]
            ids = merge(ids, pair, merges[pair])
        out += ids
    return out


def first_difference(got: list, expected: list) -> int:
    return next(
        (k for k, (a, b) in enumerate(zip(got, expected, strict=False)) if a != b),
        min(len(got), len(expected)),
    )


def explain_merge(check, text, got_items, ref_tok):
    """Fail at the first merge that differs from the reference's, and say why if we can tell."""
    expected = list(ref_tok.merges.items())
    k = first_difference(got_items, expected)
    if k == len(got_items) == len(expected):
        return
    if k == len(got_items):
        check.fail(f"training stopped after {k} merges; expected {len(expected)}.")
    if k == len(expected):
        check.fail(
            f"training learned {len(got_items)} merges; expected {len(expected)}: stop "
            "when vocab_size is reached or when no chunk has a pair left."
        )
    (pair, new_id), (want, want_id) = got_items[k], expected[k]
    if pair == want:
        check.fail(
            f"merge #{k} of {pair} got new id {new_id}, expected {want_id}: new ids count up from 256."
        )
    # Replay the reference up to merge k to count the pairs the learner saw.
    words = Counter(regex.findall(ref.GPT2_SPLIT_PATTERN, text))
    state = ref.BPETokenizer(dict(expected[:k]))
    counts = Counter()
    for chunk, n in words.items():
        for p, c in ref.count_pairs(state.encode(chunk)).items():
            counts[p] += c * n
    name = lambda p: "(" + ", ".join(repr(ref_tok.vocab.get(i, i)) for i in p) + ")"  # noqa: E731
    message = (
        f"merge #{k} (new id {256 + k}) differs: you merged {pair} = {name(pair)}, "
        f"expected {want} = {name(want)}." + (f" The {k} merges before it match." if k else "")
    )
    if counts.get(pair) == counts[want]:
        message += (
            f" Both pairs occur {counts[want]} times at that point: break ties as "
            "most_frequent_pair does, towards the smallest pair."
        )
    elif pair in counts:
        message += (
            f" At that point your pair occurs {counts[pair]} times and the expected one "
            f"{counts[want]} times: count pairs inside each chunk of GPT2_SPLIT_PATTERN, "
            "add the counts over all chunks, and recount after every merge."
        )
    else:
        message += (
            " Your pair never occurs inside a chunk at that point: count pairs inside each "
            "chunk of GPT2_SPLIT_PATTERN, on UTF-8 bytes, never across two chunks."
        )
    check.fail(message)


# Text of every kind GPT-2 meets: several scripts, code, runs of whitespace, contractions,
# numbers of every Unicode kind, emoji, and the special token inside text.
GPT2_TEXTS = [
    "Hello world",
    "def f(x):\n    return x ** 2  # square\n\n\tif x != []: pass",
    "   leading, trailing   \n\n\n  \t\r\n",
    "I'll say it's 'quoted' and we're done; they've, I'M don't",
    "日本語のテキスト、中文。 Ελληνικά русский العربية हिन्दी ภาษาไทย",
    "🙂👍🏽 👨\u200d👩\u200d👧 e\u0301 café naïve",
    "x² ½ Ⅻ 1_000 3.14159 2026-11-27",
    "end.<|endoftext|>Start <|endoftext|><|endoftext|> <|endoftext",
]


@cache
def hf_gpt2():
    """HuggingFace's GPT-2 tokenizer, built from the same two files as load_gpt2_tokenizer."""
    from transformers import GPT2Tokenizer  # about a second to import: only when needed

    vocab, merges = ref.GPT2_DATA / "vocab.json", ref.GPT2_DATA / "merges.txt"
    return GPT2Tokenizer(vocab=str(vocab), merges=str(merges))


def bpe_variant(word, ranks, *, order="lowest", overlap=False, zero_missing=False):
    """The reference loop with one decision changed, to recognise learners' mistakes."""
    parts = list(word)
    while len(parts) >= 2:
        pairs = [p for p in zip(parts, parts[1:], strict=False) if p in ranks]
        if zero_missing:
            pairs = [p for p in pairs if ranks[p]]
        if not pairs:
            break
        pick = {"lowest": min, "highest": max}.get(order)
        pair = pick(pairs, key=ranks.get) if pick else pairs[0]
        if order == "frequent":  # the most frequent pair of the word, then the lowest rank
            pair = max(pairs, key=lambda p: (pairs.count(p), -ranks[p]))
        out, i = [], 0
        while i < len(parts):
            if i + 1 < len(parts) and (parts[i], parts[i + 1]) == pair:
                out.append(pair[0] + pair[1])
                i += 1 if overlap and i + 2 < len(parts) and parts[i + 2] == pair[1] else 2
            else:
                out.append(parts[i])
                i += 1
        parts = out
    return parts
