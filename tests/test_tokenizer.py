"""The chapter 1 tokenizer checkers accept correct BPE, however it is written, and name mistakes:
here BPE's pair functions, and the split pattern; the tokenizer and its trainers are in
test_tokenizer_bpe.py, GPT-2's tokenizer in test_tokenizer_gpt2.py."""

from collections import Counter, defaultdict

import pytest
import regex

from checks import _tokenizer_diagnosis as diagnosis
from checks import tokenizer as checks
from solutions import tokenizer as ref
from solutions.corpus import load_corpus
from solutions.tokenizer import GPT2_SPLIT_PATTERN, count_pairs, merge
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
            "modified its input. Build a new tuple instead",
        ),
        (
            lambda counts: min(counts, key=lambda p: (-counts[p], str(p))),
            "compared tied pairs as text",
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


def merge_as_text(ids, pair, new_id):
    text = " ".join(map(str, ids)).replace(f"{pair[0]} {pair[1]}", str(new_id))
    return [int(x) for x in text.split()]


def merge_either_order(ids, pair, new_id):
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and sorted(ids[i : i + 2]) == sorted(pair):
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def merge_first_id_then_either(ids, pair, new_id):
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and ids[i] == pair[0] and ids[i + 1] in pair:
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
        (merge_in_place, "modified its input. Build a new list instead"),
        (merge_as_text, "merged by replacing text"),
        (merge_either_order, "merged the pair in either order"),
        (merge_first_id_then_either, "merge([1, 1, 2, 2, 1, 2], (1, 2), 256)"),
        (lambda ids, pair, new_id: tuple(merge(ids, pair, new_id)), "expected a list"),
        (lambda ids, pair, new_id: [new_id if x == pair[0] else x for x in ids], "merge(["),
    ],
)
def test_check_merge_names_the_mistake(learner, fragment):
    assert_rejects(checks.check_merge, learner, fragment)
