"""BPETokenizer's special tokens (longest match first, never merged with their neighbours) and
its streaming `encode_iterable`, against HuggingFace's fast GPT-2 tokenizer on GPT-2's own
vocabulary: GPT-2's merges loaded into a BPETokenizer give GPT-2's ids, up to the order of
the 256 single bytes."""

import random
from functools import cache

import pytest

from solutions.tokenizer import GPT2_DATA, BPETokenizer, bytes_to_unicode, load_merge_ranks

EOT, EOT2 = "<|endoftext|>", "<|endoftext|><|endoftext|>"  # the second starts with the first
TEXTS = [
    "",
    "Hello world<|endoftext|>The return statement leaves the function.",
    "one<|endoftext|><|endoftext|>two <|endoftext|> three<|endoftext|><|endoftext|><|endoftext|>",
    "<|endoftext|>x<|endoftext|",
    "def f(x):\n    return x ** 2  # square\n\n\tif x: pass   \n",
    "I'll say it's done; they've, I'M don't   runs of   spaces \n\n\n  \t\r\n",
    "日本語のテキスト Ελληνικά 🙂👍🏽 👨\u200d👩\u200d👧 café x² ½<|endoftext|>",
]


@cache
def gpt2_as_bpe(specials: tuple[str, ...]) -> tuple[BPETokenizer, dict[int, int]]:
    """GPT-2's merges as a BPETokenizer (byte b is id b), and the map from its ids to GPT-2's."""
    char_byte = {c: b for b, c in bytes_to_unicode().items()}
    ours = {chr_: b for chr_, b in char_byte.items()}
    merges = {}
    for (a, b), rank in load_merge_ranks(GPT2_DATA / "merges.txt").items():
        merges[ours[a], ours[b]] = ours[a + b] = 256 + rank
    tok = BPETokenizer(merges, list(specials))
    # Ids of single bytes differ; so do special tokens' where they are not given in GPT-2's
    # order: ours count up in the order given, GPT-2's vocab.json fixes <|endoftext|> at 50256.
    to_gpt2 = {b: gpt2_vocab()[c] for c, b in char_byte.items()}
    to_gpt2 |= {i: hf(specials).convert_tokens_to_ids(s) for s, i in tok.special_ids.items()}
    return tok, to_gpt2


@cache
def gpt2_vocab() -> dict[str, int]:
    import json

    return json.loads((GPT2_DATA / "vocab.json").read_text(encoding="utf-8"))


@cache
def hf(specials: tuple[str, ...]):
    from transformers import GPT2TokenizerFast

    vocab, merges = GPT2_DATA / "vocab.json", GPT2_DATA / "merges.txt"
    tok = GPT2TokenizerFast(vocab=str(vocab), merges=str(merges))
    tok.add_special_tokens({"additional_special_tokens": [s for s in specials if s != EOT]})
    return tok


def as_gpt2(ids, to_gpt2):
    return [to_gpt2.get(i, i) for i in ids]


@pytest.mark.parametrize("specials", [(EOT,), (EOT, EOT2), (EOT2, EOT)], ids=str)
@pytest.mark.parametrize("text", TEXTS)
def test_encode_gives_huggingfaces_ids_with_special_tokens(specials, text):
    tok, to_gpt2 = gpt2_as_bpe(specials)
    ours = as_gpt2(tok.encode(text), to_gpt2)
    assert ours == hf(specials).encode(text)
    assert tok.decode(tok.encode(text)) == text


def test_special_tokens_take_the_ids_after_the_merges_and_gpt2s_is_50256():
    tok, _ = gpt2_as_bpe((EOT, EOT2))
    assert tok.special_ids == {EOT: 50256, EOT2: 50257}
    assert tok.encode(EOT2 + EOT) == [50257, 50256]  # longest match first, then the rest
    assert tok.encode(" " + EOT + "a")[1:] == [50256, ord("a")]  # no merge across it


def test_without_special_tokens_the_text_is_ordinary():
    tok, _ = gpt2_as_bpe(())
    assert tok.encode(EOT) == tok.encode_ordinary(EOT)
    assert len(tok.encode(EOT)) > 1


def chunkings(text, rng, n=20):
    """`text` cut at every position, and cut into random pieces (empty ones included)."""
    yield from ([text[:i], text[i:]] for i in range(len(text) + 1))
    for _ in range(n):
        cuts = sorted(rng.randint(0, len(text)) for _ in range(rng.randint(1, 8)))
        yield [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]


@pytest.mark.parametrize("specials", [(), (EOT,), (EOT, EOT2)], ids=str)
@pytest.mark.parametrize("text", TEXTS)
def test_encode_iterable_gives_the_ids_of_the_joined_text_however_it_is_cut(specials, text):
    tok, to_gpt2 = gpt2_as_bpe(specials)
    whole = tok.encode(text)
    for pieces in chunkings(text, random.Random(0)):
        assert list(tok.encode_iterable(pieces)) == whole, pieces
    if specials:
        assert as_gpt2(whole, to_gpt2) == hf(specials).encode(text)


def test_encode_iterable_is_lazy_and_keeps_little_text_back():
    """Ids come out while the input is still being read, and what is kept back stays small."""
    tok, _ = gpt2_as_bpe((EOT,))
    read = []

    def lines():
        for k in range(10_000):
            read.append(k)
            yield f"line {k} of a long stream<|endoftext|>\n"

    stream = tok.encode_iterable(lines())
    first = [next(stream) for _ in range(20)]
    assert len(read) < 5 and first == tok.encode("".join(lines_text(3)))[:20]
    assert sum(1 for _ in stream) + 20 == len(tok.encode("".join(lines_text(10_000))))


def lines_text(n):
    return [f"line {k} of a long stream<|endoftext|>\n" for k in range(n)]


# Pieces that make the pre-tokenizer's choices depend on what follows: contractions ("'" + "l"
# + "l" is "'ll"), whitespace before a letter ("\n\n" + "x" is "\n", "\n", "x"), halves of a
# special token, and special tokens that overlap ("<|a|>" is a prefix of "<|a|><").
PARTS = ["a", "l", "s", "re", "v", "'", " ", "  ", "\t", "\n", "1", "!", "é", "🙂", "<|", "|>"]
PARTS += ["endoftext", EOT, "<|endoftext", "<", "|"]
OVERLAPPING = ("<|a|>", "<|a|><", "'l")


@pytest.mark.parametrize("specials", [(), (EOT, EOT2), OVERLAPPING], ids=str)
def test_encode_iterable_equals_encode_on_random_text_cut_anywhere(specials):
    tok, _ = gpt2_as_bpe(specials)
    rng = random.Random(1)
    for _ in range(300):
        text = "".join(rng.choice(PARTS + list(specials)) for _ in range(rng.randint(0, 12)))
        whole = tok.encode(text)
        assert tok.decode(whole) == text
        for pieces in chunkings(text, rng, n=3):
            assert list(tok.encode_iterable(pieces)) == whole, pieces


@pytest.mark.parametrize("left", ["", "x", " ", "\n", "'", "<|", "<|endoftext|", "!!"])
@pytest.mark.parametrize("right", ["", "x", " x", "\n\n", "'ll", "|>", "endoftext|>", "!"])
def test_a_special_token_never_merges_with_its_neighbours(left, right):
    tok, _ = gpt2_as_bpe((EOT, EOT2))
    text = left + EOT + right
    if EOT2 not in text:
        expected = tok.encode_ordinary(left) + [50256] + tok.encode_ordinary(right)
        assert tok.encode(text) == expected
    assert tok.decode(tok.encode(text)) == text
    assert list(tok.encode_iterable(iter(text))) == tok.encode(text)  # one character at a time


def test_overlapping_special_tokens_match_longest_first_whatever_order_they_are_given():
    for specials in [(EOT, EOT2), (EOT2, EOT)]:
        tok, _ = gpt2_as_bpe(specials)
        eot, eot2 = tok.special_ids[EOT], tok.special_ids[EOT2]
        assert tok.encode(EOT * 3) == [eot2, eot]
        assert list(tok.encode_iterable([EOT, EOT, EOT])) == [eot2, eot]
        assert tok.decode([eot2, eot]) == EOT * 3
