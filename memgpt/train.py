"""Training a MemGPT: memory language modelling on text, and task fine-tuning on planted long documents.

The whole loop is `train()`. Objectives, per document of N chunks read with the memory:
- lm:       predict each chunk's tokens with the memory of the earlier chunks;
- facts:    with chunk t in context and the memory of chunks < t, write chunk t's `subject | relation | object`
            lines (pronouns resolved from memory);
- summary:  from the memory alone after chunk t (every chunk, or only the last), write every entity's state;
- context:  the backbone alone, with the document's last chunks in its context window, writes the summary or
            the last chunk's facts (what the kv, no-memory and truncated-context baselines are asked to do).
Truncated BPTT detaches the state every `bptt_depth` chunks; a curriculum grows N (RMT-style).
"""

import json
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import yaml
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from . import planted
from .config import MemGPTConfig
from .model import MemGPT
from .state import MemoryState

CHECKPOINT = "checkpoint"
FINAL = "model"
OPTIMIZER = "optimizer.safetensors"
TRAINER_STATE = "trainer_state.json"
TRAIN_CONFIG = (
    "training.json"  # the recipe, saved beside the final model (the benchmark reads its docs knobs)
)


@dataclass(frozen=True)
class TrainConfig:
    """One recipe. `model` holds MemGPTConfig fields; `docs` PlantedConfig fields (n_chunks comes from the
    curriculum); `curriculum` maps a step to the number of chunks used from that step on."""

    out_dir: str = "runs/memgpt"
    model: dict[str, Any] = field(default_factory=dict)
    init_from: str | None = None  # a saved MemGPT folder to start from
    task: str = "planted"  # "planted" | "text"
    docs: dict[str, Any] = field(default_factory=dict)  # PlantedConfig fields for task "planted"
    text_files: tuple[str, ...] = ()  # for task "text"
    filler_files: tuple[str, ...] = ()  # for task "planted"; empty: the generator's own prose
    curriculum: dict[int, int] = field(default_factory=lambda: {0: 2, 200: 4, 500: 8})
    max_steps: int = 1000
    max_minutes: float | None = None  # stop early (and save) after this much wall time
    batch_size: int = 16
    lr: float = 2e-3
    min_lr: float = 2e-4
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
        if self.task not in ("planted", "text"):
            raise ValueError(f"task must be 'planted' or 'text', got {self.task!r}")
        if self.task == "text" and not self.text_files:
            raise ValueError("task 'text' needs text_files")
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
        """The curriculum's number of chunks at `step`."""
        return self.curriculum[max(k for k in self.curriculum if k <= step)]

    @property
    def max_chunks(self) -> int:
        return max(self.curriculum.values())

    def planted_config(self, n_chunks: int) -> planted.PlantedConfig:
        docs = {k: tuple(v) if isinstance(v, list) else v for k, v in self.docs.items()}  # YAML lists
        return planted.PlantedConfig(**{**docs, "n_chunks": n_chunks})


# ---- batches ----------------------------------------------------------------------------------------------------


@dataclass
class Seq:
    """Right-padded token rows with their LM labels (-100: no loss)."""

    ids: torch.Tensor  # (B, T)
    mask: torch.Tensor  # (B, T)
    labels: torch.Tensor  # (B, T)


@dataclass
class Batch:
    chunks: torch.Tensor  # (B, N, C) document tokens
    facts: list[Seq] | None = None  # per chunk: [chunk | "Facts:" | target]
    summaries: list[Seq] | None = (
        None  # per chunk: ["Summary:" | target] (only the last when not every chunk)
    )
    context: Seq | None = None  # [last k chunks | prompt | target], read by the backbone alone
    docs: list[planted.Document] | None = None


class Prompts:
    """Token ids of the prompts and targets, shared by training and evaluation."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.eos = int(tokenizer.eos_token_id)
        self.pad = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos)
        # the same markers as pipeline.prompts' task style: `<chunk>\nFacts:\n` and `Summary:\n` (the newline
        # opens the target); after raw context the summary marker gets a newline of its own
        self.facts = self.encode("\n" + planted.FACTS_PROMPT)
        self.summary = self.encode(planted.SUMMARY_PROMPT)
        self.context_summary = self.encode("\n" + planted.SUMMARY_PROMPT)

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def target(self, text: str) -> list[int]:
        return self.encode("\n" + text) + [self.eos]

    def decode(self, ids: list[int]) -> str:
        """Generated ids up to the first end-of-text."""
        ids = list(ids)
        if self.eos in ids:
            ids = ids[: ids.index(self.eos)]
        return self.tokenizer.decode(ids)

    def seq(self, rows: list[tuple[list[int], list[int]]], lm_prefix: bool = False) -> Seq:
        """(context, target) pairs -> a padded Seq with loss on the target (and on the context if lm_prefix)."""
        width = max(len(c) + len(t) for c, t in rows)
        ids = torch.full((len(rows), width), self.pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        labels = torch.full_like(ids, -100)
        for i, (c, t) in enumerate(rows):
            n = len(c) + len(t)
            ids[i, :n] = torch.tensor(c + t)
            mask[i, :n] = 1
            labels[i, len(c) : n] = torch.tensor(t)
            if lm_prefix:
                labels[i, : len(c)] = torch.tensor(c)
        return Seq(ids, mask, labels)


def planted_batch(
    cfg: TrainConfig,
    prompts: Prompts,
    n_chunks: int,
    seeds: list[int],
    filler: planted.Filler | None,
    context: bool,
) -> Batch:
    pc = cfg.planted_config(n_chunks)
    docs = [planted.generate(pc, s, prompts.tokenizer, filler) for s in seeds]
    chunks = torch.tensor([d.chunks for d in docs], dtype=torch.long)  # (B, N, C)
    facts = [
        prompts.seq(
            [(d.chunks[t] + prompts.facts, prompts.target(d.facts_text(t))) for d in docs], lm_prefix=True
        )
        for t in range(n_chunks)
    ]
    steps = range(n_chunks) if cfg.summary_every_chunk else [n_chunks - 1]
    summaries = [
        prompts.seq(
            [(prompts.summary, prompts.target(planted.format_summary(d.state_after(t)))) for d in docs]
        )
        for t in steps
    ]
    ctx = None
    if context:  # the last k chunks in the context window, then the summary or the last chunk's facts
        rng = random.Random(seeds[0])
        k, ask_facts = rng.randint(1, n_chunks), rng.random() < 0.5
        rows = []
        for d in docs:
            window = d.token_ids()[-k * pc.chunk_size :]
            if ask_facts:
                rows.append((window + prompts.facts, prompts.target(d.facts_text(n_chunks - 1))))
            else:
                rows.append((window + prompts.context_summary, prompts.target(d.summary())))
        ctx = prompts.seq(rows)
    return Batch(chunks, facts, summaries, ctx, docs)


class TextStream:
    """Token windows of N chunks drawn from text files (memory language modelling)."""

    def __init__(self, files: tuple[str, ...], tokenizer):
        text = "\n".join(Path(f).read_text(encoding="utf-8", errors="replace") for f in files)
        self.tokens = torch.tensor(tokenizer.encode(text, add_special_tokens=False), dtype=torch.long)

    def batch(self, n_chunks: int, chunk_size: int, seeds: list[int]) -> Batch:
        width = n_chunks * chunk_size
        if len(self.tokens) <= width:
            raise ValueError(f"text has {len(self.tokens)} tokens, fewer than one window of {width}")
        starts = [random.Random(s).randrange(len(self.tokens) - width) for s in seeds]
        return Batch(torch.stack([self.tokens[s : s + width] for s in starts]).view(len(seeds), n_chunks, -1))


# ---- losses -----------------------------------------------------------------------------------------------------


def _ce(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Summed next-token cross-entropy and the number of predicted tokens."""
    labels = labels[:, 1:].to(logits.device)
    n = int((labels != -100).sum())
    loss = F.cross_entropy(
        logits[:, :-1].flatten(0, 1).float(), labels.flatten(), ignore_index=-100, reduction="sum"
    )
    return loss, n


def _split_labels(seq: Seq, context_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels of the first `context_len` positions (the chunk: lm) and of the rest (the target)."""
    lm, target = seq.labels.clone(), seq.labels.clone()
    lm[:, context_len:] = -100
    target[:, :context_len] = -100
    return lm, target


def batch_loss(model: MemGPT, batch: Batch, cfg: TrainConfig) -> tuple[torch.Tensor, dict[str, float]]:
    """The weighted loss of one batch: read the chunks in order, with truncated BPTT, scoring each objective."""
    B, N, C = batch.chunks.shape
    dev = model.device
    sums: dict[str, list] = {k: [0.0, 0] for k in ("lm", "facts", "summary", "context")}

    def add(name: str, loss_n: tuple[torch.Tensor, int]) -> None:
        sums[name][0] = sums[name][0] + loss_n[0]
        sums[name][1] += loss_n[1]

    state = model.init_state(B)
    for t in range(N):
        chunk = batch.chunks[:, t].to(dev)
        if batch.facts is None:  # plain text: the chunk's own tokens, with the memory of earlier chunks
            out = model(chunk, memory=state)
            add("lm", _ce(out.logits, chunk))
            state = out.memory
        else:
            if cfg.facts_weight or cfg.lm_weight:  # else the chunk's own outputs are not scored: skip them
                seq = batch.facts[t]
                lm_labels, fact_labels = _split_labels(seq, C)
                logits = model(seq.ids.to(dev), seq.mask.to(dev), memory=state).logits
                if cfg.lm_weight:  # a zero-weight loss would still cost its softmax and backward
                    add("lm", _ce(logits, lm_labels))
                if cfg.facts_weight:
                    add("facts", _ce(logits, fact_labels))
            state = model.step(state, chunk)
            if cfg.summary_every_chunk or t == N - 1:
                s = batch.summaries[t if cfg.summary_every_chunk else 0]
                add("summary", _ce(model(s.ids.to(dev), s.mask.to(dev), memory=state).logits, s.labels))
        if (t + 1) % model.config.bptt_depth == 0:
            state = state.detach()
    if batch.context is not None:
        c = batch.context
        add(
            "context",
            _ce(model.backbone(input_ids=c.ids.to(dev), attention_mask=c.mask.to(dev)).logits, c.labels),
        )

    weights = {"lm": cfg.lm_weight if batch.facts is not None else 1.0, "facts": cfg.facts_weight,
               "summary": cfg.summary_weight, "context": cfg.summary_weight}  # fmt: skip
    loss = sum(weights[k] * s / max(n, 1) for k, (s, n) in sums.items() if n)
    stats = {k: float(s.detach()) / n for k, (s, n) in sums.items() if n}
    return loss, stats


# ---- the loop ---------------------------------------------------------------------------------------------------


def lr_at(cfg: TrainConfig, step: int) -> float:
    """Linear warmup, then cosine decay to min_lr."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * min(progress, 1.0)))


def build_model(cfg: TrainConfig, device: torch.device) -> MemGPT:
    torch.manual_seed(cfg.seed)
    if cfg.init_from:
        return MemGPT.from_pretrained(cfg.init_from, device=device, dtype=torch.float32)
    return MemGPT(MemGPTConfig(**cfg.model), device=device, dtype=torch.float32)


def train(
    cfg: TrainConfig,
    rank: int = 0,
    world_size: int = 1,
    report: Callable[[dict[str, Any]], None] | None = None,
) -> MemGPT:
    """Train `cfg` and save the model to `<out_dir>/model`; resumes from `<out_dir>/checkpoint` if there.

    With `world_size` > 1 (Ray Train workers in one torch.distributed group) each rank reads its own
    documents and gradients are averaged across ranks before every optimizer step.
    """
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    out = Path(cfg.out_dir)
    model = build_model(cfg, device).train()
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "embed" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and "embed" not in n)]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=(0.9, 0.95),
    )
    start = load_checkpoint(out / CHECKPOINT, model, opt) if (out / CHECKPOINT).is_dir() else 0
    prompts = Prompts(model.tokenizer)
    filler = planted.Filler.from_files(cfg.filler_files) if cfg.filler_files else None
    text = TextStream(cfg.text_files, model.tokenizer) if cfg.task == "text" else None
    per_rank = cfg.batch_size // world_size
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")

    t0 = time.time()
    bar = tqdm(
        range(start, cfg.max_steps), initial=start, total=cfg.max_steps, disable=rank != 0, desc="train"
    )
    tokens, history, step = 0, [], start - 1
    for step in bar:
        n_chunks = cfg.n_chunks(step)
        seeds = [_seed(cfg.seed, step, rank * per_rank + i) for i in range(per_rank)]
        if text is not None:
            batch = text.batch(n_chunks, model.config.chunk_size, seeds)
        else:
            context = cfg.context_every > 0 and step % cfg.context_every == 0
            batch = planted_batch(cfg, prompts, n_chunks, seeds, filler, context)
        for group in opt.param_groups:
            group["lr"] = lr_at(cfg, step)
        with autocast:
            loss, stats = batch_loss(model, batch, cfg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if world_size > 1:
            _average_gradients(model, world_size)
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()

        tokens += batch.chunks.numel() * world_size
        record = {
            "step": step + 1,
            "loss": float(loss.detach()),
            "chunks": n_chunks,
            "grad_norm": float(grad_norm),
            **stats,
        }
        history.append(record)
        if step % cfg.log_every == 0 or step + 1 == cfg.max_steps:
            parts = {k: f"{v:.3f}" for k, v in stats.items()}
            bar.set_postfix(
                loss=f"{loss.item():.3f}", **parts, n=n_chunks, tok_s=f"{tokens / (time.time() - t0):.0f}"
            )
            if report is not None:
                report(record)
        done = step + 1 == cfg.max_steps or _out_of_time(cfg, t0, world_size)
        if rank == 0 and ((step + 1) % cfg.ckpt_every == 0 or done):
            save_checkpoint(out / CHECKPOINT, model, opt, step + 1, cfg)
        if done:
            break
    bar.close()
    if rank == 0:
        model.save_pretrained(out / FINAL)
        (out / FINAL / TRAIN_CONFIG).write_text(json.dumps({**asdict(cfg), "steps": step + 1}, indent=2))
        (out / "history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in history))
    return model


def _seed(seed: int, step: int, index: int) -> int:
    """The data seed of document `index` of `step`: the same on every run, different across ranks."""
    return (seed * 1_000_003 + step) * 4099 + index


def _out_of_time(cfg: TrainConfig, t0: float, world_size: int) -> bool:
    """Past max_minutes on any rank (all ranks must stop at the same step)."""
    late = bool(cfg.max_minutes) and time.time() - t0 > 60 * cfg.max_minutes
    if world_size > 1:
        import torch.distributed as dist

        flag = torch.tensor([float(late)])
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        late = bool(flag.item())
    return late


def _average_gradients(model: torch.nn.Module, world_size: int) -> None:
    import torch.distributed as dist

    for p in model.parameters():
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
        p.grad /= world_size


# ---- the same loop under Ray Train ---------------------------------------------------------------------------------


def _ray_worker(config: dict[str, Any]) -> None:
    import ray.train

    ctx = ray.train.get_context()
    train(TrainConfig(**config), ctx.get_world_rank(), ctx.get_world_size(), report=ray.train.report)


def train_with_ray(cfg: TrainConfig, num_workers: int, use_gpu: bool = False):
    """Run `train` on `num_workers` Ray Train workers (gloo on CPU, nccl on GPU); returns Ray's Result."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    if cfg.batch_size % num_workers:
        raise ValueError(f"batch_size {cfg.batch_size} is not divisible by num_workers {num_workers}")
    out = Path(cfg.out_dir).resolve()  # workers may run in another directory
    config = {**asdict(cfg), "out_dir": str(out)}
    trainer = TorchTrainer(
        _ray_worker,
        train_loop_config=config,
        scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=use_gpu),
        run_config=RunConfig(name="train", storage_path=str(out / "ray")),
    )
    return trainer.fit()


# ---- checkpoints: safetensors + JSON, never pickle ----------------------------------------------------------------


def save_checkpoint(
    directory: Path, model: MemGPT, opt: torch.optim.Optimizer, step: int, cfg: TrainConfig
) -> None:
    """Model (save_pretrained), optimizer tensors (safetensors) and step/config (JSON), swapped in atomically."""
    tmp = directory.with_name(directory.name + ".tmp")
    model.save_pretrained(tmp)
    sd = opt.state_dict()
    tensors = {
        f"{i}.{k}": v.detach().cpu().contiguous() for i, s in sd["state"].items() for k, v in s.items()
    }
    save_file(tensors, str(tmp / OPTIMIZER))
    meta = {"step": step, "param_groups": sd["param_groups"], "train_config": asdict(cfg)}
    (tmp / TRAINER_STATE).write_text(json.dumps(meta, indent=2) + "\n")
    if directory.exists():
        old = directory.with_name(directory.name + ".old")
        os.replace(directory, old)
        os.replace(tmp, directory)
        _rmtree(old)
    else:
        os.replace(tmp, directory)


def load_checkpoint(directory: Path, model: MemGPT, opt: torch.optim.Optimizer) -> int:
    """Load weights and optimizer state saved by save_checkpoint; returns the step to continue from."""
    saved = MemGPT.from_pretrained(directory, device=model.device, dtype=torch.float32)
    if saved.signature() != model.signature():
        raise ValueError(
            f"checkpoint {directory} is {saved.signature()}, the recipe builds {model.signature()}"
        )
    model.load_state_dict(saved.state_dict())
    meta = json.loads((directory / TRAINER_STATE).read_text())
    flat = load_file(str(directory / OPTIMIZER), device=str(model.device))
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in flat.items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    return int(meta["step"])


def _rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


# ---- evaluation ---------------------------------------------------------------------------------------------------


@torch.no_grad()
def summarize(model: MemGPT, state: MemoryState, prompts: Prompts, max_new_tokens: int = 64) -> list[str]:
    """Generate each document's summary from its memory alone."""
    B = state.batch_size
    prompt = torch.tensor([prompts.summary] * B)
    out = model.generate(prompt, memory=state, max_new_tokens=max_new_tokens, eos_token_id=prompts.eos)
    return [prompts.decode(row[prompt.shape[1] :].tolist()) for row in out]


@torch.no_grad()
def read_chunks(model: MemGPT, docs: list[planted.Document], last: int | None = None) -> MemoryState:
    """Read the documents (equal numbers of chunks) into memory, chunk by chunk; only the `last` chunks if set."""
    chunks = torch.tensor([d.chunks for d in docs], dtype=torch.long)  # (B, N, C)
    state = model.init_state(len(docs))
    for t in range(chunks.shape[1] - (last or chunks.shape[1]), chunks.shape[1]):
        state = model.step(state, chunks[:, t])
    return state


@torch.no_grad()
def planted_accuracy(model: MemGPT, cfg: TrainConfig, n_docs: int, seed: int = 10_000_019) -> float:
    """State accuracy of summaries generated from memory, on fresh documents at the trained length."""
    model.eval()
    prompts = Prompts(model.tokenizer)
    pc = cfg.planted_config(cfg.max_chunks)
    docs = [planted.generate(pc, seed + i, prompts.tokenizer) for i in range(n_docs)]
    accs = []
    for i in range(0, n_docs, 16):
        part = docs[i : i + 16]
        for doc, text in zip(part, summarize(model, read_chunks(model, part), prompts), strict=True):
            accs.append(planted.state_accuracy(text, doc.state))
    return sum(accs) / len(accs)
