"""Training documents from real books: a fact planted once, asked in other words, held-out text kept apart."""

import random
from pathlib import Path

import pytest

from memgpt.hub import load_tokenizer
from memgpt.training import TrainConfig, train
from memgpt.training.books import BookSplits, make_fact, recall_doc

CORPUS = Path(__file__).parents[4] / "shared" / "corpus"
BOOKS = sorted(CORPUS.glob("*.txt"))
pytestmark = pytest.mark.skipif(not BOOKS, reason="needs the books of ../shared/corpus")


@pytest.fixture(scope="module")
def books() -> BookSplits:
    return BookSplits(BOOKS)


def test_each_fact_is_planted_once_and_asked_in_other_words(books):
    tok = load_tokenizer()
    for seed in range(12):
        facts, question, answer = make_fact(random.Random(seed))
        doc = recall_doc(books, tok, random.Random(seed), "train", 3, 64)
        text = tok.decode(sum(doc.segments, []))
        assert all(text.count(f) == 1 for f in facts), (facts, text)  # stated once, whole
        assert answer.lower() not in question.lower() and doc.answer_text == answer
        assert [len(s) for s in doc.segments] == [64, 64, 64] and doc.fact_segments == sorted(
            doc.fact_segments
        )


def test_held_out_text_is_never_trained_on(books):
    rng = random.Random(0)
    for part_train, part_held in zip(books.parts["train"], books.parts["held_out"], strict=True):
        assert part_held and part_train and part_held[:200] not in part_train
    held = books.sentences("held_out", rng, 2000)
    assert all(any(s in part for part in books.parts["held_out"]) for s in held)
    assert not any(s in part for s in held if len(s) > 80 for part in books.parts["train"])


def test_a_books_recipe_trains_and_measures_held_out_recall(tmp_path):
    recipe = Path(__file__).parents[3] / "jobs" / "configs" / "train_ci.yaml"
    cfg = TrainConfig.from_yaml(recipe, out_dir=str(tmp_path), task="books", text_files=[str(b) for b in BOOKS],
                                curriculum={0: 2}, random_lengths=True, max_steps=2, eval_every=1,
                                eval_segments=[1, 2], batch_size=2, lm_weight=0.0)  # fmt: skip
    train(cfg)
    history = [line for line in (tmp_path / "history.jsonl").read_text().splitlines()]
    assert len(history) == 2 and all('"memory@2"' in h and '"last@2"' in h for h in history)
