"""Build the course's English corpus (course/data/english/) from plain-text public-domain books.

    python -m course.models.build_corpus SRC_DIR
    python -m course.models.build_corpus --download DIR [--base URL]

The books are listed, with their split, the SHA-256 of each source file and that of its cleaned
text, in course/data/english_books.json; the repository holds that list, never the books.
SRC_DIR holds the books as UTF-8 text files named by their Project Gutenberg number (1342.txt,
or 1342-0.txt as mirrors of the archive name it). Every file is checked before anything is
written: it must be the listed file, or a copy whose cleaned text is the listed book's.
`--download DIR` first fetches the missing books from Project Gutenberg
(https://www.gutenberg.org/ebooks/<number>.txt.utf-8) into DIR, keeping only files that pass
that check, then builds from DIR; nothing else here uses the network. The build writes, for each
book, its cleaned text xz-compressed (`<number>.txt.xz`) and a `manifest.json` listing the
books in order with their split and source hash. The same input gives byte-identical output: xz
stores no time stamp and the manifest is written with sorted keys.

Cleaning: the distributor's header and footer (everything outside the START/END marker lines)
and any line that names the distributor are dropped, so the texts are the plain public-domain
books; [Illustration] captions go too. Hard-wrapped lines are joined into one line per
paragraph, paragraphs are separated by one blank line (none after the last), and indented
blocks (verse, title pages) keep their line breaks. Curly quotes become ASCII quotes (' and ")
so that text a learner types matches the corpus; dashes and other characters stay as they are.
Underscores that mark italics are removed.
"""

import argparse
import hashlib
import http.client
import json
import lzma
import re
import sys
import urllib.request
from pathlib import Path

from course import DATA

OUT = DATA / "english"
GUTENBERG = "https://www.gutenberg.org/ebooks"

# Each book's id (its Gutenberg number), title, author, year first published, split, the
# SHA-256 of its source file and that of its cleaned text (UTF-8), which a copy served with
# other line endings or notices still matches. The split is by book: the model is validated on books it never saw
# in training. The two validation books, about a tenth of the characters, are a novel and an
# adventure story, each by an author whose other books are in training, so validation measures
# unseen text in familiar styles.
BOOKS: list[dict] = json.loads((DATA / "english_books.json").read_text(encoding="utf-8"))


class CorpusError(Exception):
    """A source book is missing, differs from its SHA-256, or could not be downloaded."""


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def matches(book: dict, data: bytes) -> bool:
    """The listed source file, or one whose cleaned text is the listed book's: a copy that
    differs only in line endings or in the distributor's notices, which clean() removes."""
    if sha256(data) == book["sha256"]:
        return True
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return sha256(clean(text).encode("utf-8")) == book["text_sha256"]


def mismatch(book: dict, data: bytes) -> str:
    return (
        f"has SHA-256 {sha256(data)}, not {book['sha256']}, and its cleaned text is not the "
        "listed book's either"
    )


def name(book: dict) -> str:
    return f"{book['id']}.txt ({book['title']})"


def sources(src: Path) -> dict[int, Path]:
    """Each book's source file in `src`, by id, once every file matches its SHA-256."""
    if not src.is_dir():
        raise CorpusError(f"{src} is not a folder of the books")
    found, problems = {}, []
    for book in BOOKS:
        path = src / f"{book['id']}.txt"
        if not path.exists():
            path = src / f"{book['id']}-0.txt"
        if not path.exists():
            problems.append(f"{name(book)} is missing")
        elif not matches(book, data := path.read_bytes()):
            problems.append(f"{name(book)} {mismatch(book, data)}")
        else:
            found[book["id"]] = path
    if problems:
        raise CorpusError(
            f"the books in {src} are not the ones course/data/english_books.json lists:\n  "
            + "\n  ".join(problems)
        )
    return found


def download(dest: Path, base: str = GUTENBERG) -> None:
    """Fetch into `dest` each book it lacks from `base`/<number>.txt.utf-8, keeping only matches.

    Stops at the first failed download or mismatch; the books verified so far stay, so a
    rerun fetches only the rest.
    """
    for book in BOOKS:
        path = dest / f"{book['id']}.txt"
        if path.exists() and matches(book, path.read_bytes()):
            continue
        url = f"{base}/{book['id']}.txt.utf-8"
        request = urllib.request.Request(url, headers={"User-Agent": "residual-stream-corpus"})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                data = response.read()
        except (OSError, http.client.HTTPException) as error:  # HTTPError, timeouts, cut short
            raise CorpusError(f"could not download {name(book)} from {url}: {error}") from None
        if not matches(book, data):
            raise CorpusError(
                f"{name(book)} from {url} {mismatch(book, data)}: not kept "
                "(Project Gutenberg may have revised the file since the list was made)"
            )
        dest.mkdir(parents=True, exist_ok=True)  # only once a book is verified
        partial = path.with_suffix(".part")  # a file never appears half-written
        partial.write_bytes(data)
        partial.replace(path)
        print(f"downloaded {name(book)}")


QUOTES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"'})


def clean(raw: str) -> str:
    """One book's text: no distributor header, footer or notices; one line per paragraph."""
    text = raw.lstrip("\ufeff").replace("\r\n", "\n")
    lines = text.split("\n")
    start = [i for i, line in enumerate(lines) if line.startswith("*** START OF")]
    end = [i for i, line in enumerate(lines) if line.startswith("*** END OF")]
    lines = lines[start[0] + 1 if start else 0 : end[0] if end else len(lines)]
    lines = [line for line in lines if "gutenberg" not in line.lower()]
    text = "\n".join(lines).translate(QUOTES)
    # [Illustration] and [Illustration: caption ...] may span lines; brackets do not nest.
    text = re.sub(r"\[Illustration[^\]]*\]", "", text)
    text = text.replace("_", "")
    paragraphs = []
    for block in re.split(r"\n[ \t]*\n", text):
        rows = [row.rstrip() for row in block.split("\n") if row.strip()]
        if not rows:
            continue
        if all(row.startswith((" ", "\t")) for row in rows):
            paragraphs.append(
                "\n".join(" ".join(row.split()) for row in rows)
            )  # verse, title pages
        else:
            paragraphs.append(" ".join(" ".join(row.split()) for row in rows))
    return "\n\n".join(paragraphs)


def build(src: Path, out: Path = OUT) -> list[dict]:
    """Clean every book of BOOKS from `src` into `out`; return the manifest it writes."""
    paths = sources(src)
    out.mkdir(parents=True, exist_ok=True)
    manifest = []
    for book in BOOKS:
        text = clean(paths[book["id"]].read_text(encoding="utf-8"))
        data = lzma.compress(text.encode("utf-8"), preset=9 | lzma.PRESET_EXTREME)
        (out / f"{book['id']}.txt.xz").write_bytes(data)
        manifest.append({**book, "chars": len(text), "file": f"{book['id']}.txt.xz"})
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return manifest


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Build course/data/english/ from the books.")
    parser.add_argument("src", type=Path, nargs="?", help="a folder of the books' text files")
    parser.add_argument("--download", type=Path, metavar="DIR", help="fetch the books into DIR")
    parser.add_argument("--base", default=GUTENBERG, help="where to download from")
    args = parser.parse_args()
    if (args.src is None) == (args.download is None):
        parser.error("give either SRC_DIR or --download DIR")
    try:
        if args.download:
            download(args.download, args.base)
        for book in build(args.download or args.src):
            print(f"{book['split']:>10}  {book['chars']:>9,}  {book['title']}")
    except CorpusError as error:
        sys.exit(f"build_corpus: {error}")
