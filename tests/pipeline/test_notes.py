"""Running notes on the real SmolLM2: bounded, per document in a batch, built from the notes and the passage."""

import pytest

from memgpt import MemGPT
from pipeline.notes import RunningNotes

PASSAGES = [
    "Inspector Halvorsen came to Bergen in the spring. He keeps the ledger in the observatory.",
    "Countess Vasquez lives in Zurich with her brother Tomas, who owns a bakery near the lake.",
]


@pytest.mark.slow
def test_notes_are_bounded_and_each_document_keeps_its_own(smollm2):
    notes = RunningNotes(smollm2, max_new_tokens=40)
    new, counts = notes.update(["", ""], PASSAGES)
    assert all(0 < n <= 40 for n in counts)
    assert "Halvorsen" in new[0] and "Halvorsen" not in new[1]
    assert "Vasquez" in new[1] and "Vasquez" not in new[0]
    alone, _ = notes.update([""], PASSAGES[1:])  # a batch changes nothing for a document
    assert alone[0] == new[1]


def test_the_update_prompt_holds_the_notes_so_far_and_the_new_passage(smollm2):
    notes = RunningNotes(smollm2)
    text = smollm2.tokenizer.decode(notes.prompt("Halvorsen keeps the ledger.", "Years later he moved it."))
    assert "Summary so far: Halvorsen keeps the ledger." in text and "Text:\nYears later he moved it." in text
    assert "Summary so far" not in smollm2.tokenizer.decode(notes.prompt("", "x"))


def test_notes_need_a_chat_template():
    with pytest.raises(ValueError, match="chat template"):
        RunningNotes(MemGPT(device="cpu"))
