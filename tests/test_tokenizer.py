"""The chapter 1 tokenizer checkers accept correct BPE, however it is written, and name mistakes."""

import json
import re
from collections import Counter, defaultdict

import pytest
import regex

from checks import _tokenizer_diagnosis as diagnosis
from checks import tokenizer as checks
from course.corpus import load_corpus
from solutions import tokenizer as ref
from solutions.tokenizer import GPT2_SPLIT_PATTERN, BPETokenizer, count_pairs, merge
from tests.support import assert_accepts, assert_rejects

FUNCTIONS = ["count_pairs", "most_frequent_pair", "merge"]
GPT2_FUNCTIONS = ["bytes_to_unicode", "load_merge_ranks", "bpe"]


def test_every_exercise_has_a_checker():
    assert checks.__all__ == [f"check_{name}" for name in FUNCTIONS] + [
        "check_bpe_tokenizer",
        "check_train_incremental",
        *[f"check_{name}" for name in GPT2_FUNCTIONS],
    ]


@pytest.mark.parametrize(
    "text",
    [
        "",
        "\x00",
        "🙂👍🏽 👨\u200d👩\u200d👧",
        "日本語",
        "e\u0301",
        " \n\n\t  x   ",
        "__x_1 ²½ Ⅻ",
        "a'll",
    ],
)
def test_split_pattern_chunks_join_back_into_the_text(text):
    assert "".join(regex.findall(GPT2_SPLIT_PATTERN, text)) == text


def test_split_pattern_chunks_join_back_into_the_whole_corpus():
    corpus = load_corpus()
    assert "".join(regex.findall(GPT2_SPLIT_PATTERN, corpus)) == corpus


def test_split_pattern_keeps_the_space_with_the_next_word_as_gpt2_does():
    chunks = regex.findall(GPT2_SPLIT_PATTERN, "Hello,  world's __debug__ 42\n\n  if")
    assert chunks == [
        "Hello",
        ",",
        " ",
        " world",
        "'s",
        " __",
        "debug",
        "__",
        " 42",
        "\n\n ",
        " if",
    ]


# --- The function exercises -------------------------------------------------------------


@pytest.mark.parametrize("name", FUNCTIONS)
def test_check_accepts_the_reference(name, capsys):
    assert_accepts(getattr(checks, f"check_{name}"), getattr(ref, name), capsys)


@pytest.mark.parametrize("name", FUNCTIONS)
def test_check_rejects_the_stub_as_not_implemented(name):
    def stub(*args):
        raise NotImplementedError()

    assert_rejects(getattr(checks, f"check_{name}"), stub, "not implemented")


@pytest.mark.parametrize("name", FUNCTIONS)
def test_check_rejects_a_missing_return(name):
    assert_rejects(getattr(checks, f"check_{name}"), lambda *args: None, "returned None")


@pytest.mark.parametrize("name", FUNCTIONS)
def test_check_rejects_code_that_raises_and_shows_the_line(name):
    def broken(*args):
        raise KeyError("oops")

    assert_rejects(getattr(checks, f"check_{name}"), broken, "raised KeyError", "line")


def count_pairs_by_loop(ids):
    counts = {}
    for i in range(len(ids) - 1):
        counts[ids[i], ids[i + 1]] = counts.get((ids[i], ids[i + 1]), 0) + 1
    return counts


def count_pairs_defaultdict(ids):
    counts = defaultdict(int)
    for pair in zip(ids, ids[1:], strict=False):
        counts[pair] += 1
    return counts


@pytest.mark.parametrize(
    "learner",
    [
        count_pairs_by_loop,
        count_pairs_defaultdict,
        lambda ids: Counter(zip(ids, ids[1:], strict=False)),
    ],
)
def test_check_count_pairs_accepts_correct_variants(learner, capsys):
    assert_accepts(checks.check_count_pairs, learner, capsys)


@pytest.mark.parametrize(
    "learner, fragment",
    [
        (
            lambda ids: dict.fromkeys(zip(ids, ids[1:], strict=False), 1),
            "counted each distinct pair once",
        ),
        (
            lambda ids: dict(Counter(zip(ids[::2], ids[1::2], strict=False))),
            "stepped two ids at a time",
        ),
        (lambda ids: list(zip(ids, ids[1:], strict=False)), "returned a list, expected a dict"),
        (lambda ids: (count_pairs(ids), ids.clear())[0], "modified its input"),
    ],
)
def test_check_count_pairs_names_the_mistake(learner, fragment):
    assert_rejects(checks.check_count_pairs, learner, fragment)


@pytest.mark.parametrize(
    "learner",
    [
        lambda counts: max(sorted(counts), key=counts.get),
        lambda counts: sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[0][0],
        lambda counts: min(p for p in counts if counts[p] == max(counts.values())),
    ],
)
def test_check_most_frequent_pair_accepts_correct_variants(learner, capsys):
    assert_accepts(checks.check_most_frequent_pair, learner, capsys)


@pytest.mark.parametrize(
    "learner, fragment",
    [
        (lambda counts: max(counts, key=counts.get), "first of the tied pairs"),
        (lambda counts: max(counts, key=lambda p: (counts[p], p)), "towards the largest pair"),
        (lambda counts: min(counts), "whatever its count"),
        (lambda counts: list(ref.most_frequent_pair(counts)), "returned a list, expected a tuple"),
        (
            lambda counts: counts.pop(ref.most_frequent_pair(counts)) and (0, 0),
            "modified its input",
        ),
    ],
)
def test_check_most_frequent_pair_names_the_mistake(learner, fragment):
    assert_rejects(checks.check_most_frequent_pair, learner, fragment)


def merge_with_for_loop(ids, pair, new_id):
    out, skip = [], False
    for i, x in enumerate(ids):
        if skip:
            skip = False
        elif i + 1 < len(ids) and (x, ids[i + 1]) == pair:
            out.append(new_id)
            skip = True
        else:
            out.append(x)
    return out


def merge_by_slicing(ids, pair, new_id):
    for i in range(len(ids) - 1):
        if (ids[i], ids[i + 1]) == pair:
            return ids[:i] + [new_id] + merge_by_slicing(ids[i + 2 :], pair, new_id)
    return list(ids)


def merge_dropping_the_last_id(ids, pair, new_id):
    out, i = [], 0
    while i < len(ids) - 1:
        if (ids[i], ids[i + 1]) == pair:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def merge_in_place(ids, pair, new_id):
    ids[:] = merge(ids, pair, new_id)
    return ids


@pytest.mark.parametrize("learner", [merge_with_for_loop, merge_by_slicing])
def test_check_merge_accepts_correct_variants(learner, capsys):
    assert_accepts(checks.check_merge, learner, capsys)


@pytest.mark.parametrize(
    "learner, fragment",
    [
        (diagnosis.merge_overlapping, "merged overlapping occurrences"),
        (merge_dropping_the_last_id, "dropped the last id"),
        (merge_in_place, "modified its input"),
        (lambda ids, pair, new_id: tuple(merge(ids, pair, new_id)), "expected a list"),
        (lambda ids, pair, new_id: [new_id if x == pair[0] else x for x in ids], "merge(["),
    ],
)
def test_check_merge_names_the_mistake(learner, fragment):
    assert_rejects(checks.check_merge, learner, fragment)


# --- BPETokenizer -----------------------------------------------------------------------


def test_check_bpe_tokenizer_accepts_the_reference(capsys):
    assert_accepts(checks.check_bpe_tokenizer, BPETokenizer, capsys)


class Stub(BPETokenizer):
    @classmethod
    def train(cls, text, vocab_size):
        raise NotImplementedError()

    def encode(self, text):
        raise NotImplementedError()

    def decode(self, ids):
        raise NotImplementedError()


def test_check_bpe_tokenizer_rejects_the_stub_as_not_implemented():
    assert_rejects(checks.check_bpe_tokenizer, Stub, "not implemented")


class EncodeMergeByMerge(BPETokenizer):
    """Applying every merge in training order to each chunk gives the same ids."""

    def encode(self, text):
        out = []
        for chunk in regex.findall(GPT2_SPLIT_PATTERN, text):
            ids = list(chunk.encode("utf-8"))
            for pair, new_id in self.merges.items():
                ids = merge(ids, pair, new_id)
            out += ids
        return out


class TrainOverEveryChunk(BPETokenizer):
    """No deduplication of chunks, ties broken by sorting: slower, same merges."""

    @classmethod
    def train(cls, text, vocab_size):
        chunks = [list(c.encode("utf-8")) for c in regex.findall(GPT2_SPLIT_PATTERN, text)]
        merges = {}
        for new_id in range(256, vocab_size):
            counts = Counter()
            for ids in chunks:
                counts.update(count_pairs(ids))
            if not counts:
                break
            pair = max(sorted(counts), key=counts.get)
            merges[pair] = new_id
            chunks = [merge(ids, pair, new_id) for ids in chunks]
        return cls(merges)


class DecodeByBytearray(BPETokenizer):
    def decode(self, ids):
        data = bytearray()
        for i in ids:
            data += self.vocab[i]
        return bytes(data).decode("utf-8", "replace")


@pytest.mark.parametrize("learner", [EncodeMergeByMerge, TrainOverEveryChunk, DecodeByBytearray])
def test_check_bpe_tokenizer_accepts_correct_variants(learner, capsys):
    assert_accepts(checks.check_bpe_tokenizer, learner, capsys)


def encoder(**changes):
    """A tokenizer class whose encode is the checker's variant with one decision changed."""
    return type("Tok", (BPETokenizer,), {
        "encode": lambda self, text: diagnosis.encode_variant(self.merges, text, **changes)
    })  # fmt: skip


def trainer(pick=ref.most_frequent_pair, split=True, byte_ids=True, stop=256, stop_early=True):
    """A tokenizer class whose train changes one decision of the reference's."""

    def train(cls, text, vocab_size):
        chunks = regex.findall(GPT2_SPLIT_PATTERN, text) if split else [text]
        to_ids = (lambda c: list(c.encode("utf-8"))) if byte_ids else (lambda c: list(map(ord, c)))
        words, merges = [to_ids(c) for c in chunks], {}
        for new_id in range(stop, vocab_size):
            counts = Counter()
            for ids in words:
                counts.update(count_pairs(ids))
            if stop_early and not counts:
                break
            pair = pick(counts)
            merges[pair] = new_id + 256 - stop
            words = [merge(ids, pair, merges[pair]) for ids in words]
        return cls(merges)

    return type("Tok", (BPETokenizer,), {"train": classmethod(train)})


class DecodeTokenByToken(BPETokenizer):
    def decode(self, ids):
        return "".join(self.vocab[i].decode("utf-8", errors="replace") for i in ids)


class DecodeStrictly(BPETokenizer):
    def decode(self, ids):
        return b"".join(self.vocab[i] for i in ids).decode("utf-8")


class DecodeIgnoringErrors(BPETokenizer):
    def decode(self, ids):
        return b"".join(self.vocab[i] for i in ids).decode("utf-8", errors="ignore")


class EncodeToTensor(BPETokenizer):
    def encode(self, text):
        import torch

        return torch.tensor(super().encode(text))


class TrainReturningMerges(BPETokenizer):
    @classmethod
    def train(cls, text, vocab_size):
        return BPETokenizer.train(text, vocab_size).merges


@pytest.mark.parametrize(
    "learner, fragment",
    [
        (DecodeTokenByToken, "decoded each token on its own"),
        (DecodeStrictly, "errors='replace'"),
        (DecodeIgnoringErrors, "not 'ignore'"),
        (encoder(split=False), "as one chunk"),
        (encoder(merge=diagnosis.merge_overlapping), "merged overlapping pairs"),
        (encoder(order="latest"), "most recently learned merge first"),
        (encoder(order="left"), "leftmost mergeable pair first"),
        (EncodeToTensor, "list of ints"),
        (trainer(pick=lambda counts: max(counts, key=counts.get)), "Both pairs occur"),
        (trainer(split=False), "count pairs inside each chunk"),
        (trainer(byte_ids=False), "text.encode('utf-8')"),
        (trainer(stop_early=False), "raised ValueError"),
        (trainer(stop=257), "stopped after 13 merges; expected 14"),
        (trainer(stop=255), "learned 15 merges; expected 14"),
        (TrainReturningMerges, "return cls(merges)"),
    ],
)
def test_check_bpe_tokenizer_names_the_mistake(learner, fragment):
    assert_rejects(checks.check_bpe_tokenizer, learner, fragment)


def test_check_bpe_tokenizer_names_the_first_differing_merge_with_its_bytes():
    message = assert_rejects(
        checks.check_bpe_tokenizer, trainer(pick=lambda counts: max(counts, key=counts.get))
    )
    assert re.search(r"merge #\d+ \(new id \d+\) differs: you merged \(\d+, \d+\) = \(b'", message)


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
        (lambda w, r: "".join(ref.bpe(w, r)), "list of str"),
        (lambda w, r: tuple(ref.bpe(w, r)), "list of str"),
        (lambda w, r: list(w), "expected"),
        (lambda w, r: ref.bpe(w, r)[:-1], "join back into the word"),
    ],
)
def test_check_bpe_names_the_mistake(learner, fragment):
    assert_rejects(checks.check_bpe, learner, fragment)


# --- Incremental training ----------------------------------------------------------------


@pytest.mark.parametrize(
    "text, vocab_size",
    [("aaaa", 300), ("日本語 日本語 🙂🙂 café café " * 3, 270), (load_corpus()[:40_000], 768)],
)
def test_incremental_training_learns_the_simple_trainers_merges(text, vocab_size):
    simple = BPETokenizer.train(text, vocab_size).merges
    assert list(ref.train_incremental(text, vocab_size).items()) == list(simple.items())


def incremental(*, weigh=True, subtract=True, index_new=True, pick=ref.most_frequent_pair):
    """An incremental trainer that scans for the best pair, with one decision changed."""

    def train_incremental(text, vocab_size):
        chunks = Counter(regex.findall(GPT2_SPLIT_PATTERN, text))
        words, freq = [list(c.encode("utf-8")) for c in chunks], list(chunks.values())
        counts, where = Counter(), defaultdict(set)
        for w, ids in enumerate(words):
            for p, k in count_pairs(ids).items():
                counts[p] += k * freq[w]
                where[p].add(w)
        merges = {}
        for new_id in range(256, vocab_size):
            counts = +counts  # drops the pairs whose count fell to 0
            if not counts:
                break
            pair = pick(counts)
            merges[pair] = new_id
            for w in where.pop(pair, ()):
                n = freq[w] if weigh else 1
                if subtract:
                    for p, k in count_pairs(words[w]).items():
                        counts[p] -= k * n
                else:
                    counts[pair] = 0
                words[w] = merge(words[w], pair, new_id)
                for p, k in count_pairs(words[w]).items():
                    counts[p] += k * n
                    if index_new:
                        where[p].add(w)
        return merges

    return train_incremental


@pytest.mark.parametrize("learner", [incremental()])
def test_check_train_incremental_accepts_correct_variants(learner, capsys):
    assert_accepts(checks.check_train_incremental, learner, capsys)


def simple_trainer(text, vocab_size):
    return BPETokenizer.train(text, vocab_size).merges


@pytest.mark.parametrize(
    "learner, fragment",
    [
        (incremental(weigh=False), "as often as the chunk occurs"),
        (incremental(subtract=False), "loses its old pairs"),
        (incremental(index_new=False), "index those chunks under their new pairs"),
        (
            incremental(pick=lambda counts: max(counts, key=lambda p: (counts[p], p))),
            "towards the smallest pair",
        ),
        (lambda text, size: BPETokenizer(simple_trainer(text, size)), "return its merges dict"),
        (simple_trainer, "update only the chunks that hold the merged pair"),
    ],
)
def test_check_train_incremental_names_the_mistake(learner, fragment):
    assert_rejects(checks.check_train_incremental, learner, fragment)


def test_bench_times_both_trainers_and_stores_what_the_chapter_reads(tmp_path, monkeypatch):
    from course import bench

    stored = json.loads(bench.TRAIN_TIMES.read_text(encoding="utf-8"))
    monkeypatch.setattr(bench, "TRAIN_TIMES", tmp_path / "times.json")
    monkeypatch.setattr(bench, "load_corpus", lambda: load_corpus()[:5000])
    result = bench.bench_training(vocab_size=300)
    assert not (tmp_path / "times.json").exists(), "a plain bench run must not rewrite the record"
    result = bench.bench_training(vocab_size=300, record=True)
    assert json.loads((tmp_path / "times.json").read_text(encoding="utf-8")) == result
    assert result.keys() == stored.keys()
    assert stored["vocab_size"] == 4096 and stored["corpus_characters"] == len(load_corpus())
