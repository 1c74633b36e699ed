"""ExtractConfig: everything a knowledge-extraction run depends on, as one frozen dataclass."""

import hashlib
import json
from dataclasses import asdict, dataclass, field

from pipeline.io import ReadConfig
from pipeline.prompts import NotesConfig, PromptConfig

FACT_GRAMMARS = ("auto", "text", "lines", "none")  # pipeline/grammar.py, restated for the same reason


@dataclass(frozen=True)
class ExtractConfig:
    input: str
    output: str
    # a MemGPT folder, an HF model folder, a hub id, "memgpt-small" or "random"; None: SmolLM2-135M-Instruct
    model: str | None = None
    memory: str | None = (
        None  # a registered memory (memgpt.memory_names()); None: the model's own (kv for HF models)
    )
    chunk_size: int | None = None  # tokens per chunk; None: the model's
    kv_budget: int | None = None  # kv entries kept per layer (kv and retrieval memory); None: the model's
    workers: int = 1  # actors, each holding one model
    gpus_per_worker: float = 0.0
    cpus_per_worker: float = 1.0
    batch_size: int = 4  # documents read in lockstep by one actor
    checkpoint_every: int = 8  # save a group's memory state every K chunks (resume a half-read book); 0: off
    facts: bool = True  # extract facts per chunk (the expensive part: one generation per chunk)
    # text: facts copied from the chunk (names, pronouns resolved to names); lines: any words in 3 fields;
    # none: unconstrained; auto: text for the chat prompt style, none for the task style (its models are trained
    # on the format: a grammar would only turn their rare broken lines into parsed junk; pipeline/grammar.py)
    facts_grammar: str = "auto"
    facts_relations: tuple[str, ...] | None = None  # a fixed relation vocabulary; None: free
    facts_max_lines: int = 8  # fact lines per chunk, at most (under a grammar)
    max_new_tokens_facts: int = 192  # room for facts_max_lines lines
    max_new_tokens_summary: int = 96
    save_states: bool = False  # keep each document's final memory under <output>/states/ (for jobs.ask)
    seed: int = 0
    trust_remote_code: bool = False
    run_id: str | None = None  # None: derived from the config, so a re-run of the same job resumes it
    address: str | None = None  # Ray address; None: RAY_ADDRESS or a local in-process Ray
    read: ReadConfig = field(default_factory=ReadConfig)
    prompts: PromptConfig = field(default_factory=PromptConfig)
    notes: NotesConfig = field(default_factory=NotesConfig)

    def __post_init__(self):
        if self.memory is not None:  # imported here: a process that only unpickles a config needs no torch
            from memgpt.memory import memory_kind

            memory_kind(self.memory)
        for name in ("workers", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.checkpoint_every < 0:
            raise ValueError(f"checkpoint_every must be >= 0 (0: off), got {self.checkpoint_every}")
        if self.gpus_per_worker < 0 or self.cpus_per_worker < 0:
            raise ValueError("gpus_per_worker and cpus_per_worker must be >= 0")
        if self.kv_budget is not None and self.kv_budget < 1:
            raise ValueError(f"kv_budget must be >= 1, got {self.kv_budget}")
        if self.chunk_size is not None and self.chunk_size < 8:
            raise ValueError(f"chunk_size must be >= 8, got {self.chunk_size}")
        if self.facts_grammar not in FACT_GRAMMARS:
            raise ValueError(f"facts_grammar must be one of {FACT_GRAMMARS}, got {self.facts_grammar!r}")
        if self.facts_relations is not None:
            object.__setattr__(self, "facts_relations", tuple(self.facts_relations))  # from YAML: a list
            if not self.facts_relations or not all(
                isinstance(r, str) and r.strip() for r in self.facts_relations
            ):
                raise ValueError(f"facts_relations must be a list of words, got {self.facts_relations!r}")
        if self.facts_max_lines < 1:
            raise ValueError(f"facts_max_lines must be >= 1, got {self.facts_max_lines}")
        if self.max_new_tokens_facts < 1 or self.max_new_tokens_summary < 1:
            raise ValueError("max_new_tokens_facts and max_new_tokens_summary must be >= 1")

    def derived_run_id(self) -> str:
        """run_id, or a hash of what decides the outputs (not of where they go or how many workers)."""
        if self.run_id:
            return self.run_id
        keep = asdict(self)
        for k in (
            "output",
            "workers",
            "gpus_per_worker",
            "cpus_per_worker",
            "address",
            "run_id",
            "checkpoint_every",
            "save_states",
        ):
            keep.pop(k)
        return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:12]
