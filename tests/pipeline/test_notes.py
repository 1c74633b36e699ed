"""Running notes on the real SmolLM2: bounded, per document in a batch, built from the notes and the passage."""

import pytest

from memgpt import MemGPT
from memgpt.padding import right_pad
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


@pytest.mark.slow
def test_notes_from_the_chunks_own_read_name_each_documents_people(smollm2):
    """facts_pass shared: the notes are written from the cache the chunk's read left, nothing read again."""
    notes = RunningNotes(smollm2, max_new_tokens=40)

    def read(passages: list[str]):
        ids, mask = right_pad([smollm2.tokenizer.encode(p) for p in passages], 0)
        return smollm2.step_keeping_cache(smollm2.init_state(len(passages)), ids, mask)[1]

    new, counts = notes.update_after(read(PASSAGES), ["", ""])
    assert all(0 < n <= 40 for n in counts)
    assert "Halvorsen" in new[0] and "Halvorsen" not in new[1]
    assert "Vasquez" in new[1] and "Vasquez" not in new[0]
    alone, _ = notes.update_after(read(PASSAGES).select([1]), [""])  # the other row dropped: the same notes
    assert alone[0] == new[1]
    text = smollm2.tokenizer.decode(notes.prompt_after("Halvorsen keeps the ledger."))
    assert (
        text.startswith("\n\n")
        and "Summary so far: Halvorsen keeps the ledger." in text
        and "Text:" not in text
    )


def test_the_update_prompt_holds_the_notes_so_far_and_the_new_passage(smollm2):
    notes = RunningNotes(smollm2)
    text = smollm2.tokenizer.decode(notes.prompt("Halvorsen keeps the ledger.", "Years later he moved it."))
    assert "Summary so far: Halvorsen keeps the ledger." in text and "Text:\nYears later he moved it." in text
    assert "Summary so far" not in smollm2.tokenizer.decode(notes.prompt("", "x"))


def test_notes_need_a_chat_template():
    with pytest.raises(ValueError, match="chat template"):
        RunningNotes(MemGPT(device="cpu"))
