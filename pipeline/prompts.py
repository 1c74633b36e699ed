"""Prompts for facts and summaries: one place decides between a chat template and the trained task format.

chat: instruct backbones with kv memory (models from the hub) get the instruction through the tokenizer's chat
      template, with the chunk's own token ids spliced in unchanged.
task: the project's slot models get the plain markers they were trained on: `<chunk>\nFacts:\n`, `Summary:\n`.
"""

from dataclasses import dataclass

STYLES = ("auto", "chat", "task")
_SLOT = "\x00CHUNK\x00"  # stands for the chunk inside a rendered chat template


@dataclass(frozen=True)
class PromptConfig:
    style: str = "auto"  # auto: chat when the memory is kv and the tokenizer has a chat template, else task
    facts_marker: str = "\nFacts:\n"
    summary_marker: str = "Summary:\n"
    facts_instruction: str = (
        "List the facts stated in the passage below, one per line, as: subject | relation | object. "
        "Resolve pronouns to the names you have read before."
    )
    summary_instruction: str = "Summarize the document you have just read in a few sentences."

    def __post_init__(self):
        if self.style not in STYLES:
            raise ValueError(f"prompt style must be one of {STYLES}, got {self.style!r}")


def choose_style(config: PromptConfig, tokenizer, memory_kind: str) -> str:
    """The prompt style for this model: the one decision point between chat templates and task markers."""
    if config.style != "auto":
        return config.style
    has_template = bool(getattr(tokenizer, "chat_template", None))
    return "chat" if memory_kind in ("kv", "retrieval") and has_template else "task"


class Prompts:
    """Token ids of the facts prompt around a chunk and of the summary prompt, in the chosen style."""

    def __init__(self, tokenizer, config: PromptConfig, memory_kind: str):
        self.tokenizer, self.config = tokenizer, config
        self.style = choose_style(config, tokenizer, memory_kind)
        if self.style == "chat" and not getattr(tokenizer, "chat_template", None):
            raise ValueError("prompt style 'chat' needs a tokenizer with a chat template")
        if self.style == "chat":
            self._before, self._after = self._chat_parts(f"{config.facts_instruction}\n\n{_SLOT}")
            self._summary = sum(self._chat_parts(config.summary_instruction), [])
        else:
            self._before, self._after = [], self._encode(config.facts_marker)
            self._summary = self._encode(config.summary_marker)

    @property
    def facts_overhead(self) -> int:
        """Tokens the facts prompt adds to a chunk."""
        return len(self._before) + len(self._after)

    def facts(self, chunk_ids: list[int]) -> list[int]:
        return self._before + list(chunk_ids) + self._after

    def summary(self) -> list[int]:
        return list(self._summary)

    def _encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _chat_parts(self, content: str) -> tuple[list[int], list[int]]:
        """Token ids of the rendered template before and after the chunk slot (all of it before, if none)."""
        rendered = self.tokenizer.apply_chat_template(
            [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True
        )
        before, _, after = rendered.partition(_SLOT)
        return self._encode(before), self._encode(after)
