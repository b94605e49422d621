"""The checkers of BPE's pieces: counting the pairs of ids, the most frequent one, a merge."""

from collections import Counter

import torch

from checks import _tokenizer_diagnosis as diagnosis
from checks._core import exercise, kind_of, seeded
from solutions import tokenizer as ref


def _plain(check, fn, args, expected, *, what, kind, mistakes=()):
    """Call learner code on plain Python values; compare, naming a known mistake if one matches."""
    before = [
        list(a) if isinstance(a, list) else dict(a) if isinstance(a, dict) else a for a in args
    ]
    got = check.call(fn, *args, what=what)
    if list(args) != before:
        check.fail(f"your {what} modified its input. Build a new {kind.__name__} instead.")
    if got is None:
        check.fail(f"your {what} returned None: did you forget `return`?")
    if not isinstance(got, kind):
        check.fail(f"your {what} returned {kind_of(got)}, expected a {kind.__name__}.")
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
        # Ids of different lengths: as text, "(256, 32)" sorts before "(99, 300)".
        {(99, 300): 5, (256, 32): 5, (12, 7): 1},
    ]
    for counts in cases:
        with check.case(f"counts = {counts}"):
            mistakes = [
                (
                    "compared tied pairs as text, where '(256, 32)' < '(99, 300)': compare "
                    "them as tuples of ints",
                    min(counts, key=lambda p: (-counts[p], str(p))),
                ),
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


def _merge_as_text(ids, pair, new_id):
    text = " ".join(map(str, ids)).replace(f"{pair[0]} {pair[1]}", str(new_id))
    return [int(x) for x in text.split()]


def _merge_unordered(ids, pair, new_id):
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and {ids[i], ids[i + 1]} == set(pair) and ids[i] != ids[i + 1]:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


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
        ([1, 1, 2, 2, 1, 2], (1, 2), 256),
        ([11, 2, 1, 22], (1, 2), 256),  # no (1, 2) here, though the text "11 2 1 22" has "1 2"
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
                (
                    "merged by replacing text: in ' '.join of the ids, '1 2' also matches "
                    "inside '11 2' and '1 22'. Compare the ids themselves, two at a time",
                    _merge_as_text(ids, pair, new_id),
                ),
                (
                    "merged the pair in either order: (b, a) is another pair; merge only "
                    "ids[i] == pair[0] followed by ids[i + 1] == pair[1]",
                    _merge_unordered(ids, pair, new_id),
                ),
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
