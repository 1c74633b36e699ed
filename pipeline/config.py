"""ExtractConfig: everything a knowledge-extraction run depends on, as one frozen dataclass."""

import hashlib
import json
from dataclasses import asdict, dataclass, field

from pipeline.io import ReadConfig
from pipeline.prompts import PromptConfig

# memgpt.config.MEMORY_KINDS, restated: importing memgpt would load torch into processes that only write tables
MEMORY_KINDS = ("slots", "kv", "retrieval")
RANDOM_MODEL = "random"  # model name for a random-init MemGPT of the default config (for trying things)


@dataclass(frozen=True)
class ExtractConfig:
    input: str
    output: str
    model: str | None = None  # a MemGPT folder, an HF model folder, a hub id or "random"; None: memgpt-small
    memory: str | None = None  # slots | kv | retrieval; None: the model's own (kv for plain HF models)
    chunk_size: int | None = None  # tokens per chunk; None: the model's
    workers: int = 1  # actors, each holding one model
    gpus_per_worker: float = 0.0
    cpus_per_worker: float = 1.0
    batch_size: int = 4  # documents read in lockstep by one actor
    checkpoint_every: int = 8  # save a group's memory state every K chunks (resume a half-read book); 0: off
    facts: bool = True  # extract facts per chunk (the expensive part: one generation per chunk)
    max_new_tokens_facts: int = 48
    max_new_tokens_summary: int = 96
    seed: int = 0
    trust_remote_code: bool = False
    run_id: str | None = None  # None: derived from the config, so a re-run of the same job resumes it
    address: str | None = None  # Ray address; None: RAY_ADDRESS or a local in-process Ray
    read: ReadConfig = field(default_factory=ReadConfig)
    prompts: PromptConfig = field(default_factory=PromptConfig)

    def __post_init__(self):
        if self.memory is not None and self.memory not in MEMORY_KINDS:
            raise ValueError(f"memory must be one of {MEMORY_KINDS}, got {self.memory!r}")
        for name in ("workers", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.checkpoint_every < 0:
            raise ValueError(f"checkpoint_every must be >= 0 (0: off), got {self.checkpoint_every}")
        if self.gpus_per_worker < 0 or self.cpus_per_worker < 0:
            raise ValueError("gpus_per_worker and cpus_per_worker must be >= 0")
        if self.chunk_size is not None and self.chunk_size < 8:
            raise ValueError(f"chunk_size must be >= 8, got {self.chunk_size}")
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
        ):
            keep.pop(k)
        return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:12]
