"""`jobs.extract --save-states` then `jobs.ask`: a book read once is asked later, from its saved memory."""

import io

import pandas as pd
import pytest
import torch
from pipeline_support import corpus_file

from jobs import ask, extract
from memgpt import MemGPT
from pipeline.chunking import chunk_text

FACT = "Inspector Halvorsen has the badge number 4821."
QUESTION = "What is Inspector Halvorsen's badge number?"


@pytest.fixture(scope="module")
def saved(tmp_path_factory, ray_session):
    """One excerpt of a real book with a planted fact, read by the default model with its state kept."""
    book = corpus_file("pride_and_prejudice.txt").read_text(encoding="utf-8")
    root = tmp_path_factory.mktemp("ask")
    (root / "corpus").mkdir()
    text = f"{book[30000:31500]} {FACT} {book[31500:33000]}"
    (root / "corpus" / "book.txt").write_text(text, encoding="utf-8")
    argv = [
        "--input",
        str(root / "corpus"),
        "--output",
        str(root / "out"),
        "--no-facts",
        "--notes-every",
        "0",
    ]
    assert extract.main([*argv, "--save-states"]) == 0
    return root / "out", text


@pytest.mark.slow
def test_states_are_listed_in_the_manifest_and_survive_a_rerun(saved):
    out, _ = saved
    manifest = pd.read_parquet(out / "manifest")
    state = out / "states" / "book.txt.safetensors"
    assert manifest["state"].tolist() == [str(state)] and state.is_file()
    before = state.stat().st_mtime_ns
    assert extract.main(["--input", str(out.parent / "corpus"), "--output", str(out), "--no-facts",
                         "--notes-every", "0", "--save-states"]) == 0  # fmt: skip
    assert state.stat().st_mtime_ns == before  # finished: not read again, its state kept as it was


@pytest.mark.slow
def test_a_planted_fact_is_recalled_from_the_saved_state(saved, capsys):
    out, _ = saved
    assert ask.main(["--state", str(out / "states" / "book.txt.safetensors"), QUESTION]) == 0
    captured = capsys.readouterr()
    assert "4821" in captured.out
    assert "book.txt: " in captured.err and "tokens read" in captured.err


@pytest.mark.slow
def test_the_saved_state_answers_as_the_state_kept_in_process(saved, smollm2_path):
    """The book read again in this process, as the job reads it, gives the same answer as its saved state."""
    out, text = saved
    model, loaded, info = ask.load(out / "states" / "book.txt.safetensors", None)
    fresh = MemGPT.from_pretrained(smollm2_path, **info["options"]).eval()
    chunks = chunk_text(text, fresh.tokenizer, fresh.config.chunk_size)
    state = fresh.init_state(1)
    with torch.inference_mode():
        for c in chunks:  # chunk by chunk, as the job's actor reads
            state = fresh.step(state, torch.tensor([c.token_ids]))
    assert torch.equal(state.n_read, loaded.n_read.to(state.n_read.device))
    answers = [ask.ask(m, s, QUESTION, 16, out=io.StringIO()) for m, s in ((model, loaded), (fresh, state))]
    assert answers[0] == answers[1] and "4821" in answers[0]


def test_a_state_of_another_model_is_refused_in_one_line(saved, tmp_path, smollm2_path, capsys):
    other = MemGPT(device="cpu")  # the small default config: slot memory
    other.init_state(1).save(tmp_path / "other.safetensors")
    code = ask.main(["--state", str(tmp_path / "other.safetensors"), "--model", str(smollm2_path), QUESTION])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1
    assert err[0].startswith("jobs.ask: error: ValueError: ") and "was not written by model" in err[0]
    assert ask.main(["--state", str(tmp_path / "missing.safetensors"), QUESTION]) == 1
    assert "memory state file not found" in capsys.readouterr().err


PEOPLE = {
    "Inspector Halvorsen": [
        "Inspector Halvorsen keeps the ledger in the observatory of Bergen.",
        "Inspector Halvorsen moved the ledger to the lighthouse at Tromsø.",
        "Inspector Halvorsen smiled.",
    ],
    "Mary Hale": ["Mary Hale sold the mill."],
    "Tom Hale": ["Tom Hale left."],
}


@pytest.mark.parametrize(
    "question, after",
    [
        # the latest fact sharing the question's words, not the latest of all
        (
            "Where does Inspector Halvorsen keep the ledger?",
            "Inspector Halvorsen moved the ledger to the lighthouse at Tromsø.",
        ),
        (
            "What did Halvorsen do?",
            "Inspector Halvorsen smiled.",
        ),  # a unique last name; no shared word: the latest
        ("Who is Hale?", None),  # two people of that name: neither
        ("Where is the ledger?", None),  # no one named
    ],
)
def test_a_question_is_followed_by_the_fact_of_the_person_it_names(question, after):
    prompt = ask.with_people(question, PEOPLE)
    assert prompt == (question if after is None else f"{question}\n\nThe latest the book says of it: {after}")
