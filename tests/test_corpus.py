"""The English corpus is built only from books whose SHA-256 matches the shipped list: from a
folder of them, or downloaded (here from a local server, never from gutenberg.org); and the
real books, where this machine has them (COURSE_BOOKS), build into the course's split."""

import hashlib
import json
import lzma
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from course import DATA
from course.models import build_corpus, english
from support import fake_books

TEXTS = {1: "First book.\n", 2: "Second\nbook.\n", 3: "Third.\n"}


@pytest.fixture
def books(monkeypatch, tmp_path):
    """Three fake books in tmp_path/src, listed as BOOKS with their hashes."""
    listed = fake_books(tmp_path / "src", TEXTS, {2})
    monkeypatch.setattr(build_corpus, "BOOKS", listed)
    return listed


@pytest.fixture
def server():
    """A server on 127.0.0.1 for /<number>.txt.utf-8 from `served`; it logs each path asked."""
    served: dict[str, bytes] = {}
    asked: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            asked.append(self.path)
            body = served.get(self.path)
            self.send_response(200 if body is not None else 404)
            self.end_headers()
            self.wfile.write(body if body is not None else b"not found")

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_port}/ebooks", served, asked
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def serve_all(served: dict[str, bytes]) -> None:
    for number, text in TEXTS.items():
        served[f"/ebooks/{number}.txt.utf-8"] = text.encode()


def test_the_shipped_list_is_the_eighteen_books_split_by_book():
    listed = json.loads((DATA / "english_books.json").read_text(encoding="utf-8"))
    assert build_corpus.BOOKS == listed
    assert len({book["id"] for book in listed}) == len(listed) == 18
    assert {book["id"] for book in listed if book["split"] == "validation"} == {105, 120}
    assert {book["split"] for book in listed} == {"train", "validation"}
    assert all(len(book["sha256"]) == len(book["text_sha256"]) == 64 for book in listed)


def test_a_changed_or_missing_book_stops_the_build_and_names_it(books, tmp_path):
    src = tmp_path / "src"
    (src / "2.txt").write_text("Second book, edited.\n", encoding="utf-8")
    (src / "3.txt").unlink()
    with pytest.raises(build_corpus.CorpusError) as error:
        build_corpus.build(src, tmp_path / "english")
    message = str(error.value)
    assert "2.txt (Book 2)" in message and books[1]["sha256"] in message
    assert "3.txt (Book 3) is missing" in message
    assert "1.txt" not in message
    assert not (tmp_path / "english").exists()  # nothing is written from unchecked books


def test_the_build_records_each_books_hash(books, tmp_path):
    manifest = build_corpus.build(tmp_path / "src", tmp_path / "english")
    assert [book["sha256"] for book in manifest] == [book["sha256"] for book in books]


def test_a_copy_served_with_other_line_endings_and_notices_is_the_same_book(
    books, server, tmp_path
):
    """Project Gutenberg serves its text files with CRLF line endings and its own header and
    footer: such a copy is not the listed file, but its cleaned text is the listed book's."""
    base, served, _ = server
    serve_all(served)
    served_copy = (
        "The Project Gutenberg eBook of Book 2\n"
        "*** START OF THE PROJECT GUTENBERG EBOOK 2 ***\n"
        f"{TEXTS[2]}"
        "*** END OF THE PROJECT GUTENBERG EBOOK 2 ***\n"
        "The Project Gutenberg licence.\n"
    )
    served["/ebooks/2.txt.utf-8"] = served_copy.replace("\n", "\r\n").encode()
    dest = tmp_path / "downloads"
    build_corpus.download(dest, base)
    built = build_corpus.build(dest, tmp_path / "english")
    assert [book["chars"] for book in built] == [len("First book."), len("Second book."), 6]
    assert lzma.decompress((tmp_path / "english" / "2.txt.xz").read_bytes()) == (b"Second book.")


def test_download_fetches_every_book_then_only_the_missing(books, server, tmp_path):
    base, served, asked = server
    serve_all(served)
    dest = tmp_path / "downloads"
    build_corpus.download(dest, base)
    assert sorted(p.name for p in dest.iterdir()) == ["1.txt", "2.txt", "3.txt"]
    assert (dest / "2.txt").read_text(encoding="utf-8") == TEXTS[2]
    assert len(asked) == 3
    (dest / "3.txt").unlink()
    build_corpus.download(dest, base)
    assert asked[3:] == ["/ebooks/3.txt.utf-8"]
    assert build_corpus.build(dest, tmp_path / "english")[1]["split"] == "validation"


def test_a_corrupted_download_is_named_and_not_kept(books, server, tmp_path):
    base, served, _ = server
    serve_all(served)
    served["/ebooks/2.txt.utf-8"] = b"Second book, corrupted.\n"
    dest = tmp_path / "downloads"
    with pytest.raises(build_corpus.CorpusError, match=r"2\.txt \(Book 2\).*not kept"):
        build_corpus.download(dest, base)
    assert sorted(p.name for p in dest.iterdir()) == ["1.txt"]  # the verified book stays


def test_a_failed_download_is_named(books, server, tmp_path):
    base, served, _ = server
    serve_all(served)
    del served["/ebooks/3.txt.utf-8"]
    dest = tmp_path / "downloads"
    with pytest.raises(build_corpus.CorpusError, match=r"could not download 3\.txt.*404"):
        build_corpus.download(dest, base)
    assert sorted(p.name for p in dest.iterdir()) == ["1.txt", "2.txt"]


def test_a_download_that_fails_at_once_leaves_no_folder_behind(books, server, tmp_path):
    base, served, _ = server
    dest = tmp_path / "downloads"  # nothing is served
    with pytest.raises(build_corpus.CorpusError, match=r"could not download 1\.txt"):
        build_corpus.download(dest, base)
    assert not dest.exists()


BOOKS_DIR = os.environ.get("COURSE_BOOKS")


@pytest.mark.skipif(
    not BOOKS_DIR, reason="COURSE_BOOKS, a folder of the source books, is not set (.ci/run sets it)"
)
def test_the_real_books_build_into_the_course_split(tmp_path):
    src = Path(BOOKS_DIR)
    manifest = build_corpus.build(src, tmp_path / "english")
    for book, listed in zip(manifest, build_corpus.BOOKS, strict=True):
        assert (book["id"], book["split"], book["sha256"]) == (
            listed["id"], listed["split"], listed["sha256"]
        )  # fmt: skip
        assert (
            hashlib.sha256((src / f"{book['id']}.txt").read_bytes()).hexdigest()
            == (listed["sha256"])
        )
    chars = {
        split: sum(b["chars"] for b in manifest if b["split"] == split) for split in english.SPLITS
    }
    assert 0.05 < chars["validation"] / (chars["train"] + chars["validation"]) < 0.15
    built = english.ENGLISH
    if (built / "manifest.json").is_file():  # what `make corpus` built is what these books give
        for path in sorted((tmp_path / "english").iterdir()):
            assert (built / path.name).read_bytes() == path.read_bytes(), path.name


def test_the_built_corpus_loads_by_split():
    if not (english.ENGLISH / "manifest.json").is_file():
        pytest.skip(
            "the English corpus is not built: run `make corpus` (see course/data/README.md)"
        )
    try:
        train, validation = english.load_documents("train"), english.load_documents("validation")
        by_split = {
            s: [b["id"] for b in english.load_manifest() if b["split"] == s] for s in english.SPLITS
        }
        assert by_split["validation"] == [105, 120] and len(by_split["train"]) == 16
        assert len(train) == 16 and len(validation) == 2
        assert validation[0].startswith("Persuasion")
    finally:  # later tests load corpora of their own
        english.load_manifest.cache_clear()
        english._documents.cache_clear()
