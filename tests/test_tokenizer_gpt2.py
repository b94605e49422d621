"""GPT-2's tokenizer as chapter 1 rebuilds it: its split pattern cuts text where HuggingFace's
does, it gives HuggingFace's ids, and the checkers of bytes_to_unicode, load_merge_ranks and bpe
accept correct code, however it is written, and name mistakes."""

import re

import pytest
import regex

from checks import _tokenizer_diagnosis as diagnosis
from checks import tokenizer as checks
from solutions import tokenizer as ref
from solutions.corpus import load_corpus
from solutions.tokenizer import GPT2_SPLIT_PATTERN
from tests.support import assert_accepts, assert_rejects

GPT2_FUNCTIONS = ["bytes_to_unicode", "load_merge_ranks", "bpe"]


# --- The split pattern is GPT-2's ---------------------------------------------------------

# The same pattern spelled for Python's `re`: a letter is [^\W\d_], a number \d.
RE_SPELLING = r"""'(?:[sdmt]|ll|ve|re)| ?[^\W\d_]+| ?\d+| ?(?:[^\s\w]|_)+|\s+(?!\S)|\s+"""


@pytest.mark.parametrize("text", [*diagnosis.GPT2_TEXTS, "chunk" + load_corpus()[:50_000]])
def test_split_pattern_cuts_text_where_huggingfaces_gpt2_pretokenizer_does(text):
    pre_tokenizer = diagnosis.hf_gpt2().backend_tokenizer.pre_tokenizer
    pieces = text.split(ref.END_OF_TEXT)
    for piece in pieces:
        theirs = [piece[a:b] for _, (a, b) in pre_tokenizer.pre_tokenize_str(piece)]
        assert regex.findall(GPT2_SPLIT_PATTERN, piece) == theirs


def test_re_spelling_differs_from_gpt2_on_numbers_that_are_not_digits():
    for text in ["x²", "3½", "aⅫ"]:
        assert regex.findall(GPT2_SPLIT_PATTERN, text) != re.findall(RE_SPELLING, text)
    assert re.findall(RE_SPELLING, "x² ½") == ["x²", " ½"]
    assert regex.findall(GPT2_SPLIT_PATTERN, "x² ½") == ["x", "²", " ½"]


# --- GPT-2's tokenizer ---------------------------------------------------------------------


def test_gpt2_tokenizer_gives_huggingfaces_ids_on_every_kind_of_text():
    tok, hf = ref.load_gpt2_tokenizer(), diagnosis.hf_gpt2()
    assert tok.encode("Hello world") == [15496, 995]
    assert tok.encode("a<|endoftext|>b") == [64, 50256, 65]
    for text in diagnosis.GPT2_TEXTS:
        assert tok.encode(text) == hf.encode(text), text
        assert tok.decode(tok.encode(text)) == text


def test_gpt2_tokenizer_gives_huggingfaces_ids_on_the_whole_corpus():
    tok, hf, corpus = ref.load_gpt2_tokenizer(), diagnosis.hf_gpt2(), load_corpus()
    ids = tok.encode(corpus)
    assert ids == hf.encode(corpus)
    assert tok.decode(ids) == corpus


def test_gpt2_vocabulary_numbers_merge_k_as_256_plus_k():
    tok = ref.load_gpt2_tokenizer()
    assert len(tok.vocab) == 50_257 and len(tok.ranks) == 50_000
    assert all(tok.vocab[a + b] == 256 + k for (a, b), k in tok.ranks.items())
    assert tok.vocab[ref.END_OF_TEXT] == 50_256


@pytest.mark.parametrize("name", GPT2_FUNCTIONS + ["train_incremental"])
def test_gpt2_checks_accept_the_reference(name, capsys):
    assert_accepts(getattr(checks, f"check_{name}"), getattr(ref, name), capsys)


@pytest.mark.parametrize("name", GPT2_FUNCTIONS + ["train_incremental"])
def test_gpt2_checks_reject_the_stub_as_not_implemented(name):
    def stub(*args):
        raise NotImplementedError()

    assert_rejects(getattr(checks, f"check_{name}"), stub, "not implemented")


@pytest.mark.parametrize("name", GPT2_FUNCTIONS + ["train_incremental"])
def test_gpt2_checks_reject_a_missing_return(name):
    assert_rejects(getattr(checks, f"check_{name}"), lambda *args: None, "None")


def bytes_to_unicode_as_gpt2_writes_it():
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    bs += range(ord("®"), ord("ÿ") + 1)
    cs = bs[:]
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + len(cs) - 188)
    return dict(zip(bs, map(chr, cs), strict=True))


def bytes_to_unicode_by_isprintable():
    """Python's isprintable() agrees with GPT-2 on every byte but the space."""
    table, extra = {}, iter(range(256, 512))
    for b in range(256):
        table[b] = chr(b) if chr(b).isprintable() and b != 32 else chr(next(extra))
    return table


@pytest.mark.parametrize(
    "learner", [bytes_to_unicode_as_gpt2_writes_it, bytes_to_unicode_by_isprintable]
)
def test_check_bytes_to_unicode_accepts_correct_variants(learner, capsys):
    assert_accepts(checks.check_bytes_to_unicode, learner, capsys)


def table_with(printable, number=lambda b, n: 256 + n):
    def bytes_to_unicode():
        table, n = {}, 0
        for b in range(256):
            if b in printable:
                table[b] = chr(b)
            else:
                table[b], n = chr(number(b, n)), n + 1
        return table

    return bytes_to_unicode


GPT2_PRINTABLE = [b for b in range(256) if chr(b).isprintable() and b != 32]


@pytest.mark.parametrize(
    "learner, fragment",
    [
        (table_with([*GPT2_PRINTABLE, 32]), "a space stands for itself"),
        (table_with([*GPT2_PRINTABLE, 173]), "byte 173"),
        (table_with(GPT2_PRINTABLE, lambda b, n: 256 + b), "count them"),
        (table_with(GPT2_PRINTABLE, lambda b, n: 255 + n), "same character"),
        (lambda: {b: chr(b) for b in range(256)}, "byte 0 maps to"),
        (lambda: {b: chr(b + 256) for b in range(256)}, "byte 33 maps to"),
        (lambda: dict(enumerate(bytes_to_unicode_as_gpt2_writes_it().values())), "byte 0"),
        (lambda: {str(b): c for b, c in ref.bytes_to_unicode().items()}, "as ints"),
        (lambda: list(ref.bytes_to_unicode().values()), "expected a dict"),
    ],
)
def test_check_bytes_to_unicode_names_the_mistake(learner, fragment):
    assert_rejects(checks.check_bytes_to_unicode, learner, fragment)


def load_merge_ranks_by_open(path):
    with open(path, encoding="utf-8") as f:
        next(f)
        return {tuple(line.split()): rank for rank, line in enumerate(f) if line.strip()}


def load_merge_ranks_from_lines(path):
    lines = [line for line in open(path, encoding="utf-8").read().split("\n") if line]
    return {(a, b): i - 1 for i, (a, b) in enumerate(map(str.split, lines)) if i}


@pytest.mark.parametrize("learner", [load_merge_ranks_by_open, load_merge_ranks_from_lines])
def test_check_load_merge_ranks_accepts_correct_variants(learner, capsys):
    assert_accepts(checks.check_load_merge_ranks, learner, capsys)


def read_lines(path):
    return open(path, encoding="utf-8").read().split("\n")


@pytest.mark.parametrize(
    "learner, fragment",
    [
        (
            lambda path: {tuple(ln.split()): i for i, ln in enumerate(read_lines(path)) if ln},
            "header line",
        ),
        (
            lambda path: {tuple(ln.split()): i for i, ln in enumerate(read_lines(path)[1:], 1)},
            "ranks start at 0",
        ),
        (
            lambda path: {tuple(ln.split()): i for i, ln in enumerate(read_lines(path)[1:])},
            "skip empty lines",
        ),
        (lambda path: {ln: i for i, ln in enumerate(read_lines(path)[1:]) if ln}, "pairs of token"),
        (
            lambda path: {tuple(ln.split()): i for i, ln in enumerate(path.read_text())},
            "Path(path)",
        ),
        (lambda path: list(ref.load_merge_ranks(path)), "expected a dict"),
    ],
)
def test_check_load_merge_ranks_names_the_mistake(learner, fragment):
    assert_rejects(checks.check_load_merge_ranks, learner, fragment)


def bpe_as_gpt2_writes_it(token, ranks):
    """OpenAI's loop: find each occurrence of the pair's first string with index()."""
    word = tuple(token)
    while len(word) > 1:
        first, second = min(
            zip(word, word[1:], strict=False), key=lambda p: ranks.get(p, float("inf"))
        )
        if (first, second) not in ranks:
            break
        new_word, i = [], 0
        while i < len(word):
            try:
                j = word.index(first, i)
            except ValueError:
                new_word += word[i:]
                break
            new_word += word[i:j]
            if j < len(word) - 1 and word[j + 1] == second:
                new_word.append(first + second)
                i = j + 2
            else:
                new_word.append(first)
                i = j + 1
        word = tuple(new_word)
    return list(word)


@pytest.mark.parametrize("learner", [bpe_as_gpt2_writes_it])
def test_check_bpe_accepts_correct_variants(learner, capsys):
    assert_accepts(checks.check_bpe, learner, capsys)


@pytest.mark.parametrize(
    "learner, fragment",
    [
        (lambda w, r: diagnosis.bpe_variant(w, r, order="highest"), "highest-rank pair first"),
        (lambda w, r: diagnosis.bpe_variant(w, r, order="left"), "leftmost pair"),
        (lambda w, r: diagnosis.bpe_variant(w, r, zero_missing=True), "rank 0"),
        (lambda w, r: diagnosis.bpe_variant(w, r, overlap=True), "overlapping"),
        (lambda w, r: diagnosis.bpe_variant(w, r, order="frequent"), "occurs most often"),
        (lambda w, r: "".join(ref.bpe(w, r)), "list of str"),
        (lambda w, r: tuple(ref.bpe(w, r)), "list of str"),
        (lambda w, r: list(w), "expected"),
        (lambda w, r: ref.bpe(w, r)[:-1], "join back into the word"),
    ],
)
def test_check_bpe_names_the_mistake(learner, fragment):
    assert_rejects(checks.check_bpe, learner, fragment)


def bpe_dropping_used_ranks(word, ranks):
    """Right for one word, but it deletes each merge it used: the next word lacks them."""
    tokens = ref.bpe(word, ranks)
    for token in tokens:
        for pair in list(ranks):
            if "".join(pair) == token:
                del ranks[pair]
    return tokens


def test_check_bpe_rejects_changing_the_ranks():
    assert_rejects(checks.check_bpe, bpe_dropping_used_ranks, "your bpe changed the ranks")
