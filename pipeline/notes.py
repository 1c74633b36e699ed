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

from memgpt.lookup import continue_generate
from memgpt.repetition import no_loops, tidy_prose

NOTES_INSTRUCTION = "Write a short summary of the text below. Name the people and say what they do."
NOTES_INSTRUCTION_AFTER = (
    "Write a short summary of the text you have just read. Name the people and say what they do."
)


class RunningNotes:
    """Notes for a batch of documents, updated by the model through its chat template."""

    def __init__(self, model, max_new_tokens: int = 96, instruction: str = NOTES_INSTRUCTION,
                 instruction_after: str = NOTES_INSTRUCTION_AFTER):  # fmt: skip
        if not getattr(model.tokenizer, "chat_template", None):
            raise ValueError("running notes need an instruct model whose tokenizer has a chat template")
        self.model, self.max_new_tokens = model, max_new_tokens
        self.instruction, self.instruction_after = instruction, instruction_after

    def prompt(self, notes: str, passage: str) -> list[int]:
        """The update prompt: the notes so far and the new passage, in the model's chat template."""
        so_far = f"Summary so far: {notes}\n\n" if notes else ""
        return self._chat(f"{self.instruction}\n\n{so_far}Text:\n{passage}")

    def prompt_after(self, notes: str) -> list[int]:
        """What follows a chunk just read into memory to ask for the new notes: a chat turn of the notes so
        far and the instruction, after a blank line that ends the chunk's text."""
        so_far = f"Summary so far: {notes}\n\n" if notes else ""
        return self._chat(f"{so_far}{self.instruction_after}", before="\n\n")

    def _chat(self, content: str, before: str = "") -> list[int]:
        tok = self.model.tokenizer
        text = tok.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True,
                                       tokenize=False)  # fmt: skip
        return tok(before + text, add_special_tokens=False)["input_ids"]

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
        processors = self._processors(logits_processor)
        replies = self.model.reply(prompts, max_new_tokens=self.max_new_tokens, logits_processor=processors)
        return self._tidied(replies)

    @torch.inference_mode()
    def update_after(self, after, notes: list[str], logits_processor=None) -> tuple[list[str], list[int]]:
        """New notes from the cache a chunk's read left (`after`, a `ChunkCache` of the documents due): the
        memory of the text before and the chunk, then the notes so far and the instruction. Nothing is read
        again; the same processors and tidying as `update`."""
        rows, _ = continue_generate(
            self.model, after, [self.prompt_after(n) for n in notes], [[] for _ in notes],
            self.max_new_tokens, processors=self._processors(logits_processor),
        )  # fmt: skip
        return self._tidied(self.model.replies(rows))

    def _processors(self, logits_processor) -> LogitsProcessorList:
        # after the grammar, so they see which tokens it left
        return LogitsProcessorList([*(logits_processor or []), *no_loops()])

    def _tidied(self, replies) -> tuple[list[str], list[int]]:
        counts = [len(r.ids) for r in replies]
        notes = [tidy_prose(r.text, n >= self.max_new_tokens) for r, n in zip(replies, counts, strict=True)]
        return notes, counts
