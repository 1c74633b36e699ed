"""Running notes: a memory kept as text, `M_t = f(M_{t-1}, x_t)`, rewritten by the model every few chunks.

The notes of a document are a short summary of what it has said so far, names first. Every few chunks the
model reads its notes and the chunks since the last update and writes new notes (the incremental-updating
strategy of book-length summarisation: BooookScore, Chang et al. 2024). The notes are bounded by
`max_new_tokens`, so each update costs the same however long the book is. They are read back by being put in
a prompt (the facts prompt of every chunk, so "he" in chapter 20 can resolve to a name from chapter 2), and the
last notes are the document's summary.

Unlike the tensor memories (`memgpt/slots.py`, `memgpt/kv.py`) the state is a string a person can read, and it
is written by generation, not by a forward pass; it complements them (facts are still generated from the kv
memory) rather than replacing them.
"""

import torch
from transformers import LogitsProcessorList

from memgpt.repetition import no_loops, tidy_prose

NOTES_INSTRUCTION = "Write a short summary of the text below. Name the people and say what they do."


class RunningNotes:
    """Notes for a batch of documents, updated by the model through its chat template."""

    def __init__(self, model, max_new_tokens: int = 96, instruction: str = NOTES_INSTRUCTION):
        if not getattr(model.tokenizer, "chat_template", None):
            raise ValueError("running notes need an instruct model whose tokenizer has a chat template")
        self.model, self.max_new_tokens, self.instruction = model, max_new_tokens, instruction

    def prompt(self, notes: str, passage: str) -> list[int]:
        """The update prompt: the notes so far and the new passage, in the model's chat template."""
        so_far = f"Summary so far: {notes}\n\n" if notes else ""
        content = f"{self.instruction}\n\n{so_far}Text:\n{passage}"
        messages = [{"role": "user", "content": content}]
        tok = self.model.tokenizer
        text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return tok(text, add_special_tokens=False)["input_ids"]

    @torch.inference_mode()
    def update(
        self, notes: list[str], passages: list[str], logits_processor=None
    ) -> tuple[list[str], list[int]]:
        """New notes per document from the old ones and the passages read since, and the tokens generated.

        Only the text is read: the update starts from an empty memory, so what the notes say comes from the
        notes and the passage, and the cost stays bounded. `logits_processor` constrains what is written.
        The notes never loop: no n-gram of them is written twice, and a repeated or unfinished last sentence
        is dropped (`memgpt/repetition.py`)."""
        prompts = [self.prompt(n, p) for n, p in zip(notes, passages, strict=True)]
        # after the grammar, so they see which tokens it left
        processors = LogitsProcessorList([*(logits_processor or []), *no_loops()])
        replies = self.model.reply(prompts, max_new_tokens=self.max_new_tokens, logits_processor=processors)
        counts = [len(r.ids) for r in replies]
        notes = [tidy_prose(r.text, n >= self.max_new_tokens) for r, n in zip(replies, counts, strict=True)]
        return notes, counts
