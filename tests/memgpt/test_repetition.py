"""Generated prose without loops: the n-gram ban while generating and the tidying after it."""

import pytest
import torch

from memgpt.repetition import NoRepeatInGenerated, PenalizeGenerated, sentences, tidy_prose
from pipeline.notes import RunningNotes

LOOP = "It is a machine learning model that can be trained on a large number of data points. "


def test_a_looping_sentence_is_kept_once_and_the_cut_off_end_dropped():
    looping = "The README shows the main command. " + LOOP * 5 + "It is a machine learning mo"
    assert tidy_prose(looping, cut_off=True) == "The README shows the main command. " + LOOP.strip()
    assert tidy_prose("A model. It is cut at the limit, under", cut_off=True) == "A model."
    assert tidy_prose("A model.\n- It is cut at the limit, under", cut_off=True) == "A model."
    assert tidy_prose("Jane danced. Elizabeth remains with Mrs.", cut_off=True) == "Jane danced."
    cut = "It is a new A.I. model. It is made by the team at the forefront of A."  # "A.I." cut at the limit
    assert tidy_prose(cut, cut_off=True) == tidy_prose(cut + " I", cut_off=True) == "It is a new A.I. model."
    assert tidy_prose("Jane met Mr. Darcy. She said no.", cut_off=True) == "Jane met Mr. Darcy. She said no."


def test_repeats_differing_in_case_spacing_or_punctuation_are_repeats():
    text = 'He said "Go!" She went home.\nShe  went home! she went home. Then she slept.'
    assert tidy_prose(text) == 'He said "Go!" She went home.\nThen she slept.'  # the line break is kept


def test_near_repeats_that_add_no_content_word_are_dropped():
    """What the n-gram ban turned a loop into, in a real summary of a Moby-Dick chapter: one line a word
    longer each time, never a new word."""
    summary = (
        "The ship.\nThe people:\nThe Captain, the Captain of the ship.\nA pirate, a pirate.\n"
        "The Captain of the Captain, a pirate, a\nCaptain of the ship, a pirate\nThe Captain who is a pirate,\n"
        "The Captain is a pirate."
    )
    assert tidy_prose(summary) == (
        "The ship.\nThe people:\nThe Captain, the Captain of the ship.\nA pirate, a pirate."
    )


def test_an_unfinished_end_stays_when_the_model_ended_it():
    notes = "People:\n- Elizabeth visits Pemberley\n- Darcy writes a letter"
    assert tidy_prose(notes) == notes  # ended by the model (EOS), not by the limit
    assert [s for s, _ in sentences(notes)] == notes.splitlines()


def test_text_without_repeats_is_unchanged():
    text = "Inspector Halvorsen keeps the ledger. He moved it to Tromsø.\n\nThe winter was long."
    assert tidy_prose(text) == text
    assert tidy_prose("an unfinished note without a full stop") == "an unfinished note without a full stop"
    assert [s for s, _ in sentences(text)] == [
        "Inspector Halvorsen keeps the ledger.",
        "He moved it to Tromsø.",
        "The winter was long.",
    ]


def test_the_ban_counts_generated_tokens_only():
    ban = NoRepeatInGenerated(ngram_size=3)
    prompt = torch.tensor([[1, 2, 3], [5, 6, 7]])
    scores = torch.zeros(2, 10)
    assert not torch.isinf(ban(prompt, scores)).any()  # the first call marks where generation starts
    # row 0 generated 5 6 7 5 6: 7 would repeat "5 6 7"; row 1 generated 9 9 5 6, and only its prompt
    # holds "5 6 7": 7 stays allowed (a summary may copy its passage)
    ids = torch.tensor([[1, 2, 3, 5, 6, 7, 5, 6], [5, 6, 7, 9, 9, 9, 5, 6]])
    out = ban(ids, scores)
    assert torch.isinf(out[0]).tolist() == [i == 7 for i in range(10)]
    assert not torch.isinf(out[1]).any()


def test_the_ban_never_leaves_a_row_without_a_choice():
    ban = NoRepeatInGenerated(ngram_size=2)
    ban(torch.tensor([[0]]), torch.zeros(1, 4))
    only_seven = torch.full((1, 8), float("-inf"))
    only_seven[0, 7] = 0.0  # what a grammar allows
    assert ban(torch.tensor([[0, 7, 3, 7]]), only_seven)[0, 7] == 0.0  # "7 3" then "7": 7 stays allowed
    with pytest.raises(ValueError):
        NoRepeatInGenerated(ngram_size=1)


def test_the_penalty_lowers_generated_tokens_only():
    penalize = PenalizeGenerated(penalty=2.0)
    scores = torch.tensor([[4.0, -4.0, 4.0, float("-inf")]])
    assert torch.equal(penalize(torch.tensor([[0, 1]]), scores), scores)  # the prompt's tokens: unchanged
    out = penalize(torch.tensor([[0, 1, 2, 1, 3]]), scores)  # generated 2, 1, 3
    assert out.tolist() == [[4.0, -8.0, 2.0, float("-inf")]]
    with pytest.raises(ValueError):
        PenalizeGenerated(penalty=0.5)


# the README's section "The model": unconstrained, SmolLM2's notes of it loop ("The model is capable of
# learning from the data and to adapt to new data." again and again)
README_SECTION = '## The model\n\n```python\nfrom memgpt import MemGPT, load_tokenizer\n\ntokenizer = load_tokenizer()  # the shipped byte-level BPE tokenizer (offline)\nmodel = MemGPT()  # a small default config, random weights\ninput_ids = tokenizer.encode("The history of NLP is", return_tensors="pt")\noutput = model.generate(input_ids, max_length=50)  # long inputs are read chunk by chunk into memory first\n# transformers\' own generation loop runs over the memory: GenerationConfig, logits_processor, stopping_criteria,\n# streamer, repetition_penalty, output_scores / return_dict_in_generate all apply\n```\n\nFour memories behind one interface: **slots** (trainable, the default), **kv** (training-free, for\npretrained models from the hub; positions stay inside the backbone\'s window however long the book),\n**retrieval** (kv plus a host-memory store of everything evicted, brought back when a query needs it: on\nSmolLM2 it finds a passkey in repeated filler at every length measured, 1k to 128k tokens, but answers none of\nthe questions about facts stated once in a real novel) and **archival** (kv plus the text of everything read:\nthe sentences that fit a question best, by BM25, are read again right before it). On facts stated once in real\nbook text and asked in other words, archival memory is the one that answers past the span the model attends to\n(2 or 3 of 16 at 16k, 32k and 128k tokens, where kv, retrieval and a truncated window answer none; full\nattention answers 2 of 16 at 4k), reading at kv\'s speed with 4 bytes of host memory a token: its search brings back every sentence needed, and the 135M backbone is the limit (docs/long-context.md).\n`docs/model.md` explains which code is the update `f` and the read `g`, what each costs and when to use which.'


def repeated_4grams(ids: list[int]) -> int:
    grams = [tuple(ids[i : i + 4]) for i in range(len(ids) - 3)]
    return len(grams) - len(set(grams))


@pytest.mark.slow
def test_the_ban_stops_a_real_loop(smollm2):
    """SmolLM2 loops on this prompt without the ban and writes no 4-gram twice with it (2 x 96 tokens: about
    10 s on 2 idle cores)."""
    notes = RunningNotes(smollm2, max_new_tokens=96)
    ids = torch.tensor([notes.prompt("", README_SECTION)])
    free, banned = (
        smollm2.generate(ids, max_new_tokens=96, do_sample=False, logits_processor=processors)[
            0, ids.shape[1] :
        ]
        for processors in (None, [NoRepeatInGenerated()])
    )
    assert repeated_4grams(free.tolist()) > 10  # the looping case
    assert repeated_4grams(banned.tolist()) == 0
