"""Checkers for chapter 1's tokenizer (solutions/tokenizer.py): byte-level BPE."""

import re
from collections import Counter
from functools import cache

import torch

from checks._core import CheckFailed, exercise, seeded
from course.corpus import load_corpus
from solutions import tokenizer as ref

__all__ = [
    "check_count_pairs",
    "check_most_frequent_pair",
    "check_merge",
    "check_bpe_tokenizer",
]


def _fail_with_hint(check, failure, hint):
    """Fail the case again with a caught verdict's diagnosis and a hint added."""
    check.fail(failure.diagnosis + hint)


def _plain(check, fn, args, expected, *, what, kind, mistakes=()):
    """Call learner code on plain Python values; compare, naming a known mistake if one matches."""
    before = [
        list(a) if isinstance(a, list) else dict(a) if isinstance(a, dict) else a for a in args
    ]
    got = check.call(fn, *args, what=what)
    if list(args) != before:
        check.fail(f"your {what} modified its input. Build a new {kind} instead.")
    if got is None:
        check.fail(f"your {what} returned None: did you forget `return`?")
    if not isinstance(got, kind):
        check.fail(f"your {what} returned a {type(got).__name__}, expected a {kind.__name__}.")
    if got != expected:
        for description, wrong in mistakes:
            if got == wrong:
                check.fail(
                    f"your {what} returned {got}, expected {expected}: it looks like you {description}."
                )
    check.equal(got, expected, what=f"result of {what}")
    return got


def _ids_label(ids: list[int]) -> str:
    if not ids:
        return "an empty list, ids = []"
    return f"ids = {ids}" if len(ids) < 10 else f"{len(ids)} random ids"


@exercise(ref.count_pairs)
def check_count_pairs(check, count_pairs):
    cases = [[], [7], [1, 2], [1, 2, 1, 2, 1], [5, 5, 5], [5, 5, 5, 5], [0, 255, 300, 0, 255]]
    cases.append(torch.randint(0, 260, (60,), generator=seeded(1)).tolist())
    for ids in cases:
        with check.case(_ids_label(ids)):
            expected = ref.count_pairs(ids)
            mistakes = [
                (
                    "counted each distinct pair once: count every occurrence",
                    {p: 1 for p in expected},
                ),
                (
                    "stepped two ids at a time: pair ids[i] with ids[i + 1] for every i",
                    dict(Counter(zip(ids[::2], ids[1::2], strict=False))),
                ),
            ]
            _plain(
                check,
                count_pairs,
                [list(ids)],
                expected,
                what="count_pairs",
                kind=dict,
                mistakes=mistakes,
            )


@exercise(ref.most_frequent_pair)
def check_most_frequent_pair(check, most_frequent_pair):
    cases = [
        {(1, 2): 3},
        {(1, 1): 1, (9, 9): 5, (2, 2): 1},
        {(4, 2): 7, (9, 9): 1, (4, 1): 7, (3, 9): 2, (5, 0): 7},
        {(300, 5): 4, (12, 300): 4, (12, 299): 4, (7, 7): 3},
    ]
    for counts in cases:
        with check.case(f"counts = {counts}"):
            mistakes = [
                (
                    "took the first of the tied pairs in the dict's order: among equal counts, "
                    "return the smallest pair",
                    max(counts, key=counts.get),
                ),
                (
                    "broke ties towards the largest pair: among equal counts, return the smallest",
                    max(counts, key=lambda p: (counts[p], p)),
                ),
                ("returned the smallest pair, whatever its count", min(counts)),
            ]
            _plain(
                check,
                most_frequent_pair,
                [dict(counts)],
                ref.most_frequent_pair(counts),
                what="most_frequent_pair",
                kind=tuple,
                mistakes=mistakes,
            )


def _merge_overlapping(ids, pair, new_id):
    """A wrong merge that replaces overlapping occurrences too: [5, 5, 5] -> [new, new]."""
    hits = [i + 1 < len(ids) and (ids[i], ids[i + 1]) == pair for i in range(len(ids))]
    return [
        new_id if hit else x
        for i, (x, hit) in enumerate(zip(ids, hits, strict=True))
        if hit or i == 0 or not hits[i - 1]
    ]


@exercise(ref.merge)
def check_merge(check, merge):
    cases = [
        ([1, 2, 3, 1, 2], (1, 2), 256),
        ([3, 1, 2], (1, 2), 256),
        ([1, 2, 4], (1, 2), 256),
        ([5, 5, 5], (5, 5), 300),
        ([5, 5, 5, 5], (5, 5), 300),
        ([1, 2], (2, 1), 256),
        ([], (1, 2), 256),
        ([7], (7, 7), 256),
        (torch.randint(0, 4, (60,), generator=seeded(2)).tolist(), (1, 2), 257),
    ]
    for ids, pair, new_id in cases:
        shown = ids if len(ids) < 10 else f"{len(ids)} random ids"
        with check.case(
            ("an empty list, " if not ids else "") + f"merge({shown}, {pair}, {new_id})"
        ):
            expected = ref.merge(ids, pair, new_id)
            mistakes = [
                (
                    "merged overlapping occurrences: once a pair merges, both its ids are used "
                    "up, so [5, 5, 5] becomes [new_id, 5]",
                    _merge_overlapping(ids, pair, new_id),
                ),
                ("dropped the last id when it was not part of a merge", expected[:-1]),
            ]
            _plain(
                check,
                merge,
                [list(ids), pair, new_id],
                expected,
                what="merge",
                kind=list,
                mistakes=mistakes,
            )


TRICKY_STRINGS = [
    "",
    "\x00",
    " ",
    "a",
    "hello world",
    "Hello,  world!\n\n   indented:\tx = 1_000",
    "🙂👍🏽 👨\u200d👩\u200d👧",
    "日本語のテキスト、中文。",
    "e\u0301 cafe\u0301 naïve Ωmega",
    "   \n\n\t  \r\n  ",
    "don't you'll I'M",
    "aaaaaaa        bbbb",
    "\x00\x01\x7f\u200b\ufeff",
]


def _quoted(text: str, limit: int = 30) -> str:
    return repr(text) if len(text) <= limit else repr(text[:limit]) + "..."


@cache
def _reference_tokenizer(text: str, vocab_size: int) -> ref.BPETokenizer:
    return ref.BPETokenizer.train(text, vocab_size)


def _encode_variant(merges, text, *, split=True, order="earliest", merge=ref.merge):
    """The reference encoder with one decision changed, to recognise learners' mistakes."""
    chunks = re.findall(ref.GPT2_SPLIT_PATTERN, text) if split else [text]
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


def _encode(check, tok, text):
    got = check.call(tok.encode, text, what="encode")
    if not isinstance(got, list) or not all(isinstance(i, int) for i in got):
        check.fail(
            f"encode should return a list of ints, got {type(got).__name__} {_quoted(str(got))}."
        )
    return got


def _decode(check, tok, ids):
    try:
        got = check.call(tok.decode, list(ids), what="decode")
    except CheckFailed as failure:
        if "UnicodeDecodeError" in str(failure):
            _fail_with_hint(
                check,
                failure,
                "\n  Some token lists are not valid UTF-8 (decode([i]) of a token holding "
                "half a character): decode with errors='replace'.",
            )
        raise
    if not isinstance(got, str):
        check.fail(f"decode should return a str, got {type(got).__name__}.")
    return got


def _first_difference(got: list, expected: list) -> int:
    return next(
        (k for k, (a, b) in enumerate(zip(got, expected, strict=False)) if a != b),
        min(len(got), len(expected)),
    )


def _explain_merge(check, text, got_items, ref_tok):
    """Fail at the first merge that differs from the reference's, and say why if we can tell."""
    expected = list(ref_tok.merges.items())
    k = _first_difference(got_items, expected)
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
    words = Counter(re.findall(ref.GPT2_SPLIT_PATTERN, text))
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


def _train(check, BPETokenizer, text, vocab_size):
    try:
        trained = check.call(BPETokenizer.train, text, vocab_size, what="BPETokenizer.train")
    except CheckFailed as failure:
        if "KeyError" in str(failure) and not text.isascii():
            _fail_with_hint(
                check,
                failure,
                "\n  Ids 0..255 are bytes: train on text.encode('utf-8'), not on characters "
                "(ord(c) is above 255 outside ASCII).",
            )
        if "ValueError" in str(failure) and "empty" in str(failure):
            _fail_with_hint(
                check,
                failure,
                "\n  Stop early when no chunk has a pair left (the summed counts are empty).",
            )
        raise
    if not isinstance(trained, BPETokenizer):
        check.fail(f"train returned {type(trained).__name__}: end with `return cls(merges)`.")
    return trained


def _check_round_trip(check, tok, ref_tok, text):
    """encode(text) equals the reference's ids, and decode gives `text` back."""
    expected, got = ref_tok.encode(text), _encode(check, tok, text)
    if got != expected:
        merges = ref_tok.merges
        for wrong, description in [
            (
                _encode_variant(merges, text, split=False),
                "encoded the whole text as one chunk: "
                "split it with GPT2_SPLIT_PATTERN first, as training did",
            ),
            (
                _encode_variant(merges, text, merge=_merge_overlapping),
                "merged overlapping pairs: [a, a, a] with a merge (a, a) keeps the last a",
            ),
            (
                _encode_variant(merges, text, order="latest"),
                "applied the most recently learned "
                "merge first: apply the earliest learned (smallest new id) first, as in training",
            ),
            (
                _encode_variant(merges, text, order="left"),
                "merged the leftmost mergeable pair "
                "first: apply the earliest learned merge (smallest new id) first, as in training",
            ),
        ]:
            if got == wrong:
                check.fail(f"encode differs from the reference: it looks like you {description}.")
    check.equal(got, expected, what="encoding")
    decoded = _decode(check, tok, expected)
    if decoded != text and decoded == "".join(ref_tok.decode([i]) for i in expected):
        check.fail(
            "decode broke multi-byte characters: you decoded each token on its own and joined "
            "the strings. Join the tokens' bytes, then decode once."
        )
    check.equal(decoded, text, what="decoded text (decode(encode(text)) must give text back)")


@exercise(ref.BPETokenizer)
def check_bpe_tokenizer(check, BPETokenizer):
    train_text, vocab_size = load_corpus()[:3000], 300
    ref_tok = _reference_tokenizer(train_text, vocab_size)
    merges = ref_tok.merges
    with check.case("a tokenizer built from the reference's merges"):
        tok = check.build(BPETokenizer, dict(merges))
        check.equal(
            getattr(tok, "vocab", None),
            ref_tok.vocab,
            what="vocab",
            hint=" Keep the constructor as given.",
        )
    with check.case("decode([i]) of every single token"):
        for i in range(len(ref_tok.vocab)):
            check.equal(
                _decode(check, tok, [i]),
                ref_tok.decode([i]),
                what=f"text of decode([{i}])",
                hint=" Decode bytes with errors='replace' (not 'ignore').",
            )
    for text in [*TRICKY_STRINGS, load_corpus()[5000:5600]]:
        with check.case(f"text {_quoted(text)}" + (" (empty)" if not text else "")):
            _check_round_trip(check, tok, ref_tok, text)
    with check.case(
        "BPETokenizer.train('aaaa', 300): overlapping pairs, then nothing left to merge"
    ):
        trained = _train(check, BPETokenizer, "aaaa", 300)
        check.equal(
            list(trained.merges.items()),
            [((97, 97), 256), ((256, 256), 257)],
            what="list of merges",
            hint=" [97]*4 -> [256, 256] -> [257], then stop.",
        )
    for text, size in [("日本語 日本語 🙂🙂 café café " * 3, 270), (train_text, vocab_size)]:
        with check.case(f"BPETokenizer.train({_quoted(text)}, {size})"):
            trained = _train(check, BPETokenizer, text, size)
            _explain_merge(
                check, text, list(trained.merges.items()), _reference_tokenizer(text, size)
            )
            check.equal(len(trained.vocab), size, what="vocabulary size")
