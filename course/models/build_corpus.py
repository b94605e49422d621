"""Build the course's English corpus (course/data/english/) from plain-text public-domain books.

    python -m course.models.build_corpus SRC_DIR

SRC_DIR holds the books as UTF-8 text files named by their Project Gutenberg number: the
"Plain Text UTF-8" file of each book in BOOKS, as gutenberg.org serves it (for Pride and
Prejudice, https://www.gutenberg.org/ebooks/1342.txt.utf-8, saved as 1342.txt) or as mirrors
of its archive name it (1342-0.txt). This script never downloads anything. It writes, for each
book, its cleaned text xz-compressed (`<number>.txt.xz`) and a `manifest.json` listing the
books in order with their split. The same input gives byte-identical output: xz stores no time
stamp and the manifest is written with sorted keys.

Cleaning: the distributor's header and footer (everything outside the START/END marker lines)
and any line that names the distributor are dropped, so the texts that ship are the plain
public-domain books; [Illustration] captions go too. Hard-wrapped lines are joined into one
line per paragraph, paragraphs are separated by one blank line (none after the last), and
indented blocks (verse, title pages) keep their line breaks. Curly quotes become ASCII quotes
(' and ") so that text a learner types matches the corpus; dashes and other characters stay as
they are. Underscores that mark italics are removed.
"""

import json
import lzma
import re
import sys
from pathlib import Path

from course import DATA

OUT = DATA / "english"

# (Gutenberg number, title, author, first published). The split is by book: the model is
# validated on books it never saw in training.
BOOKS = [
    (829, "Gulliver's Travels", "Jonathan Swift", 1726),
    (1342, "Pride and Prejudice", "Jane Austen", 1813),
    (105, "Persuasion", "Jane Austen", 1817),
    (84, "Frankenstein", "Mary Shelley", 1818),
    (730, "Oliver Twist", "Charles Dickens", 1838),
    (2701, "Moby-Dick", "Herman Melville", 1851),
    (205, "Walden, and On the Duty of Civil Disobedience", "Henry David Thoreau", 1854),
    (11, "Alice's Adventures in Wonderland", "Lewis Carroll", 1865),
    (74, "The Adventures of Tom Sawyer", "Mark Twain", 1876),
    (120, "Treasure Island", "Robert Louis Stevenson", 1883),
    (43, "The Strange Case of Dr. Jekyll and Mr. Hyde", "Robert Louis Stevenson", 1886),
    (2097, "The Sign of the Four", "Arthur Conan Doyle", 1890),
    (174, "The Picture of Dorian Gray", "Oscar Wilde", 1890),
    (1661, "The Adventures of Sherlock Holmes", "Arthur Conan Doyle", 1892),
    (55, "The Wonderful Wizard of Oz", "L. Frank Baum", 1900),
    (215, "The Call of the Wild", "Jack London", 1903),
    (910, "White Fang", "Jack London", 1906),
    (45, "Anne of Green Gables", "L. M. Montgomery", 1908),
]
# About a tenth of the characters: a novel and an adventure story, each
# by an author whose other books are in training, so validation measures unseen text in
# familiar styles.
VALIDATION = {105, 120}

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
    out.mkdir(parents=True, exist_ok=True)
    manifest = []
    for number, title, author, year in BOOKS:
        path = src / f"{number}.txt"
        if not path.exists():
            path = src / f"{number}-0.txt"
        text = clean(path.read_text(encoding="utf-8"))
        data = lzma.compress(text.encode("utf-8"), preset=9 | lzma.PRESET_EXTREME)
        (out / f"{number}.txt.xz").write_bytes(data)
        split = "validation" if number in VALIDATION else "train"
        manifest.append(
            {"id": number, "title": title, "author": author, "year": year, "split": split,
             "chars": len(text), "file": f"{number}.txt.xz"}
        )  # fmt: skip
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return manifest


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    for book in build(Path(sys.argv[1])):
        print(f"{book['split']:>10}  {book['chars']:>9,}  {book['title']}")
