"""The checks of BPETokenizer's special tokens and of encode_iterable, part of check_bpe_tokenizer:
special tokens are matched longest first and never merge with their neighbours, and a stream
cut anywhere gives the ids of the joined text, lazily."""

import random

import regex

from checks._compare import integer_value
from checks._core import CheckFailed, kind_of
from checks.tokenizer._common import _fail_with_hint, _quoted
from solutions import tokenizer as ref

EOT, EOT2 = "<|endoftext|>", "<|endoftext|><|endoftext|>"
# Given shortest first: matching in the order given would cut EOT2 into two EOTs.
SPECIALS = [EOT, EOT2]
SPECIAL_TEXTS = [
    "Hello<|endoftext|>world",
    "<|endoftext|><|endoftext|><|endoftext|>",
    " <|endoftext|> x\n<|endoftext|>\n\n",
    "don't<|endoftext|>'ll <|endoftext",
    "a|b <|e|> endoftext",
]
STREAM_TEXTS = [
    "Hello world<|endoftext|>The return statement leaves the function.",
    "I'll say   it's done;\n\n  they've <|endoftext|><|endoftext|>\n\tx = 1_000 café 🙂",
]


def _ids(check, got, what):
    ids = [integer_value(i) for i in got] if isinstance(got, list) else None
    if ids is None or None in ids:
        check.fail(f"{what} should give a list of ints, got {kind_of(got)} {_quoted(str(got))}.")
    return ids


def _split_in_order(tok, text, pattern):
    """The reference's encode with another pattern for the special tokens."""
    ids, start = [], 0
    for match in regex.finditer(pattern, text):
        ids += tok.encode_ordinary(text[start : match.start()])
        ids.append(tok.special_ids.get(match.group()))
        start = match.end()
    return ids + tok.encode_ordinary(text[start:])


def _encode(check, tok, text):
    try:
        return check.call(tok.encode, text, what="encode")
    except CheckFailed as failure:
        if "KeyError" in str(failure):
            _fail_with_hint(
                check,
                failure,
                "\n  '|' in a pattern means 'or': escape each special token (regex.escape) or "
                "use self.special_pattern, which matches only whole special tokens.",
            )
        raise


def check_special_tokens(check, BPETokenizer, merges):
    ref_tok = ref.BPETokenizer(merges, SPECIALS)
    with check.case(f"BPETokenizer(merges, {SPECIALS}): the special tokens' ids"):
        tok = check.build(BPETokenizer, dict(merges), list(SPECIALS))
        check.equal(
            getattr(tok, "special_ids", None),
            ref_tok.special_ids,
            what="special_ids",
            hint=" Keep the constructor as given.",
        )
    for text in SPECIAL_TEXTS:
        with check.case(f"encode({_quoted(text, 45)}) with special tokens {SPECIALS}"):
            got = _ids(check, _encode(check, tok, text), "encode")
            expected = ref_tok.encode(text)
            if got == expected:
                continue
            in_order = "|".join(map(regex.escape, SPECIALS))
            if got == ref_tok.encode_ordinary(text):
                check.fail(
                    "encode gave the ids of the special tokens' characters: GPT2_SPLIT_PATTERN "
                    "cuts '<|endoftext|>' into '<|', 'endoftext', '|>'. Split the text at the "
                    "special tokens first (self.special_pattern), give each its id from "
                    "self.special_ids, and encode_ordinary only the text between them."
                )
            if got == _split_in_order(ref_tok, text, in_order):
                check.fail(
                    f"encode matched '{EOT}' where '{EOT2}' begins: try the longest special "
                    "token first (self.special_pattern does), or the shorter one always wins."
                )
            check.equal(got, expected, what="encoding")
        with check.case(f"decode(encode({_quoted(text, 45)}))"):
            decoded = check.call(tok.decode, expected, what="decode")
            check.equal(decoded, text, what="decoded text")
    text = "<|endoftext|> stays text"
    with check.case(f"encode({_quoted(text)}) with no special tokens"):
        plain = check.build(BPETokenizer, dict(merges))
        got = _ids(check, check.call(plain.encode, text, what="encode"), "encode")
        check.equal(
            got,
            ref_tok.encode_ordinary(text),
            what="encoding",
            hint=" With no special tokens, encode is encode_ordinary.",
        )
    return tok, ref_tok


def _cuts(text, rng):
    """`text` cut in two at every position, then into random pieces, empty ones included."""
    yield from ([text[:i], text[i:]] for i in range(len(text) + 1))
    for _ in range(10):
        cuts = sorted(rng.randint(0, len(text)) for _ in range(rng.randint(2, 8)))
        yield [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]


def _stream(check, tok, pieces):
    def run():
        return list(tok.encode_iterable(iter(pieces)))

    return _ids(check, check.call(run, what="encode_iterable"), "encode_iterable")


def check_encode_iterable(check, tok, ref_tok):
    rng = random.Random(0)
    for text in STREAM_TEXTS:
        with check.case(f"encode_iterable of {_quoted(text, 40)} cut anywhere"):
            expected = ref_tok.encode(text)
            for pieces in _cuts(text, rng):
                got = _stream(check, tok, pieces)
                if got == expected:
                    continue
                if got == [i for piece in pieces for i in ref_tok.encode(piece)]:
                    check.fail(
                        f"the pieces {pieces} gave the ids of each piece encoded on its own: a "
                        "chunk or a special token may run across two strings. Keep back the "
                        "text after self._settled(text) and put it in front of the next string."
                    )
                if got == expected[: len(got)]:
                    check.fail(
                        f"the pieces {pieces} lost the last {len(expected) - len(got)} ids: "
                        "after the last string, encode the text still kept back."
                    )
                check.equal(got, expected, what=f"ids of the pieces {pieces}")
    with check.case("encode_iterable of a long stream of lines: the first ids come at once"):
        read, lines = [], [f"line {k}<|endoftext|>\n" for k in range(1000)]

        def stream():
            for line in lines:
                read.append(line)
                yield line

        def first_ids():
            ids = iter(tok.encode_iterable(stream()))
            return [next(ids) for _ in range(5)]

        got = _ids(check, check.call(first_ids, what="encode_iterable"), "encode_iterable")
        check.equal(got, ref_tok.encode("".join(lines))[:5], what="first five ids")
        if len(read) > 10:
            check.fail(
                f"encode_iterable read {len(read)} of {len(lines)} lines before its first five "
                "ids: yield ids as the strings come in (a generator, `yield from`), without "
                "joining the whole input first."
            )
