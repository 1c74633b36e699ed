"""The training loop: `train(cfg)`, on one process or as one rank of several."""

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from ..config import MemGPTConfig
from ..lora import add_lora
from ..model import MemGPT
from ..names import model_path
from .batches import Batch, TaskPrompts, TextStream, books_batch, planted_batch
from .books import BookSplits
from .checkpoints import load_checkpoint, save_checkpoint
from .evaluate import recall_curve
from .filler import Filler
from .losses import batch_loss
from .recipe import CHECKPOINT, FINAL, TRAIN_CONFIG, TrainConfig

HISTORY = "history.jsonl"  # every step's record, and the held-out evaluations


def lr_at(cfg: TrainConfig, step: int) -> float:
    """Linear warmup, then cosine decay to min_lr."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * min(progress, 1.0)))


def build_model(cfg: TrainConfig, device: torch.device) -> MemGPT:
    """The model the recipe starts from, with only what `train_backbone` says trainable in its backbone."""
    torch.manual_seed(cfg.seed)
    options = dict(cfg.model)
    named = "backbone" in options and not isinstance(options["backbone"], dict)
    if cfg.init_from or named:  # a saved MemGPT, or a pretrained backbone (null: SmolLM2's offline copy)
        source = cfg.init_from or model_path(options.pop("backbone"))
        options.pop("backbone", None)
        model = MemGPT.from_pretrained(source, device=device, dtype=torch.float32, **options)
    else:
        model = MemGPT(MemGPTConfig(**options), device=device, dtype=torch.float32)
    if cfg.train_backbone == "none":
        model.backbone.requires_grad_(False)
    elif cfg.train_backbone == "lora" and model.config.adapter is None:
        model.config = model.config.replace(adapter=add_lora(model.backbone, cfg.lora))
    return model


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
    opt = optimizer(model, cfg)
    start = load_checkpoint(out / CHECKPOINT, model, opt) if (out / CHECKPOINT).is_dir() else 0
    batches = Batches(cfg, model, rank * (cfg.batch_size // world_size), cfg.batch_size // world_size)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    t0 = time.time()
    bar = tqdm(
        range(start, cfg.max_steps), initial=start, total=cfg.max_steps, disable=rank != 0, desc="train"
    )
    tokens, history, step = 0, read_history(out, start), start - 1
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = lr_at(cfg, step) * group.get("lr_scale", 1.0)  # 1.0: an older checkpoint
        record, n = step_batches(model, opt, batches, cfg, step, world_size, autocast)
        tokens += n
        history.append(record)
        if step % cfg.log_every == 0 or step + 1 == cfg.max_steps:
            bar.set_postfix(**{k: f"{v:.3f}" for k, v in record.items() if k not in ("step", "chunks")},
                            n=record["chunks"], tok_s=f"{tokens / (time.time() - t0):.0f}")  # fmt: skip
            if report is not None:
                report(record)
        done = step + 1 == cfg.max_steps or _out_of_time(cfg, t0, world_size)
        if (
            rank == 0
            and batches.books is not None
            and cfg.eval_every
            and (step % cfg.eval_every == 0 or done)
        ):
            record["eval"] = recall_curve(model, cfg, batches.books)  # held-out text, greedy answers
            bar.write(json.dumps({"step": record["step"], "eval": record["eval"]}))
            write_history(out, history)
            if report is not None:
                report(record)
        if rank == 0 and ((step + 1) % cfg.ckpt_every == 0 or done):
            save_checkpoint(out / CHECKPOINT, model, opt, step + 1, cfg)
            write_history(out, history)  # what a resumed run starts from: nothing after its checkpoint
        if done:
            break
    bar.close()
    if rank == 0:
        save_final(model, cfg, step + 1, history)
    return model


def step_batches(model: MemGPT, opt: torch.optim.Optimizer, batches: "Batches", cfg: TrainConfig, step: int,
                 world_size: int, autocast) -> tuple[dict, int]:  # fmt: skip
    """One optimizer step over `grad_accum` batches (their gradients add up): its record and tokens read."""
    opt.zero_grad(set_to_none=True)
    tokens = 0
    for micro in range(cfg.grad_accum):
        batch = batches(step, micro)
        with autocast:
            loss, stats = batch_loss(model, batch, cfg)
        (loss / cfg.grad_accum).backward()
        tokens += batch.chunks.numel() * world_size
    grad_norm = optimizer_step(model, opt, cfg, world_size)
    n_chunks = batch.chunks.shape[1] + (batch.query is not None)  # books: the last chunk is in the query
    return {
        "step": step + 1,
        "loss": float(loss.detach()),
        "chunks": n_chunks,
        "grad_norm": grad_norm,
        **stats,
    }, tokens


class Batches:
    """The batch of each step: the same documents for the same (seed, step, rank) on every run."""

    def __init__(self, cfg: TrainConfig, model: MemGPT, first: int, size: int):
        self.cfg, self.chunk_size, self.first, self.size = cfg, model.config.chunk_size, first, size
        self.prompts = TaskPrompts(model.tokenizer)
        self.filler = Filler.from_files(cfg.filler_files) if cfg.filler_files else None
        self.text = TextStream(cfg.text_files, model.tokenizer) if cfg.task == "text" else None
        self.books = BookSplits(list(cfg.text_files)) if cfg.task == "books" else None

    def __call__(self, step: int, micro: int = 0) -> Batch:
        n_chunks = self.cfg.n_chunks(step)
        first = (
            self.first + micro * self.cfg.batch_size
        )  # every rank's documents differ, in every micro-batch
        seeds = [_seed(self.cfg.seed, step, first + i) for i in range(self.size)]
        if self.text is not None:
            return self.text.batch(n_chunks, self.chunk_size, seeds)
        if self.books is not None:
            return books_batch(
                self.prompts, self.books, n_chunks, self.chunk_size, seeds, self.cfg.question_first
            )
        context = self.cfg.context_every > 0 and step % self.cfg.context_every == 0
        return planted_batch(self.cfg, self.prompts, n_chunks, seeds, self.filler, context)


def optimizer(model: MemGPT, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW; no weight decay on embeddings, norms and biases; the backbone's weights at `backbone_lr`."""
    scale = 1.0 if cfg.backbone_lr is None else cfg.backbone_lr / cfg.lr
    groups = []
    for in_backbone in (False, True):
        trained = [(n, p) for n, p in model.named_parameters()
                   if p.requires_grad and n.startswith("backbone.") == in_backbone]  # fmt: skip
        decay = [p for n, p in trained if p.dim() >= 2 and "embed" not in n]
        no_decay = [p for n, p in trained if not (p.dim() >= 2 and "embed" not in n)]
        lr_scale = scale if in_backbone else 1.0
        groups += [
            {"params": decay, "weight_decay": cfg.weight_decay, "lr_scale": lr_scale},
            {"params": no_decay, "weight_decay": 0.0, "lr_scale": lr_scale},
        ]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg.lr, betas=(0.9, 0.95))


def optimizer_step(model: MemGPT, opt: torch.optim.Optimizer, cfg: TrainConfig, world_size: int) -> float:
    """Gradients averaged across ranks, clipped, applied; returns their norm before clipping."""
    if world_size > 1:
        _average_gradients(model, world_size)
    trained = [p for p in model.parameters() if p.requires_grad]
    grad_norm = torch.nn.utils.clip_grad_norm_(trained, cfg.grad_clip)
    opt.step()
    return float(grad_norm)


def save_final(model: MemGPT, cfg: TrainConfig, steps: int, history: list[dict]) -> None:
    """The model, its recipe (for the benchmarks) and the loss history."""
    out = Path(cfg.out_dir)
    model.save_pretrained(out / FINAL)
    (out / FINAL / TRAIN_CONFIG).write_text(json.dumps({**asdict(cfg), "steps": steps}, indent=2))
    write_history(out, history)


def write_history(out: Path, history: list[dict]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / HISTORY).write_text("".join(json.dumps(r) + "\n" for r in history))


def read_history(out: Path, start: int) -> list[dict]:
    """The records of steps before `start` (a resumed run's checkpoint) from an earlier run's history."""
    path = out / HISTORY
    if not start or not path.is_file():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in records if r["step"] <= start]


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
        if not p.requires_grad:
            continue
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
        p.grad /= world_size
