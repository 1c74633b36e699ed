"""Archival memory on SmolLM2-135M-Instruct: a fact stated once inside a novel, long evicted, is answered."""

import pytest
import torch

from benchmarks.planted_text import CORPUS, book_text, sentence_ends
from memgpt import MemGPT

FACT = "Miss Dunstable first went to sea in 1783, when hardly more than a boy."
QUESTION = "In which year did Miss Dunstable begin sailing?"  # other words than the fact's


def novel_with_fact(tokenizer, n_tokens: int, depth: float) -> torch.Tensor:
    text = book_text("pride_and_prejudice.txt")[200_000:]
    text = text[: int(n_tokens * 5)]  # more than enough: P&P has about 4.2 characters a token
    at = min(sentence_ends(text), key=lambda e: abs(e - depth * len(text)))
    ids = tokenizer.encode(text[:at] + FACT + " " + text[at:], add_special_tokens=False)
    return torch.tensor(ids[:n_tokens])


def answer_after_novel(smollm2, n_tokens: int, **options) -> tuple[int, int, str]:
    """Archival memory reads `n_tokens` of a novel with FACT stated once early, then is asked QUESTION: the
    tokens read, the memory's size and the answer."""
    tok = smollm2.tokenizer
    book = novel_with_fact(tok, n_tokens, depth=0.15)
    assert tok.decode(book).count("Miss Dunstable") == 1
    prompt = tok.apply_chat_template([{"role": "user", "content": QUESTION}], add_generation_prompt=True,
                                     return_tensors="pt", return_dict=True)["input_ids"]  # fmt: skip
    model = MemGPT.from_backbone(smollm2.backbone, tokenizer=tok, memory="archival", **options)
    with torch.inference_mode():
        state = model.read([book])
        out = model.generate(prompt, memory=state, max_new_tokens=20, do_sample=False)
    answer = tok.decode(out[0, prompt.shape[1] :], skip_special_tokens=True)
    return int(state.n_read[0]), state.size(), answer


@pytest.mark.slow
@pytest.mark.skipif(not CORPUS.is_dir(), reason="needs the books in ../shared/corpus")
def test_a_fact_stated_once_at_twice_the_span_attended_is_answered(smollm2):
    options = {"chunk_size": 256, "kv_budget": 512, "kv_recent": 128}
    span = options["chunk_size"] + options["kv_budget"]  # what the backbone attends to at once, kv memory's
    n_read, size, answer = answer_after_novel(smollm2, 2 * span + 256, **options)
    assert n_read >= 2 * span and size == options["kv_budget"]
    assert "1783" in answer


@pytest.mark.long  # about a minute on 2 cores: the long tier
@pytest.mark.skipif(not CORPUS.is_dir(), reason="needs the books in ../shared/corpus")
def test_a_fact_stated_once_at_twice_the_window_is_answered(smollm2):
    options = {"chunk_size": 512, "kv_budget": 1024, "kv_recent": 256}
    window = smollm2.backbone.config.max_position_embeddings
    n_read, size, answer = answer_after_novel(smollm2, 2 * window + 256, **options)
    assert n_read >= 2 * window and size == options["kv_budget"]
    assert "1783" in answer


@pytest.mark.slow
@pytest.mark.skipif(not CORPUS.is_dir(), reason="needs the books in ../shared/corpus")
def test_in_a_chat_the_last_user_turn_asks_and_role_words_are_not_text(smollm2):
    tok = smollm2.tokenizer
    model = MemGPT.from_backbone(smollm2.backbone, tokenizer=tok, memory="archival", chunk_size=256,
                                 kv_budget=512, kv_recent=128)  # fmt: skip
    turns = [{"role": "user", "content": "Please remember this: my sister's boat is called the Silver Heron."},
             {"role": "assistant", "content": "I will remember it."}]  # fmt: skip
    for paragraph in book_text("moby_dick.txt")[300_000:306_000].split("\n\n")[:6]:
        turns += [
            {"role": "user", "content": " ".join(paragraph.split())},
            {"role": "assistant", "content": "Yes."},
        ]
    turns.append({"role": "user", "content": "What is the name of my sister's boat?"})
    ids = tok.apply_chat_template(turns, return_dict=True)["input_ids"]
    header = tok.encode("<|im_start|>assistant\n", add_special_tokens=False)
    with torch.inference_mode():
        state = model.read([torch.tensor(ids)])
    recalled = tok.decode(model.memory.recall(state.tensors, 0, torch.tensor(header)))
    assert "my sister's boat is called the Silver Heron." in recalled
    assert "What is the name" not in recalled  # the question is what asks, not what is recalled
    assert "assistant" not in recalled.replace("AI assistant", "") and "\nuser" not in recalled
