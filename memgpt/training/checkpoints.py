"""Checkpoints: safetensors + JSON, never pickle; swapped in atomically."""

import json
import os
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..model import MemGPT
from .recipe import TrainConfig

OPTIMIZER = "optimizer.safetensors"
TRAINER_STATE = "trainer_state.json"


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
