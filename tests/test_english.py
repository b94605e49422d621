"""The English corpus builds clean and splits by book, and its tokenizer encodes exactly."""

import pytest

from course.models import build_corpus, english
from solutions.corpus import load_corpus
from solutions.tokenizer import BPETokenizer, train_incremental
from support import fake_books


@pytest.fixture(scope="module")
def tok():
    return BPETokenizer(train_incremental(load_corpus()[:200_000], 1024))


def test_a_missing_corpus_names_every_book_and_how_to_build_it(monkeypatch, tmp_path):
    monkeypatch.setattr(english, "ENGLISH", tmp_path)
    english.load_manifest.cache_clear()
    with pytest.raises(FileNotFoundError, match="make corpus") as missing:
        english.load_documents("train")
    english.load_manifest.cache_clear()
    message = str(missing.value)
    assert f"lacks {len(build_corpus.BOOKS)} of its books" in message
    assert all(str(b["id"]) in message and b["title"] in message for b in build_corpus.BOOKS)
    assert "DOWNLOAD=1" in message and "BOOKS=DIR" in message


def test_make_course_model_without_a_corpus_stops_short_and_writes_nothing(
    monkeypatch, tmp_path, capsys
):
    from course.models import train_course_model

    monkeypatch.setattr(english, "ENGLISH", tmp_path / "english")
    out = tmp_path / "course_model"
    with pytest.raises(SystemExit) as stopped:
        train_course_model.cli(["--out", str(out)])
    assert str(stopped.value).startswith("make course-model: the English corpus")
    assert "Traceback" not in str(stopped.value) and "make corpus" in str(stopped.value)
    assert not out.exists() and not (tmp_path / "english").exists()
    # One book missing from a built corpus: that book alone is named.
    src = tmp_path / "src"
    monkeypatch.setattr(build_corpus, "BOOKS", fake_books(src, {1: "One.\n", 2: "Two.\n"}, {2}))
    build_corpus.build(src, tmp_path / "english")
    (tmp_path / "english" / "2.txt.xz").unlink()
    assert [b["id"] for b in english.missing_books()] == [2]
    with pytest.raises(SystemExit, match="lacks 1 of its books"):
        train_course_model.cli(["--out", str(out)])
    assert not out.exists()


def test_built_books_load_by_split(monkeypatch, tmp_path):
    src = tmp_path / "src"
    texts = {1: "First book.\n", 2: "Second\nbook.\n", 3: "Third.\n"}
    monkeypatch.setattr(build_corpus, "BOOKS", fake_books(src, texts, {2}))
    build_corpus.build(src, tmp_path / "english")
    monkeypatch.setattr(english, "ENGLISH", tmp_path / "english")
    english.load_manifest.cache_clear()
    english._documents.cache_clear()
    try:
        assert english.load_documents("train") == ["First book.", "Third."]
        assert english.load_documents("validation") == ["Second book."]
        with pytest.raises(ValueError):
            english.load_documents("test")
    finally:
        english.load_manifest.cache_clear()
        english._documents.cache_clear()


def test_the_reference_corpus_still_loads():
    assert load_corpus().startswith(load_corpus()[:10]) and len(load_corpus()) > 400_000


def test_clean_strips_the_header_and_unwraps_paragraphs():
    raw = (
        "\ufeffThe Project Gutenberg eBook of X\r\n\r\n*** START OF THE PROJECT GUTENBERG EBOOK X"
        " ***\r\n\r\nCHAPTER I.\r\n\r\n\u201cIt is _very_ odd,\u201d said\r\nshe.\r\n\r\n"
        "[Illustration: a cat\r\nsitting]\r\n\r\n    A verse line,\r\n    and another.\r\n"
        "\r\n*** END OF THE PROJECT GUTENBERG EBOOK X ***\r\nlicence text\r\n"
    )
    assert build_corpus.clean(raw) == (
        'CHAPTER I.\n\n"It is very odd," said she.\n\nA verse line,\nand another.'
    )


def test_build_is_byte_identical(tmp_path, monkeypatch):
    src = tmp_path / "src"
    texts = {1: "One\nparagraph.\n\nTwo.\n", 2: "Three.\n"}
    monkeypatch.setattr(build_corpus, "BOOKS", fake_books(src, texts, {2}))
    outputs = []
    for name in ["a", "b"]:
        build_corpus.build(src, tmp_path / name)
        outputs.append({p.name: p.read_bytes() for p in sorted((tmp_path / name).iterdir())})
    assert outputs[0] == outputs[1]
    assert set(outputs[0]) == {"1.txt.xz", "2.txt.xz", "manifest.json"}


def test_encode_documents_equals_encode(tok):
    corpus = load_corpus()
    docs = [
        corpus[:3000],
        corpus[-3000:],
        "  odd  spacing\t\n\n\n 12,345 caf\u00e9 \u2014 \U0001f642",
    ]
    ids = english.encode_documents(tok, docs)
    assert ids.dtype == english.torch.int64 and ids.ndim == 1
    assert ids.tolist() == tok.encode("\n\n".join(docs))
    assert english.encode_documents(tok, []).shape == (0,)


def test_decode_inverts_encode(tok):
    doc = load_corpus()[300_000:310_000]
    assert tok.decode(english.encode_documents(tok, [doc]).tolist()) == doc


def test_tokenizer_save_and_load_round_trip(tok, tmp_path):
    assert len(tok.vocab) == 1024
    english.save_tokenizer(tok, tmp_path / "tokenizer.json")
    loaded = english.load_tokenizer(tmp_path / "tokenizer.json")
    assert list(loaded.merges.items()) == list(tok.merges.items())
    assert loaded.vocab == tok.vocab
    text = load_corpus()[50_000:52_000]
    assert loaded.encode(text) == tok.encode(text)
