"""The course's English corpus (public-domain books, see data/README.md) and its BPE tokenizer."""

import json
import lzma
from functools import cache
from importlib.resources import files
from pathlib import Path

import regex
import torch

from course.models import build_corpus
from solutions.tokenizer import GPT2_SPLIT_PATTERN, BPETokenizer, train_incremental

ENGLISH = files("course") / "data" / "english"
SPLITS = ("train", "validation")


class CorpusMissing(FileNotFoundError):
    """The English corpus is not built, or lacks some of its books."""


def missing_books() -> list[dict]:
    """The books course/data/english_books.json lists whose text course/data/english/ lacks."""
    listed = build_corpus.BOOKS  # looked up at each call: tests list books of their own

    manifest = ENGLISH / "manifest.json"
    if not manifest.is_file():
        return listed
    built = {book["id"] for book in json.loads(manifest.read_text(encoding="utf-8"))}
    return [
        b for b in listed if b["id"] not in built or not (ENGLISH / f"{b['id']}.txt.xz").is_file()
    ]


def missing_message(missing: list[dict]) -> str:
    """What a learner reads when the corpus is not there: every missing book, and the fix."""
    books = "\n".join(f"  {b['id']:>5}  {b['title']} ({b['author']})" for b in missing)
    return (
        f"the English corpus in course/data/english/ lacks {len(missing)} of its books:\n{books}\n"
        "Build it with `make corpus BOOKS=DIR` from a folder of their plain-text files "
        "(<number>.txt, as Project Gutenberg names them), or `make corpus DOWNLOAD=1` to fetch "
        "them from gutenberg.org. The chapters never need it: only retraining does."
    )


@cache
def load_manifest() -> tuple[dict, ...]:
    """Each book's id, title, author, year, split, size in characters and file, in order."""
    if missing := missing_books():
        raise CorpusMissing(missing_message(missing))
    manifest = ENGLISH / "manifest.json"
    return tuple(json.loads(manifest.read_text(encoding="utf-8")))


@cache
def _documents(split: str) -> tuple[str, ...]:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
    books = [book for book in load_manifest() if book["split"] == split]
    return tuple(lzma.decompress((ENGLISH / b["file"]).read_bytes()).decode() for b in books)


def load_documents(split: str) -> list[str]:
    """The books of `split` ("train" or "validation"), one string each, in manifest order."""
    return list(_documents(split))


def train_course_tokenizer(vocab_size: int = 4096) -> BPETokenizer:
    """Chapter 1's byte-level BPE learned on the training books only, joined by blank lines."""
    return BPETokenizer(train_incremental("\n\n".join(_documents("train")), vocab_size))


def save_tokenizer(tok: BPETokenizer, path: str | Path) -> None:
    """Write the merges, in the order they were learned, as JSON: [[a, b], ...] for 256, 257..."""
    merges = [list(pair) for pair, _ in sorted(tok.merges.items(), key=lambda item: item[1])]
    Path(path).write_text(json.dumps({"merges": merges}, separators=(",", ":")) + "\n")


def load_tokenizer(path: str | Path) -> BPETokenizer:
    """The tokenizer save_tokenizer wrote: merge k makes token 256 + k."""
    merges = json.loads(Path(path).read_text(encoding="utf-8"))["merges"]
    return BPETokenizer({(a, b): 256 + k for k, (a, b) in enumerate(merges)})


def encode_documents(tok: BPETokenizer, docs: list[str]) -> torch.Tensor:
    """1-D int64 ids of the documents joined by blank lines: tok.encode("\\n\\n".join(docs)).

    Most chunks (words with their leading space) recur thousands of times, so each distinct
    chunk is merged once and its ids reused: a few seconds for the whole corpus instead of
    minutes.
    """
    cache: dict[str, list[int]] = {}
    ids: list[int] = []
    for chunk in regex.findall(GPT2_SPLIT_PATTERN, "\n\n".join(docs)):
        if chunk not in cache:
            cache[chunk] = tok.encode(chunk)  # a chunk splits into itself alone
        ids += cache[chunk]
    return torch.tensor(ids, dtype=torch.int64)
