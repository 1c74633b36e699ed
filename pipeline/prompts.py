"""Prompts for facts and summaries: one place decides between a chat template and the trained task format.

chat: instruct backbones with kv memory (models from the hub) get the instruction through the tokenizer's chat
      template, with the chunk's own token ids spliced in unchanged.
task: the project's slot models get the plain markers they were trained on: `<chunk>\nFacts:\n`, `Summary:\n`.
"""

from dataclasses import dataclass, field

STYLES = ("auto", "chat", "task")
_SLOT = "\x00CHUNK\x00"  # stands for the chunk inside a rendered chat template
_NOTES = "\x00NOTES\x00"  # stands for the running notes (pipeline/notes.py) inside it
NOTES_HEADING = "Notes on the text so far:\n"


@dataclass(frozen=True)
class PromptConfig:
    style: str = field(default="auto", metadata={"help": "auto: chat for a training-free memory whose tokenizer "
                                                 "has a chat template, else task", "choices": STYLES})  # fmt: skip
    facts_marker: str = field(
        default="\nFacts:\n", metadata={"help": "task style: after a chunk, before its facts"}
    )
    summary_marker: str = field(default="Summary:\n", metadata={"help": "task style: before the summary"})
    facts_instruction: str = field(
        default="List the facts stated in the passage below, one per line, as: subject | relation | object. "
        "Resolve pronouns to the names you have read before.",
        metadata={"help": "chat style: what a chunk's facts prompt asks"},
    )
    facts_instruction_after: str = field(
        default="List the facts stated in the text you have just read, one per line, as: subject | relation | "
        "object. Resolve pronouns to the names you have read before.",
        metadata={
            "help": "chat style, facts_pass shared: what follows a chunk read into memory to ask for its facts"
        },
    )
    summary_instruction: str = field(
        default="Summarize the document you have just read in a few sentences.",
        metadata={"help": "chat style: what the summary prompt asks"},
    )

    def __post_init__(self):
        if self.style not in STYLES:
            raise ValueError(f"prompt style must be one of {STYLES}, got {self.style!r}")


@dataclass(frozen=True)
class NotesConfig:
    """Running notes (pipeline/notes.py): a summary-so-far the model rewrites every `every` chunks."""

    every: int | None = field(default=None, metadata={"help": "update the running notes every K chunks; 0: off; "
                                                      "none: 2 where they are the summary (summary_from notes, "
                                                      "chat style), else off"})  # fmt: skip
    max_new_tokens: int = field(default=96, metadata={"help": "the notes' bound in tokens: an update costs the "
                                                      "same however long the book"})  # fmt: skip
    instruction: str = field(default="Write a short summary of the text below. Name the people and say what "
                             "they do.", metadata={"help": "what the model is asked to write"})  # fmt: skip

    def __post_init__(self):
        if (self.every is not None and self.every < 0) or self.max_new_tokens < 1:
            raise ValueError(f"notes.every must be >= 0 and notes.max_new_tokens >= 1, got {self}")

    def every_for(self, style: str, summary_from: str = "notes") -> int:
        if self.every is not None:
            return self.every
        return 2 if style == "chat" and summary_from == "notes" else 0


def choose_style(config: PromptConfig, tokenizer, memory: str) -> str:
    """The prompt style for this model: the one decision point between chat templates and task markers."""
    if config.style != "auto":
        return config.style
    has_template = bool(getattr(tokenizer, "chat_template", None))
    from memgpt import memory_kind  # here: the tables' processes import this module without torch

    trained = memory_kind(memory).trained  # a trained memory reads the task format it was trained on
    return "chat" if not trained and has_template else "task"


class Prompts:
    """Token ids of the facts prompt around a chunk and of the summary prompt, in the chosen style."""

    def __init__(self, tokenizer, config: PromptConfig, memory_kind: str):
        self.tokenizer, self.config = tokenizer, config
        self.style = choose_style(config, tokenizer, memory_kind)
        if self.style == "chat" and not getattr(tokenizer, "chat_template", None):
            raise ValueError("prompt style 'chat' needs a tokenizer with a chat template")
        if self.style == "chat":
            rendered = self._render(f"{_NOTES}{config.facts_instruction}\n\n{_SLOT}")
            head, _, rest = rendered.partition(_NOTES)
            middle, _, after = rest.partition(_SLOT)
            self._head, self._before, self._after = map(self._encode, (head, middle, after))
            self._summary = self._encode(self._render(config.summary_instruction))
        else:
            self._head, self._before, self._after = [], [], self._encode(config.facts_marker)
            self._summary = self._encode(config.summary_marker)

    @property
    def facts_overhead(self) -> int:
        """Tokens the facts prompt adds to a chunk (without notes)."""
        return len(self._head) + len(self._before) + len(self._after)

    def facts(self, chunk_ids: list[int], notes: str = "") -> list[int]:
        """The facts prompt of a chunk; with running notes, they come before the instruction."""
        if self.style != "chat" and notes:
            raise ValueError("running notes need the chat prompt style")
        notes_ids = self._encode(f"{NOTES_HEADING}{notes}\n\n") if notes else []
        return self._head + notes_ids + self._before + list(chunk_ids) + self._after

    def facts_after(self, notes: str = "") -> list[int]:
        """What follows a chunk the memory has just read to ask for its facts (facts_pass shared): a chat turn
        of the instruction alone (with the running notes), or the task marker."""
        if self.style != "chat":
            if notes:
                raise ValueError("running notes need the chat prompt style")
            return list(self._after)
        notes_text = f"{NOTES_HEADING}{notes}\n\n" if notes else ""
        return self._encode("\n\n" + self._render(notes_text + self.config.facts_instruction_after))

    def summary(self) -> list[int]:
        return list(self._summary)

    def _encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _render(self, content: str) -> str:
        return self.tokenizer.apply_chat_template(
            [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True
        )
