"""ExtractConfig: everything a knowledge-extraction run depends on, as one frozen dataclass."""

import hashlib
import json
from dataclasses import asdict, dataclass, field

from pipeline.io import ReadConfig
from pipeline.prompts import NotesConfig, PromptConfig

FACT_GRAMMARS = ("auto", "text", "lines", "none")  # pipeline/grammar.py; restated: that module imports torch
FACTS_PASSES = ("shared", "separate")  # how a chunk's facts prompt meets the memory's read of it
ANTECEDENTS = ("entities", "model")  # pipeline/entity_states.py, or the model's choice
SUMMARY_FROM = ("auto", "states", "lead", "memory", "notes")  # pipeline/summary.py


def option(default, help: str, **metadata):
    """A setting and its one description: the flag's help, and the comment of `jobs.extract --print-config`."""
    return field(default=default, metadata={"help": help, **metadata})


@dataclass(frozen=True)
class ExtractConfig:
    """Everything a run depends on; each option is described once, here (flags and --print-config use it)."""

    input: str = option(
        None, "folder of .txt/.md, JSONL or Parquet file(s), or one file; a local path or URI (s3://...)"
    )
    output: str = option(
        None, "folder for the tables; a local path or URI, reachable from every node of a cluster"
    )
    model: str | None = option(None, "a MemGPT folder, HF model folder, hub id, GGUF file, 'memgpt-small' (the shipped "
                               "story model) or 'random'; none: SmolLM2-135M-Instruct, made ready offline on first "
                               "use, with memory kv, chunk_size 512, kv_budget 1024 unless given")  # fmt: skip
    memory: str | None = option(None, "a memory registered in memgpt (kv, retrieval, archival, slots, ...); none: "
                                "the model's own (kv for plain HF models)")  # fmt: skip
    chunk_size: int | None = option(None, "tokens per chunk; none: the model's")
    kv_budget: int | None = option(None, "kv entries kept per layer (kv-family memories); none: the model's")
    workers: int = option(1, "actors, each holding one model")
    gpus_per_worker: float = option(0.0, "GPUs each actor holds")
    cpus_per_worker: float = option(1.0, "CPU cores each actor holds (and its torch threads)")
    batch_size: int = option(4, "documents one actor reads in lockstep")
    checkpoint_every: int = option(8, "save each group's memory every K chunks under <output>/_checkpoints, so a "
                                   "retried read resumes there; 0: off")  # fmt: skip
    facts: bool = option(True, "facts per chunk: one generation per chunk, most of the cost (--no-facts: "
                         "summaries only)")  # fmt: skip
    facts_grammar: str = option("auto", "text: fact lines copied from the chunk, one per sentence with a subject "
                                "(chat models); lines: any words in 3 fields; none: unconstrained; auto: text for "
                                "the chat prompt style, none for the task style", choices=FACT_GRAMMARS)  # fmt: skip
    facts_relations: tuple[str, ...] | None = option(None, "a fixed relation vocabulary, e.g. keeps 'moved to'; "
                                                     "none: free")  # fmt: skip
    facts_antecedents: str = option("entities", "who a line's subject pronoun ('he', 'she') is, under the text "
                                    "grammar: entities: the person the entity states choose (rare words shared "
                                    "with its earlier clauses, then the latest); model: any name the document has "
                                    "said, the model's choice", choices=ANTECEDENTS)  # fmt: skip
    facts_max_lines: int = option(12, "fact lines per chunk, at most (under a grammar): a bound on the cost of a "
                                  "crowded chunk; later sentences of a chunk with more are left out")  # fmt: skip
    max_new_tokens_facts: int = option(192, "tokens generated for a chunk's fact lines, at most")
    facts_draft_tokens: int = option(8, "tokens a step of the facts' generation drafts from the grammar and the "
                                     "chunk for the model to verify in one pass (lookup decoding: the same "
                                     "lines, fewer passes); 0: one token per pass")  # fmt: skip
    facts_pass: str = option("shared", "shared: a chunk goes through the backbone once; the facts are generated "
                             "from the cache of its read, the memory before it and the chunk, after an "
                             "instruction-only prompt (kv and slot memories); separate: the facts prompt holds the "
                             "chunk and is read apart from the memory's read, as before (2 passes over the chunk)",
                             choices=FACTS_PASSES)  # fmt: skip
    summary_from: str = option("auto", "states: the main people, what each did first, what changed and how it "
                               "ended, and whoever else changed something, in the words of the facts, every "
                               "sentence with its evidence (no generation); lead: the document's opening sentences of "
                               "prose, as they stand; memory: generated from the memory; notes: the last running "
                               "notes; auto: notes when they are on, else states where facts are copied under the "
                               "text grammar (lead for a document whose facts follow fewer than two people, memory "
                               "if it has no sentence of prose), else memory", choices=SUMMARY_FROM)  # fmt: skip
    summary_people: int = option(6, "people a summary from states follows, at most")
    max_new_tokens_summary: int = option(96, "tokens of the summary from memory (without running notes)")
    save_states: bool = option(
        False, "keep each document's final memory under <output>/states/ (for jobs.ask)"
    )
    seed: int = option(0, "fixes random-init weights; decoding is greedy")
    trust_remote_code: bool = option(False, "allow a hub model's own code, only if you trust its source")
    run_id: str | None = option(
        None, "none: derived from the settings, so a rerun of the same job resumes it"
    )
    address: str | None = option(None, "Ray address; none: RAY_ADDRESS, else a local in-process Ray")
    read: ReadConfig = field(default_factory=ReadConfig)
    prompts: PromptConfig = field(default_factory=PromptConfig)
    notes: NotesConfig = field(default_factory=NotesConfig)

    def __post_init__(self):
        for name in ("input", "output"):
            if not getattr(self, name):
                raise ValueError(f"--{name} is required (or set {name!r} in the config file)")
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
        if self.facts_pass not in FACTS_PASSES:
            raise ValueError(f"facts_pass must be one of {FACTS_PASSES}, got {self.facts_pass!r}")
        if self.facts_antecedents not in ANTECEDENTS:
            raise ValueError(
                f"facts_antecedents must be one of {ANTECEDENTS}, got {self.facts_antecedents!r}"
            )
        if self.facts_relations is not None:
            object.__setattr__(self, "facts_relations", tuple(self.facts_relations))  # from YAML: a list
            if not self.facts_relations or not all(
                isinstance(r, str) and r.strip() for r in self.facts_relations
            ):
                raise ValueError(f"facts_relations must be a list of words, got {self.facts_relations!r}")
        if self.summary_from not in SUMMARY_FROM:
            raise ValueError(f"summary_from must be one of {SUMMARY_FROM}, got {self.summary_from!r}")
        if self.summary_from == "states" and not self.facts:
            raise ValueError(
                "summary_from 'states' is made from the facts: it needs facts on (drop --no-facts)"
            )
        if self.summary_from == "notes" and self.notes.every == 0:
            raise ValueError("summary_from 'notes' needs running notes: set notes.every > 0")
        if self.summary_people < 1:
            raise ValueError(f"summary_people must be >= 1, got {self.summary_people}")
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
