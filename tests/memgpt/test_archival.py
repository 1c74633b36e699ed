"""Archival memory on a tiny backbone with the shipped tokenizer: the archive, its search, save and load."""

import dataclasses

import pytest
import torch
from tiny import TINY_BACKBONES, tiny

from benchmarks.planted_text import CORPUS, book_text
from memgpt import MemGPT, MemGPTConfig, MemoryState

pytestmark = pytest.mark.skipif(not CORPUS.is_dir(), reason="the tests read book text from ../shared/corpus")

NEEDLE = " Beneath a loose board, Mr. Tregarthen kept a small copper whistle that no one had seen."


def archival_model(**options):
    options = {"kv_budget": 64, "kv_sinks": 4, "kv_recent": 32, "archive_passage": 40, "archive_topk": 2,
               **options}  # fmt: skip
    return tiny("llama", memory="archival", **options)


def book_ids(tokenizer, chars: int, needle_at: float | None = None) -> torch.Tensor:
    text = book_text()[20_000 : 20_000 + chars]
    if needle_at is not None:
        cut = text.find(". ", int(chars * needle_at)) + 1
        text = text[:cut] + NEEDLE + text[cut:]
    return torch.tensor(tokenizer.encode(text, add_special_tokens=False))


def test_the_archive_holds_every_token_read_per_document():
    model = archival_model()
    a, b = book_ids(model.tokenizer, 3000), book_ids(model.tokenizer, 1200)
    with torch.no_grad():
        state = model.read([a, b])
    tokens = state.tensors["host_tokens"]
    assert tokens.device.type == "cpu"
    assert torch.equal(tokens[0, : len(a)].long(), a)
    assert torch.equal(tokens[1, : len(b)].long(), b)
    assert state.size() == 64  # the kv entries stay at the budget


def test_a_question_recalls_the_passage_that_holds_its_words():
    model = archival_model()
    doc = book_ids(model.tokenizer, 6000, needle_at=0.3)
    with torch.no_grad():
        state = model.read([doc])
    question = torch.tensor(model.tokenizer.encode("What did Tregarthen hide under the board?"))
    recalled = model.tokenizer.decode(model.memory.recall(state.tensors, 0, question))
    assert "Tregarthen kept a small copper whistle" in recalled
    assert len(model.memory.recall(state.tensors, 0, question)) <= model.config.prompt_room


@pytest.mark.slow
def test_a_prompt_without_words_queries_the_last_text_read():
    model = archival_model()
    doc = book_ids(model.tokenizer, 6000, needle_at=0.2)
    asked = torch.tensor(model.tokenizer.encode(" Tell me what Tregarthen kept under the loose board."))
    with torch.no_grad():
        state = model.read([torch.cat([doc, asked])])
    recalled = model.tokenizer.decode(model.memory.recall(state.tensors, 0, torch.tensor([0])))
    assert "copper whistle" in recalled


def test_saved_and_loaded_it_generates_the_same_tokens(tmp_path):
    model = archival_model()
    doc = book_ids(model.tokenizer, 4000, needle_at=0.5)
    prompt = torch.tensor([model.tokenizer.encode(" Where is the copper whistle of Tregarthen?")])
    with torch.no_grad():
        state = model.read([doc])
        before = model.generate(prompt, memory=state, max_new_tokens=8, do_sample=False)
        state.save(tmp_path / "book.safetensors")
        loaded = MemoryState.load(tmp_path / "book.safetensors")
        after = model.generate(prompt, memory=loaded, max_new_tokens=8, do_sample=False)
    assert torch.equal(before, after)


def test_documents_in_one_batch_answer_as_they_do_alone():
    model = archival_model()
    a = book_ids(model.tokenizer, 4000, needle_at=0.4)
    b = book_ids(model.tokenizer, 2500)
    prompt = torch.tensor(model.tokenizer.encode(" What did Tregarthen keep?"))
    with torch.no_grad():
        alone = model.generate(prompt[None], memory=model.read([a]), max_new_tokens=6, do_sample=False)
        both = model.generate(
            prompt.expand(2, -1), memory=model.read([a, b]), max_new_tokens=6, do_sample=False
        )
    assert torch.equal(alone[0], both[0])


def test_a_state_of_another_memory_is_refused():
    kv = tiny("llama", memory="kv", kv_budget=64, kv_sinks=4, kv_recent=32)
    with torch.no_grad():
        state = kv.read([torch.arange(2, 200)])
    with pytest.raises(ValueError, match="does not fit this model"):
        archival_model().generate(torch.tensor([[5, 6, 7]]), memory=state, max_new_tokens=2)


def test_passages_that_leave_no_room_in_the_window_are_refused():
    backbone = {**TINY_BACKBONES["llama"], "max_position_embeddings": 1024}
    config = MemGPTConfig(backbone=backbone, memory="archival", kv_budget=512, chunk_size=64, archive_passage=128,
                          archive_topk=4)  # fmt: skip
    with pytest.raises(ValueError, match="recalled passages"):  # 512 + 64 + 4 * (128 + 4) + 16 > 1024
        MemGPT(config, device="cpu")


def test_an_answer_prefers_the_recalled_words_and_starts_with_text():
    model = archival_model(archive_copy_bias=1e4)  # so large that only recalled words can be chosen
    doc = book_ids(model.tokenizer, 6000, needle_at=0.3)
    question = model.tokenizer.encode(" What did Tregarthen hide under the board?")
    with torch.no_grad():
        state = model.read([doc])
        recalled = model.memory.recall(state.tensors, 0, torch.tensor(question))
        reply = model.reply([question], memory=state, max_new_tokens=8)[0]
    words = set(model.tokenizer.encode(model.tokenizer.decode(recalled), add_special_tokens=False))
    assert reply.ids and set(reply.ids) <= words - set(question)
    assert "\n" not in model.tokenizer.decode(reply.ids[:1])  # not a line break, not the end of the reply


def test_a_negative_copy_bias_is_refused():
    with pytest.raises(ValueError, match="archive_copy_bias"):
        archival_model(archive_copy_bias=-1.0)


@pytest.mark.parametrize("attend_heavy", [False, True])
def test_an_answer_from_recalled_passages_attends_to_sinks_and_recent_entries_only(attend_heavy):
    model = archival_model(archive_attend_heavy=attend_heavy)
    doc = book_ids(model.tokenizer, 6000, needle_at=0.3)
    question = model.tokenizer.encode(" What did Tregarthen hide under the board?")
    with torch.no_grad():
        state = model.read([doc])
        kept = state.tensors["mask"][0].nonzero().flatten()
        heavy = kept[4 : len(kept) - 32]  # neither the 4 sinks nor the 32 recent entries
        noisy = dict(state.tensors)
        for name in ("keys", "values"):  # (L, B, H, S, Dh)
            noisy[name] = state.tensors[name].clone()
            noisy[name][:, :, :, heavy] = torch.randn_like(noisy[name][:, :, :, heavy]) * 10
        options = {"max_new_tokens": 6, "output_scores": True, "return_dict_in_generate": True}
        clean = model.generate(torch.tensor([question]), memory=state, do_sample=False, **options)
        changed = model.generate(
            torch.tensor([question]),
            memory=dataclasses.replace(state, tensors=noisy),
            do_sample=False,
            **options,
        )
    assert len(heavy) > 0
    same = torch.allclose(torch.stack(clean.scores), torch.stack(changed.scores), atol=1e-4)
    assert same != attend_heavy


def test_sentences_that_fit_far_worse_than_the_best_are_not_recalled():
    doc = None
    recalled = {}
    for min_score in (0.0, 0.5):
        model = archival_model(archive_min_score=min_score)
        doc = book_ids(model.tokenizer, 6000, needle_at=0.5) if doc is None else doc
        question = torch.tensor(
            model.tokenizer.encode("What was kept under the board by Tregarthen at the house?")
        )
        with torch.no_grad():
            state = model.read([doc])
        recalled[min_score] = model.tokenizer.decode(model.memory.recall(state.tensors, 0, question)).strip()
    assert NEEDLE.strip() in recalled[0.0] and recalled[0.0] != NEEDLE.strip()  # the needle and a weak match
    assert recalled[0.5] == NEEDLE.strip()  # the others share one common word with the question: "house"
