"""TrainConfig: one training recipe, read from YAML."""

import random
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from . import planted

TRAIN_BACKBONE = ("none", "lora", "full")
TASKS = ("planted", "text", "books")
CHECKPOINT = "checkpoint"
FINAL = "model"
TRAIN_CONFIG = (
    "training.json"  # the recipe, saved beside the final model (the benchmark reads its docs knobs)
)


@dataclass(frozen=True)
class TrainConfig:
    """One recipe. `model` holds MemGPTConfig fields (its `backbone` a config dict for a model from scratch, a
    hub id or folder of a pretrained one, or null for SmolLM2's offline copy); `docs` PlantedConfig fields
    (n_chunks comes from the curriculum); `curriculum` maps a step to the number of chunks used from then on."""

    out_dir: str = "runs/memgpt"
    model: dict[str, Any] = field(default_factory=dict)
    init_from: str | None = None  # a saved MemGPT folder to start from (`model` options override its own)
    # what of the backbone learns beside the memory: none (frozen), lora (an adapter, peft) or full
    train_backbone: str = "full"
    lora: dict[str, Any] = field(default_factory=dict)  # peft LoraConfig fields (r, lora_alpha, ...)
    grad_accum: int = 1  # batches whose gradients add up before one optimizer step
    task: str = (
        "planted"  # planted (synthetic stories) | text (memory LM) | books (a fact in real text, asked)
    )
    docs: dict[str, Any] = field(default_factory=dict)  # PlantedConfig fields for task "planted"
    text_files: tuple[str, ...] = ()  # for tasks "text" and "books"
    question_first: bool = False  # books: the question before the text too, not only after it
    random_lengths: bool = False  # each step reads 1..the curriculum's number of chunks, drawn at random
    eval_every: int = 0  # books: held-out accuracy every this many steps (and at the end); 0: never
    eval_segments: tuple[int, ...] = (1, 2, 4)  # books: the lengths, in chunks, that accuracy is measured at
    filler_files: tuple[str, ...] = ()  # for task "planted"; empty: the generator's own prose
    curriculum: dict[int, int] = field(default_factory=lambda: {0: 2, 200: 4, 500: 8})
    max_steps: int = 1000
    max_minutes: float | None = None  # stop early (and save) after this much wall time
    batch_size: int = 16
    lr: float = 2e-3
    min_lr: float = 2e-4
    # the backbone's trained weights (lora, full) peak at this rate on the same schedule; None: lr. The memory,
    # learnt from scratch, takes a higher rate than pretrained weights or an adapter on them
    backbone_lr: float | None = None
    warmup_steps: int = 50
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    lm_weight: float = 0.1
    facts_weight: float = 1.0
    summary_weight: float = 1.0
    summary_every_chunk: bool = True
    context_every: int = 4  # a context-window (no memory) summary loss every this many steps; 0: never
    seed: int = 0
    log_every: int = 10
    ckpt_every: int = 200
    eval_docs: int = 64  # planted documents scored at the end (state accuracy at the trained length)
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.train_backbone not in TRAIN_BACKBONE:
            raise ValueError(f"train_backbone must be one of {TRAIN_BACKBONE}, got {self.train_backbone!r}")
        if self.backbone_lr is not None and self.backbone_lr <= 0:
            raise ValueError(f"backbone_lr must be > 0 (or null: lr), got {self.backbone_lr}")
        if self.grad_accum < 1:
            raise ValueError(f"grad_accum must be >= 1, got {self.grad_accum}")
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        if self.task in ("text", "books") and not self.text_files:
            raise ValueError(f"task {self.task!r} needs text_files")
        object.__setattr__(self, "eval_segments", tuple(self.eval_segments))
        object.__setattr__(self, "curriculum", {int(k): int(v) for k, v in self.curriculum.items()})
        object.__setattr__(self, "text_files", tuple(self.text_files))
        object.__setattr__(self, "filler_files", tuple(self.filler_files))
        if 0 not in self.curriculum:
            raise ValueError(
                f"the curriculum must say how many chunks to use at step 0, got {self.curriculum}"
            )

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any) -> "TrainConfig":
        data = yaml.safe_load(Path(path).read_text()) or {}
        data.update(overrides)
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown TrainConfig option(s) in {path}: {sorted(unknown)}")
        return cls(**data)

    def n_chunks(self, step: int) -> int:
        """The curriculum's number of chunks at `step` (with random_lengths: at most that many)."""
        stage = self.curriculum[max(k for k in self.curriculum if k <= step)]
        return random.Random(self.seed * 7919 + step).randint(1, stage) if self.random_lengths else stage

    @property
    def max_chunks(self) -> int:
        return max(self.curriculum.values())

    def planted_config(self, n_chunks: int) -> planted.PlantedConfig:
        docs = {k: tuple(v) if isinstance(v, list) else v for k, v in self.docs.items()}  # YAML lists
        return planted.PlantedConfig(**{**docs, "n_chunks": n_chunks})
