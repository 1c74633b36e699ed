"""The recall cases are built as specified: real book text, each fact stated once, asked in other words."""

import re

import pytest

from benchmarks.haystack import BOOKS, TASKS, haystack
from benchmarks.planted_text import CORPUS, sentence_ends
from benchmarks.recall import bucket, question_ids, table
from memgpt import load_tokenizer

pytestmark = pytest.mark.skipif(not CORPUS.is_dir(), reason="needs the books in ../shared/corpus")


@pytest.fixture(scope="module")
def hays():
    tok = load_tokenizer()
    return tok, [
        haystack(tok, n, seed, BOOKS[seed % 3]) for seed, n in enumerate([2048, 4096, 8192, 2048, 4096])
    ]


def words(text: str) -> list[str]:
    return re.findall(r"\w+", text.casefold())


def test_every_book_gives_haystacks_of_the_length_asked(hays):
    tok, stacks = hays
    assert {h.book for h in stacks} == set(BOOKS)
    for h, n in zip(stacks, [2048, 4096, 8192, 2048, 4096], strict=True):
        got = len(tok.encode(h.text, add_special_tokens=False))
        assert 0.9 * n < got < 1.1 * n, (h.book, n, got)
        assert {c.task for c in h.cases} == set(TASKS)


def test_each_planted_sentence_appears_once_and_its_value_nowhere_else(hays):
    _, stacks = hays
    for h in stacks:
        for case in h.cases:
            for needle in case.needles:
                assert h.text.count(needle) == 1
            if case.task != "multihop":  # the daughter's name could be a common one
                assert len(re.findall(rf"\b{re.escape(case.answer)}\b", h.text)) == 1, case


def test_the_haystack_is_the_book_itself_not_repeated_filler(hays):
    _, stacks = hays
    for h in stacks:
        text = h.text
        for case in h.cases:
            for needle in case.needles:
                text = text.replace(needle + " ", "")
        sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+", text) if len(s.strip()) > 40]
        assert len(set(sentences)) > 0.95 * len(sentences)  # no paragraph repeated
        assert text.strip()[:200] in (CORPUS / h.book).read_text(encoding="utf-8")


def test_questions_do_not_copy_the_fact(hays):
    _, stacks = hays
    for h in stacks:
        for case in h.cases:
            asked = words(case.question)
            assert case.answer.casefold() not in case.question.casefold()
            for needle in case.needles:
                stated = words(needle)
                # no run of five words in common: the question is worded anew, not a copy of the sentence
                runs = {tuple(stated[i : i + 5]) for i in range(len(stated) - 4)}
                assert not any(tuple(asked[i : i + 5]) in runs for i in range(len(asked) - 4)), (
                    needle,
                    asked,
                )


def test_the_superseded_value_and_the_other_keys_count_as_wrong(hays):
    _, stacks = hays
    case = next(c for c in stacks[0].cases if c.task == "superseded")
    old = case.wrong[0]
    assert case.right(f"in {case.answer}") and not case.right(f"in {old}")
    assert case.superseded(f"in {old}") and not case.superseded(f"in {case.answer}")
    keys = next(c for c in stacks[0].cases if c.task == "keys")
    assert len(keys.wrong) == 3 and not keys.right(f"{keys.answer} or {keys.wrong[0]}")


def test_a_planted_sentence_never_splits_a_title_from_its_name():
    text = "He met Mr. Darcy at the ball. Then Mrs. Bennet came in! J. Smith said so. The end is near."
    cuts = [text[:e] for e in sentence_ends(text)]
    assert all(not c.rstrip().endswith(("Mr.", "Mrs.", "J.")) for c in cuts)
    assert len(cuts) == 3


def test_questions_are_asked_in_the_chat_template_and_as_plain_text(hays):
    tok, _ = hays
    plain = tok.decode(question_ids(tok, "Where is it?", "plain"))
    assert plain.endswith("Question: Where is it?\nAnswer:")


def test_the_table_counts_right_answers_per_method_task_and_length():
    rows = [
        {"method": "kv", "tokens": 2010, "book": "b", "task": "single", "right": True, "wrong_value": False,
         "read_s": 2.0, "answer_s": 1.0},
        {"method": "kv", "tokens": 2010, "book": "b", "task": "single", "right": False, "wrong_value": False,
         "read_s": 2.0, "answer_s": 1.0},
        {"method": "kv", "tokens": 4140, "book": "b", "task": "superseded", "right": False, "wrong_value": True,
         "read_s": 4.0, "answer_s": 1.0},
    ]  # fmt: skip
    assert bucket(2010) == 2048 and bucket(4140) == 4096 and bucket(131_000) == 131_072
    md = table(rows)
    assert "| kv | single | 1/2 | - |" in md
    assert "| kv | superseded | - | 0/1 (old 1) |" in md
    assert "| kv | **all real text** | 1/2 | 0/1 |" in md
