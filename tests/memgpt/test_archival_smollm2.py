"""Archival memory on SmolLM2-135M-Instruct: a fact stated once inside a novel, long evicted, is answered."""

import pytest
import torch

from benchmarks.planted_text import CORPUS, book_text, sentence_ends
from memgpt import MemGPT

FACT = "Miss Dunstable first went to sea in 1783, when hardly more than a boy."
QUESTION = "In which year did Miss Dunstable begin sailing?"  # other words than the fact's


def novel_with_fact(tokenizer, n_tokens: int, depth: float) -> torch.Tensor:
    text = book_text("pride_and_prejudice.txt")[200_000:]
    text = text[: int(n_tokens * 3.6)]
    at = min(sentence_ends(text), key=lambda e: abs(e - depth * len(text)))
    ids = tokenizer.encode(text[:at] + FACT + " " + text[at:], add_special_tokens=False)
    return torch.tensor(ids[:n_tokens])


@pytest.mark.skipif(not CORPUS.is_dir(), reason="needs the books in ../shared/corpus")
def test_a_fact_stated_once_at_twice_the_span_attended_is_answered(smollm2):
    options = {"chunk_size": 256, "kv_budget": 512, "kv_recent": 128}
    span = options["chunk_size"] + options["kv_budget"]  # what the backbone attends to at once, kv memory's
    tok = smollm2.tokenizer
    book = novel_with_fact(tok, 2 * span + 256, depth=0.15)
    assert tok.decode(book).count("Miss Dunstable") == 1
    prompt = tok.apply_chat_template([{"role": "user", "content": QUESTION}], add_generation_prompt=True,
                                     return_tensors="pt", return_dict=True)["input_ids"]  # fmt: skip
    model = MemGPT.from_backbone(smollm2.backbone, tokenizer=tok, memory="archival", **options)
    with torch.inference_mode():
        state = model.read([book])
        out = model.generate(prompt, memory=state, max_new_tokens=20, do_sample=False)
    assert int(state.n_read[0]) >= 2 * span and state.size() == options["kv_budget"]
    assert "1783" in tok.decode(out[0, prompt.shape[1] :], skip_special_tokens=True)
