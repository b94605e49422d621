"""The checkers of the BPE tokenizer: it trains, encodes and decodes as the reference does on
tricky text; and of its incremental trainer, which must learn the same merges, faster."""

import time

from checks import _tokenizer_diagnosis as diagnosis
from checks._compare import integer_value
from checks._core import CheckFailed, exercise, kind_of
from checks.tokenizer._common import _REGEX_HINT, _fail_with_hint, _quoted
from solutions import tokenizer as ref
from solutions.corpus import load_corpus

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


def _encode(check, tok, text):
    try:
        got = check.call(tok.encode, text, what="encode")
    except CheckFailed as failure:
        if "bad escape \\p" in str(failure):
            _fail_with_hint(check, failure, _REGEX_HINT)
        raise
    ids = [integer_value(i) for i in got] if isinstance(got, list) else None
    if ids is None or None in ids:
        check.fail(f"encode should return a list of ints, got {kind_of(got)} {_quoted(str(got))}.")
    return ids


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
        check.fail(f"decode should return a str, got {kind_of(got)}.")
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
            expected = ref_tok.decode([i])
            check.equal(
                _decode(check, tok, [i]),
                expected,
                what=f"text of decode([{i}])",
                # U+FFFD stands for bytes that are not UTF-8; other text comes back as it is.
                hint=" Decode bytes with errors='replace' (not 'ignore')."
                if "\ufffd" in expected
                else " Join the tokens' bytes and decode them as UTF-8, nothing stripped.",
            )
    for text in [*TRICKY_STRINGS, load_corpus()[5000:5600]]:
        with check.case(f"text {_quoted(text)}" + (" (empty)" if not text else "")):
            _check_round_trip(check, tok, ref_tok, text)
    # "bc" is learned first, "ab" occurs twice: the order of learning must win over counts.
    merges = {(98, 99): 256, (97, 98): 257}
    with check.case(f"text 'ababc', merges {merges}"):
        small = check.build(BPETokenizer, dict(merges))
        got = _encode(check, small, "ababc")
        if got == [257, 257, 99]:
            check.fail(
                "encode('ababc') gave [257, 257, 99], expected [257, 97, 256]: you merged the "
                "pair that occurs most often in the chunk. Counts are for training; encode "
                "applies the earliest learned merge (smallest new id) first."
            )
        check.equal(got, ref.BPETokenizer(merges).encode("ababc"), what="encoding")
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
        check.fail(f"train_incremental returned {kind_of(got)}, expected a dict.")
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
