"""MemGPTConfig: everything that defines a MemGPT besides its weights."""

import json
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from .memory import memory_kind

CONFIG_NAME = "config.json"


def default_backbone() -> dict[str, Any]:
    """A small Llama-style backbone sized for the shipped 4096-token tokenizer."""
    return {
        "model_type": "llama",
        "vocab_size": 4096,
        "hidden_size": 256,
        "intermediate_size": 688,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "num_key_value_heads": 4,
        "max_position_embeddings": 2048,
        "tie_word_embeddings": True,
        "bos_token_id": 0,
        "eos_token_id": 0,
        "pad_token_id": 1,
    }


@dataclass(frozen=True)
class MemGPTConfig:
    """A backbone (hub id, local path or an HF config dict) plus the memory that reads and writes it.

    slots: `num_slots` learned vectors per document, read and written beside every chunk.
    kv: at most `kv_budget` key/value entries per layer (None = keep everything, exact);
        `kv_sinks` first entries and `kv_recent` last entries are always kept, the rest by attention received;
        `kv_positions="cache"` keeps every position the backbone sees below kv_budget + chunk_size.
    retrieval: kv memory plus every evicted entry kept in host memory in blocks of `retrieval_block`; every layer
        attends to the `retrieval_topk` blocks whose best key fits its queries best (chosen by each chunk, and
        by every `retrieval_every`-th generated token).
    archival: kv memory plus every token read, kept as text; before a prompt, the `archive_topk` sentences
        that fit it best by BM25 (each cut at `archive_passage` tokens) are read again, fresh; while answering,
        `archive_copy_bias` is added to the logits of their words (0: none), and the kv entries kept for the
        attention they received are hidden unless `archive_attend_heavy`.
    """

    backbone: str | dict[str, Any] = field(default_factory=default_backbone)
    memory: str = "slots"
    chunk_size: int = 128
    num_slots: int = 16
    bptt_depth: int = 4
    kv_budget: int | None = 512
    kv_sinks: int = 4
    kv_recent: int = 128
    kv_decay: float = 1.0  # per chunk, on the attention an entry has received (1: H2O's plain sum)
    kv_positions: str = "cache"  # "cache": places among the kept (re-rotated); "absolute": document index
    # on SmolLM2, 16 blocks of 32 found a passkey at 16k tokens where 4 blocks of 128 did not
    retrieval_block: int = 32
    retrieval_topk: int = 16
    retrieval_every: int = 8  # generated tokens choose their blocks anew every N tokens (1: every token)
    archive_passage: int = 96  # the most tokens of one recalled sentence
    archive_topk: int = 4
    archive_min_score: float = (
        0.5  # a sentence fitting the prompt less than half as well as the best is not recalled
    )
    # on SmolLM2, single facts in real text: 24 of 30 answered with 2.0, 20 without (docs/long-context.md)
    archive_copy_bias: float = 2.0
    # on SmolLM2, single facts in real text: 24 of 30 answered without the heavy entries, 20 with them
    archive_attend_heavy: bool = False
    tokenizer: str | None = None  # None: the backbone's, or the shipped default for a config backbone
    memory_options: dict[str, Any] = field(default_factory=dict)  # a registered memory's own options
    adapter: dict[str, Any] | None = (
        None  # LoRA on the backbone (peft LoraConfig fields), saved as adapter weights
    )
    base_model: str | None = None  # the pretrained model a saved, fine-tuned backbone was trained from

    def __post_init__(self) -> None:
        kind = memory_kind(self.memory)
        if self.chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {self.chunk_size}")
        if self.num_slots < 1:
            raise ValueError(f"num_slots must be >= 1, got {self.num_slots}")
        if self.bptt_depth < 1:
            raise ValueError(f"bptt_depth must be >= 1, got {self.bptt_depth}")
        kind.check(self)
        self.options()

    def options(self) -> Any:
        """The memory's own options (its `MemoryKind.options` dataclass), or None if it has none."""
        kind = memory_kind(self.memory)
        if kind.options is None:
            if self.memory_options:
                raise ValueError(f"memory={self.memory!r} takes no memory_options, got {self.memory_options}")
            return None
        try:
            return kind.options(**self.memory_options)
        except TypeError as e:
            raise ValueError(f"memory_options do not fit memory={self.memory!r}: {e}") from None

    @property
    def memory_size(self) -> int | None:
        """Entries the memory holds per document: slots, or kv entries per layer (None: unbounded)."""
        return memory_kind(self.memory).size(self)

    @property
    def prompt_room(self) -> int:
        """Positions the memory puts between its kv entries and a prompt: retrieved blocks, recalled passages."""
        return memory_kind(self.memory).prompt_room(self)

    def replace(self, **changes: Any) -> "MemGPTConfig":
        unknown = set(changes) - {f.name for f in fields(self)}
        if unknown:
            raise TypeError(f"unknown MemGPTConfig option(s): {sorted(unknown)}")
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {"model_type": "memgpt", **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "MemGPTConfig":
        data = {k: v for k, v in data.items() if k != "model_type"}
        if data.get("kv_positions") in ("auto", "rolling"):  # earlier names: "cache" is what both became
            data["kv_positions"] = "cache"
        data.pop("retrieval_reps", None)  # earlier: blocks scored by a few keys; every key is scored now
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown MemGPTConfig field(s) {sorted(unknown)}")
        return cls(**data)

    def save(self, directory: str | Path) -> None:
        Path(directory, CONFIG_NAME).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, directory: str | Path) -> "MemGPTConfig":
        return cls.from_dict(json.loads(Path(directory, CONFIG_NAME).read_text()))
