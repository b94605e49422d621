"""The checkers of chapter 1's BPETokenizer and of its incremental trainer accept correct code,
however it is written, and name mistakes; the bench times both trainers."""

import json
import re
from collections import Counter, defaultdict

import pytest
import regex

from checks import _tokenizer_diagnosis as diagnosis
from checks import tokenizer as checks
from solutions import tokenizer as ref
from solutions.corpus import load_corpus
from solutions.tokenizer import GPT2_SPLIT_PATTERN, BPETokenizer, count_pairs, merge
from tests.support import assert_accepts, assert_rejects

# --- BPETokenizer -----------------------------------------------------------------------


def test_check_bpe_tokenizer_accepts_the_reference(capsys):
    assert_accepts(checks.check_bpe_tokenizer, BPETokenizer, capsys)


class Stub(BPETokenizer):
    @classmethod
    def train(cls, text, vocab_size):
        raise NotImplementedError()

    def encode_ordinary(self, text):
        raise NotImplementedError()

    def decode(self, ids):
        raise NotImplementedError()


def test_check_bpe_tokenizer_rejects_the_stub_as_not_implemented():
    assert_rejects(checks.check_bpe_tokenizer, Stub, "not implemented")


class EncodeMergeByMerge(BPETokenizer):
    """Applying every merge in training order to each chunk gives the same ids."""

    def encode_ordinary(self, text):
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
    """A tokenizer class whose encode_ordinary is the checker's variant with one decision changed."""
    return type("Tok", (BPETokenizer,), {
        "encode_ordinary": lambda self, text: diagnosis.encode_variant(self.merges, text, **changes)
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


class DecodeStripped(BPETokenizer):
    def decode(self, ids):
        return super().decode(ids).strip()


class EncodeByCounts(BPETokenizer):
    """Training's rule reused in encode: the most frequent mergeable pair of the chunk."""

    def encode_ordinary(self, text):
        tokens = []
        for chunk in regex.findall(GPT2_SPLIT_PATTERN, text):
            ids = list(chunk.encode("utf-8"))
            while counts := {p: n for p, n in count_pairs(ids).items() if p in self.merges}:
                pair = max(counts, key=lambda p: (counts[p], -self.merges[p]))
                ids = merge(ids, pair, self.merges[pair])
            tokens += ids
        return tokens


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
        (DecodeStripped, "decode([9]) is '', expected '\\t'. Join the tokens' bytes"),
        (encoder(split=False), "as one chunk"),
        (encoder(merge=diagnosis.merge_overlapping), "merged overlapping pairs"),
        (encoder(order="latest"), "most recently learned merge first"),
        (encoder(order="left"), "leftmost mergeable pair first"),
        (EncodeByCounts, "occurs most often in the chunk"),
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
    from course.bench import tokenizer as bench

    stored = json.loads(bench.TRAIN_TIMES.read_text(encoding="utf-8"))
    monkeypatch.setattr(bench, "TRAIN_TIMES", tmp_path / "times.json")
    monkeypatch.setattr(bench, "load_corpus", lambda: load_corpus()[:5000])
    result = bench.bench_training(vocab_size=300)
    assert not (tmp_path / "times.json").exists(), "a plain bench run must not rewrite the record"
    result = bench.bench_training(vocab_size=300, record=True)
    assert json.loads((tmp_path / "times.json").read_text(encoding="utf-8")) == result
    assert result.keys() == stored.keys()
    assert stored["vocab_size"] == 4096 and stored["corpus_characters"] == len(load_corpus())
