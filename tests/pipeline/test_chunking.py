import pytest

from pipeline.chunking import chunk_text, cut_points


def check_tiling(text, chunks, tokenizer, chunk_size):
    assert chunks[0].char_start == 0 and chunks[-1].char_end == len(text)
    for a, b in zip(chunks, chunks[1:], strict=False):
        assert a.char_end == b.char_start
    for i, c in enumerate(chunks):
        assert c.index == i and 1 <= len(c.token_ids) <= chunk_size
        assert tokenizer.decode(c.token_ids) == text[c.char_start : c.char_end]


@pytest.mark.parametrize("chunk_size", [1, 4, 7, 64])
def test_chunks_tile_the_text_exactly(tokenizer, chunk_size):
    text = "Call me Ishmael.  Some years ago—never mind how long precisely—\n\nhaving little money. " * 5
    chunks = chunk_text(text, tokenizer, chunk_size)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert [t for c in chunks for t in c.token_ids] == ids
    if chunk_size >= 4:
        check_tiling(text, chunks, tokenizer, chunk_size)


def test_never_cuts_inside_a_multibyte_character(tokenizer):
    text = "whale 🐳🐋 café naïve 日本語の鯨 " * 20  # characters that are several byte-level tokens
    for chunk_size in (4, 5, 6, 9):
        check_tiling(text, chunk_text(text, tokenizer, chunk_size), tokenizer, chunk_size)


def test_short_text_is_one_chunk_and_empty_text_none(tokenizer):
    (only,) = chunk_text("A short note.", tokenizer, 512)
    assert (only.char_start, only.char_end) == (0, len("A short note."))
    assert chunk_text("", tokenizer, 16) == []


def test_cut_points_prefers_clean_cuts():
    import numpy as np

    # tokens 1-3 are the bytes of one character (same offsets): cuts at 2 or 3 would split it
    offsets = np.array([[0, 1], [1, 2], [1, 2], [1, 2], [2, 3], [3, 4]])
    assert cut_points(offsets, 3) == [0, 1, 4]
    assert cut_points(offsets, 100) == [0]


def test_rejects_bad_chunk_size(tokenizer):
    with pytest.raises(ValueError, match="chunk_size"):
        chunk_text("x", tokenizer, 0)


def test_a_book_is_chunked_exactly(tokenizer, book):
    chunks = chunk_text(book, tokenizer, 512)
    assert len(chunks) > len(book) // (512 * 8)
    assert chunks[0].char_start == 0 and chunks[-1].char_end == len(book)
    assert all(a.char_end == b.char_start for a, b in zip(chunks, chunks[1:], strict=False))
    assert "".join(book[c.char_start : c.char_end] for c in chunks) == book
    for c in chunks[:20] + chunks[-20:]:
        assert tokenizer.decode(c.token_ids) == book[c.char_start : c.char_end]


def test_a_chunk_ends_where_a_sentence_does_else_between_words(tokenizer, book):
    chunks = chunk_text(book, tokenizer, 512)
    sentences = [book[c.char_end - 3 : c.char_end].rstrip().rstrip("\"'\u201d\u2019)]")[-1:] in ".!?"
                 or "\n\n" in book[c.char_end - 2 : c.char_end + 1] for c in chunks[:-1]]  # fmt: skip
    assert sum(sentences) >= 0.8 * len(sentences)  # Moby Dick's long sentences: else between words
    for c in chunks[:-1]:  # never inside a word
        assert book[c.char_end - 1].isspace() or book[c.char_end].isspace() or not book[c.char_end].isalnum()
    assert all(len(c.token_ids) >= 512 - 512 // 8 for c in chunks[:-1])  # at most an eighth given up
    first = "The whale rose high, and the boats went after it, " * 5 + "and the sea was calm."
    text = first + " The headsman should stay in the bows; he should dart the lance."
    size = len(tokenizer(first, add_special_tokens=False)["input_ids"]) + 5  # the limit: inside "The headsman ..."
    second = chunk_text(text, tokenizer, size)[1]
    assert size // 8 >= 5 and text[second.char_start :].lstrip().startswith("The headsman")
