"""The checkers of GPT-2's own tokenizer: its byte-to-character table, its merges.txt read
into ranks, and BPE applied by rank to a word."""

import tempfile
from pathlib import Path

import regex

from checks import _tokenizer_diagnosis as diagnosis
from checks._core import CheckFailed, exercise, kind_of
from checks.tokenizer._common import _fail_with_hint, _quoted
from solutions import tokenizer as ref

# --- GPT-2's tokenizer -------------------------------------------------------------------


@exercise(ref.bytes_to_unicode)
def check_bytes_to_unicode(check, bytes_to_unicode):
    expected = ref.bytes_to_unicode()
    with check.case("bytes_to_unicode()"):
        got = check.call(bytes_to_unicode, what="bytes_to_unicode")
        if got is None:
            check.fail("your bytes_to_unicode returned None: did you forget `return`?")
        if not isinstance(got, dict):
            check.fail(f"bytes_to_unicode returned {kind_of(got)}, expected a dict.")
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
        check.fail(f"load_merge_ranks returned {kind_of(got)}, expected a dict.")
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


def _call_bpe(check, bpe, word, ranks):
    """The learner's bpe(word, ranks), failing the case if it changed `ranks`."""
    size = len(ranks)
    got = check.call(bpe, word, ranks, what="bpe")
    if len(ranks) != size:
        check.fail(
            f"your bpe changed the ranks it was given ({size} pairs before, {len(ranks)} "
            "after): it must leave them alone, for the next word needs them all."
        )
    return got


def _check_bpe_word(check, bpe, word, ranks):
    expected = ref.bpe(word, ranks)
    got = _call_bpe(check, bpe, word, ranks)
    if got is None:
        check.fail("your bpe returned None: did you forget `return`?")
    if not isinstance(got, list) or not all(isinstance(t, str) for t in got):
        check.fail(f"bpe should return a list of str, got {kind_of(got)} {_quoted(str(got))}.")
    if got != expected:
        for description, variant in [
            ("merged the pair that occurs most often: the lowest rank wins, whatever the counts", dict(order="frequent")),
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
    # overlapping pairs, "xyz" a lower rank to the right of a higher one, "bcabc" a lower
    # rank that occurs once against a higher one that occurs twice.
    toy = {("s", "t"): 0, ("a", "b"): 1, ("y", "z"): 2, ("b", "c"): 3, ("x", "y"): 4}
    toy |= {("a", "a"): 5, ("aa", "a"): 6}
    for word in ["x", "st", "abc", "xyz", "aaa", "aaaa", "aaaaa", "cba", "bcabc"]:
        with check.case(f"bpe({word!r}) with ranks {toy}"):
            _check_bpe_word(check, bpe, word, toy)
    tok, hf = ref.load_gpt2_tokenizer(), diagnosis.hf_gpt2()
    # A copy: code that changes its ranks must not change the reference tokenizer's.
    vocab, ranks = tok.vocab, dict(tok.ranks)
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
                    ids += [vocab[t] for t in _call_bpe(check, bpe, word, ranks)]
            check.equal(ids, hf.encode(text), what="ids")
