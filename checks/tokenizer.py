"""Checkers for chapter 1's tokenizer (solutions/tokenizer.py): byte-level BPE."""

import tempfile
import time
from collections import Counter
from pathlib import Path

import regex
import torch

from checks import _tokenizer_diagnosis as diagnosis
from checks._core import CheckFailed, exercise, seeded
from course.corpus import load_corpus
from solutions import tokenizer as ref

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
                    diagnosis.merge_overlapping(ids, pair, new_id),
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


_REGEX_HINT = (
    "\n  GPT2_SPLIT_PATTERN needs the `regex` package (\\p{L}, \\p{N}): "
    "regex.findall(GPT2_SPLIT_PATTERN, text), not re.findall."
)


def _encode(check, tok, text):
    try:
        got = check.call(tok.encode, text, what="encode")
    except CheckFailed as failure:
        if "bad escape \\p" in str(failure):
            _fail_with_hint(check, failure, _REGEX_HINT)
        raise
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
        if "bad escape \\p" in str(failure):
            _fail_with_hint(check, failure, _REGEX_HINT)
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
                diagnosis.encode_variant(merges, text, split=False),
                "encoded the whole text as one chunk: "
                "split it with GPT2_SPLIT_PATTERN first, as training did",
            ),
            (
                diagnosis.encode_variant(merges, text, merge=diagnosis.merge_overlapping),
                "merged overlapping pairs: [a, a, a] with a merge (a, a) keeps the last a",
            ),
            (
                diagnosis.encode_variant(merges, text, order="latest"),
                "applied the most recently learned "
                "merge first: apply the earliest learned (smallest new id) first, as in training",
            ),
            (
                diagnosis.encode_variant(merges, text, order="left"),
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
    ref_tok = diagnosis.reference_tokenizer(train_text, vocab_size)
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
            diagnosis.explain_merge(
                check, text, list(trained.merges.items()), diagnosis.reference_tokenizer(text, size)
            )
            check.equal(len(trained.vocab), size, what="vocabulary size")


# --- Incremental training ----------------------------------------------------------------


def _merges_of(check, train, text, vocab_size):
    """The learner's train_incremental(text, vocab_size), as a list of (pair, new_id)."""
    try:
        got = check.call(train, text, vocab_size, what="train_incremental")
    except CheckFailed as failure:
        if "bad escape \\p" in str(failure):
            _fail_with_hint(check, failure, _REGEX_HINT)
        raise
    if isinstance(got, ref.BPETokenizer):
        check.fail("train_incremental returned a tokenizer: return its merges dict.")
    if not isinstance(got, dict):
        check.fail(f"train_incremental returned a {type(got).__name__}, expected a dict.")
    return list(got.items())


@exercise(ref.train_incremental)
def check_train_incremental(check, train_incremental):
    corpus = load_corpus()
    cases = [
        ("aaaa", 300),
        ("日本語 日本語 🙂🙂 café café " * 3, 270),
        ("low lower lowest slow slower newest widest " * 5, 300),
        (corpus[:3000], 300),
    ]
    for text, size in cases:
        with check.case(f"train_incremental({_quoted(text)}, {size}) against BPETokenizer.train"):
            got = _merges_of(check, train_incremental, text, size)
            try:
                diagnosis.explain_merge(check, text, got, diagnosis.reference_tokenizer(text, size))
            except CheckFailed as failure:
                _fail_with_hint(
                    check,
                    failure,
                    "\n  After merging a pair, each chunk that held it loses its old pairs and "
                    "gains its new ones, each counted as often as the chunk occurs; index those "
                    "chunks under their new pairs too.",
                )
    # Learning many merges on more text: the index and the counts must stay exact throughout.
    text, size = corpus[:40_000], 768
    with check.case(f"the first 40,000 characters of the corpus, {size} tokens"):
        start = time.perf_counter()
        got = _merges_of(check, train_incremental, text, size)
        seconds = time.perf_counter() - start
        expected = ref.train_incremental(text, size)  # equals BPETokenizer.train: see the tests
        reference_s = time.perf_counter() - start - seconds
        k = diagnosis.first_difference(got, list(expected.items()))
        if k < len(expected) or len(got) != len(expected):
            check.fail(
                f"merge #{k} differs from BPETokenizer.train's: "
                f"{got[k] if k < len(got) else 'none'} instead of {list(expected.items())[k]}. "
                "The counts drift after many merges: subtract every old pair of each changed "
                "chunk and add every new one."
            )
        if seconds > max(1.0, 15 * reference_s):
            check.fail(
                f"the merges are right but took {seconds:.1f} s ({reference_s:.2f} s for the "
                "reference): update only the chunks that hold the merged pair, and find the "
                "most frequent pair without scanning every count (a heap)."
            )


# --- GPT-2's tokenizer -------------------------------------------------------------------


@exercise(ref.bytes_to_unicode)
def check_bytes_to_unicode(check, bytes_to_unicode):
    expected = ref.bytes_to_unicode()
    with check.case("bytes_to_unicode()"):
        got = check.call(bytes_to_unicode, what="bytes_to_unicode")
        if got is None:
            check.fail("your bytes_to_unicode returned None: did you forget `return`?")
        if not isinstance(got, dict):
            check.fail(f"bytes_to_unicode returned a {type(got).__name__}, expected a dict.")
        if sorted(got) != list(range(256)):
            check.fail("the keys must be the 256 byte values 0..255, as ints.")
        if not all(isinstance(c, str) and len(c) == 1 for c in got.values()):
            check.fail("each byte must map to a str of exactly one character.")
        if len(set(got.values())) < 256:
            check.fail("two bytes map to the same character: the table must be invertible.")
        wrong = [b for b in range(256) if got[b] != expected[b]]
        if wrong:
            b = wrong[0]
            if got[32] == " ":
                why = "a space stands for itself, but merges.txt separates tokens with spaces"
            elif got[173] == chr(173):
                why = "byte 173 (soft hyphen, invisible) is not among the printable bytes"
            elif got[127] == chr(256 + 127):
                why = "the other bytes take chr(256), chr(257), ... in order: count them"
            else:
                why = "printable bytes stand for themselves, the other 68 take chr(256 + n)"
            check.fail(
                f"byte {b} maps to {got[b]!r}, expected {expected[b]!r} "
                f"({len(wrong)} bytes differ): {why}."
            )
    with check.case("the 256 one-byte tokens of GPT-2's vocab.json"):
        vocab = ref.load_gpt2_tokenizer().vocab
        check.equal(
            sorted(got.values()), sorted(t for t, i in vocab.items() if i < 256), what="characters"
        )


def _ranks_from(check, load_merge_ranks, path):
    try:
        got = check.call(load_merge_ranks, path, what="load_merge_ranks")
    except CheckFailed as failure:
        if "'str' object has no attribute" in str(failure):
            _fail_with_hint(
                check, failure, "\n  `path` may be a str: open it with Path(path) or open(path)."
            )
        raise
    if got is None:
        check.fail("your load_merge_ranks returned None: did you forget `return`?")
    if not isinstance(got, dict):
        check.fail(f"load_merge_ranks returned a {type(got).__name__}, expected a dict.")
    return got


@exercise(ref.load_merge_ranks)
def check_load_merge_ranks(check, load_merge_ranks):
    small = "#version: 0.2\nĠ t\nĠ a\nh e\nĠt he\nÃ ¤\n"
    with tempfile.TemporaryDirectory() as tmp:
        for name, text, as_str in [
            ("a five-merge file", small, True),
            ("a file without a final newline", small.rstrip("\n"), False),
        ]:
            path = Path(tmp) / "merges.txt"
            path.write_text(text, encoding="utf-8")
            with check.case(name):
                got = _ranks_from(check, load_merge_ranks, str(path) if as_str else path)
                expected = ref.load_merge_ranks(path)
                if ("#version:", "0.2") in got:
                    check.fail("the header line '#version: 0.2' became a merge: skip line 1.")
                if any(not isinstance(k, tuple) for k in got):
                    check.fail(
                        f"keys must be pairs of token strings, ('Ġ', 't'); got {next(iter(got))!r}."
                    )
                if got.get(("Ġ", "t")) == 1:
                    check.fail("the first merge has rank 1: ranks start at 0, as in GPT-2.")
                if any(k not in expected for k in got):
                    extra = next(k for k in got if k not in expected)
                    why = "skip empty lines" if extra in {(), ("",)} else "split each line on ' '"
                    check.fail(f"{extra!r} is not a merge of the file: {why}.")
                check.equal(got, expected, what="ranks")
    with check.case("GPT-2's merges.txt"):
        path = Path(str(ref.GPT2_DATA / "merges.txt"))
        got, expected = _ranks_from(check, load_merge_ranks, path), ref.load_gpt2_tokenizer().ranks
        check.equal(len(got), len(expected), what="number of merges")
        check.equal(got, expected, what="ranks")


def _check_bpe_word(check, bpe, word, ranks):
    got = check.call(bpe, word, ranks, what="bpe")
    if got is None:
        check.fail("your bpe returned None: did you forget `return`?")
    if not isinstance(got, list) or not all(isinstance(t, str) for t in got):
        check.fail(
            f"bpe should return a list of str, got {type(got).__name__} {_quoted(str(got))}."
        )
    expected = ref.bpe(word, ranks)
    if got != expected:
        for description, variant in [
            ("merged the leftmost pair that has a rank: the lowest rank wins", dict(order="left")),
            ("merged the highest-rank pair first: the lowest rank wins", dict(order="highest")),
            ("never merged the pair of rank 0: `ranks.get(p) or inf` treats 0 as missing", dict(zero_missing=True)),
            ("merged overlapping occurrences: 'aaa' with ('a', 'a') gives ['aa', 'a']", dict(overlap=True)),
        ]:  # fmt: skip
            if got == diagnosis.bpe_variant(word, ranks, **variant):
                check.fail(f"bpe({word!r}) gave {got}, expected {expected}: you {description}.")
        if "".join(got) != word:
            check.fail(f"bpe({word!r}) gave {got}: its tokens must join back into the word.")
    check.equal(got, expected, what=f"tokens of {word!r}")


@exercise(ref.bpe)
def check_bpe(check, bpe):
    # Each word tells one mistake apart: "st" needs the rank-0 merge, "abc" the lower of two
    # overlapping pairs, "xyz" a lower rank to the right of a higher one.
    toy = {("s", "t"): 0, ("a", "b"): 1, ("y", "z"): 2, ("b", "c"): 3, ("x", "y"): 4}
    toy |= {("a", "a"): 5, ("aa", "a"): 6}
    for word in ["x", "st", "abc", "xyz", "aaa", "aaaa", "aaaaa", "cba"]:
        with check.case(f"bpe({word!r}) with ranks {toy}"):
            _check_bpe_word(check, bpe, word, toy)
    tok, hf = ref.load_gpt2_tokenizer(), diagnosis.hf_gpt2()
    vocab, ranks = tok.vocab, tok.ranks
    table = ref.bytes_to_unicode()
    with check.case("bpe of every chunk of the test texts, with GPT-2's ranks"):
        for text in diagnosis.GPT2_TEXTS:
            for chunk in regex.findall(ref.GPT2_SPLIT_PATTERN, text):
                word = "".join(table[b] for b in chunk.encode("utf-8"))
                _check_bpe_word(check, bpe, word, ranks)
    # The whole tokenizer with your bpe, against HuggingFace's GPT-2 tokenizer.
    for text in diagnosis.GPT2_TEXTS:
        with check.case(f"GPT2Tokenizer.encode({_quoted(text)}) against HuggingFace's"):
            ids = []
            for k, piece in enumerate(text.split(ref.END_OF_TEXT)):
                ids += [vocab[ref.END_OF_TEXT]] * (k > 0)
                for chunk in regex.findall(ref.GPT2_SPLIT_PATTERN, piece):
                    word = "".join(table[b] for b in chunk.encode("utf-8"))
                    ids += [vocab[t] for t in check.call(bpe, word, ranks, what="bpe")]
            check.equal(ids, hf.encode(text), what="ids")
