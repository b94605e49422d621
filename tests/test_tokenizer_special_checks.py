"""check_bpe_tokenizer's cases for special tokens and encode_iterable accept correct code,
however it is written, and name the mistakes learners make: the shorter special token matched
first, special tokens left to the pre-tokenizer, text lost or mis-encoded across strings."""

import pytest
import regex

from checks import tokenizer as checks
from solutions.tokenizer import GPT2_SPLIT_PATTERN, BPETokenizer
from tests.support import assert_accepts, assert_rejects


class SplitWithCapturingGroup(BPETokenizer):
    """regex.split keeps the separators when the pattern is a group: odd pieces are specials."""

    def encode(self, text):
        if not self.special_ids:
            return self.encode_ordinary(text)
        ids = []
        for k, piece in enumerate(regex.split(f"({self.special_pattern})", text)):
            ids += [self.special_ids[piece]] if k % 2 else self.encode_ordinary(piece)
        return ids


class ScanByHand(BPETokenizer):
    """At each position, the longest special token that starts there, found with startswith."""

    def encode(self, text):
        specials = sorted(self.special_ids, key=len, reverse=True)
        ids, start, i = [], 0, 0
        while i < len(text):
            hit = next((s for s in specials if text.startswith(s, i)), None)
            if hit:
                ids += self.encode_ordinary(text[start:i]) + [self.special_ids[hit]]
                i = start = i + len(hit)
            else:
                i += 1
        return ids + self.encode_ordinary(text[start:])


class StreamWithAList(BPETokenizer):
    """The strings kept back as a list, joined only when a settled part is cut off."""

    def encode_iterable(self, texts):
        kept = []
        for text in texts:
            kept.append(text)
            pending = "".join(kept)
            cut = self._settled(pending)
            if cut:
                yield from self.encode(pending[:cut])
                kept = [pending[cut:]]
        yield from self.encode("".join(kept))


@pytest.mark.parametrize("learner", [SplitWithCapturingGroup, ScanByHand, StreamWithAList])
def test_check_bpe_tokenizer_accepts_correct_special_tokens_and_streams(learner, capsys):
    assert_accepts(checks.check_bpe_tokenizer, learner, capsys)


def encode_with(pattern_of):
    """A tokenizer class whose encode splits at `pattern_of(special_ids)`, not special_pattern."""

    def encode(self, text):
        if not self.special_ids:
            return self.encode_ordinary(text)
        ids, start = [], 0
        for match in regex.finditer(pattern_of(list(self.special_ids)), text):
            ids += self.encode_ordinary(text[start : match.start()])
            ids.append(self.special_ids[match.group()])
            start = match.end()
        return ids + self.encode_ordinary(text[start:])

    return type("Tok", (BPETokenizer,), {"encode": encode})


class NoSpecialTokens(BPETokenizer):
    def encode(self, text):
        return self.encode_ordinary(text)


class PatternEvenWhenNone(BPETokenizer):
    """special_pattern used even when there are no special tokens and it is None."""

    def encode(self, text):
        regex.finditer(self.special_pattern, text)  # what the mistake does first: None raises
        return super().encode(text)


class EachStringOnItsOwn(BPETokenizer):
    def encode_iterable(self, texts):
        for text in texts:
            yield from self.encode(text)


class LosesTheEnd(BPETokenizer):
    def encode_iterable(self, texts):
        pending = ""
        for text in texts:
            pending += text
            cut = self._settled(pending)
            yield from self.encode(pending[:cut])
            pending = pending[cut:]


class KeepsOnlyTheLastString(BPETokenizer):
    """The kept-back text replaced by the new string instead of added to it."""

    def encode_iterable(self, texts):
        pending = ""
        for text in texts:
            pending = text
            cut = self._settled(pending)
            yield from self.encode(pending[:cut])
            pending = pending[cut:]
        yield from self.encode(pending)


class JoinsEverythingFirst(BPETokenizer):
    def encode_iterable(self, texts):
        return self.encode("".join(texts))


class KeepsBackOnlyTheLastChunk(BPETokenizer):
    """Its own rule in place of _settled: all but the last chunk of GPT2_SPLIT_PATTERN is
    settled. "'" + "ll", "\\n\\n" + "x" and "<|endoftext" + "|>" come out wrong."""

    def encode_iterable(self, texts):
        pending = ""
        for text in texts:
            pending += text
            chunks = regex.findall(GPT2_SPLIT_PATTERN, pending)
            cut = len(pending) - len(chunks[-1]) if chunks else 0
            yield from self.encode(pending[:cut])
            pending = pending[cut:]
        yield from self.encode(pending)


@pytest.mark.parametrize(
    "learner, fragment",
    [
        (encode_with(lambda s: "|".join(map(regex.escape, s))), "try the longest special token"),
        (encode_with(lambda s: "|".join(s)), "'|' in a pattern means 'or'"),
        (NoSpecialTokens, "GPT2_SPLIT_PATTERN cuts '<|endoftext|>'"),
        (PatternEvenWhenNone, "self.special_pattern is None"),
        (EachStringOnItsOwn, "each piece encoded on its own"),
        (LosesTheEnd, "lost the last"),
        (KeepsOnlyTheLastString, "ids of the pieces"),
        (JoinsEverythingFirst, "read 1000 of 1000 lines"),
        (KeepsBackOnlyTheLastChunk, "ids of the pieces"),
    ],
)
def test_check_bpe_tokenizer_names_the_special_token_and_stream_mistakes(learner, fragment):
    assert_rejects(checks.check_bpe_tokenizer, learner, fragment)
