"""LoRA on the backbone (through peft): added for fine-tuning, saved alone beside the memory, loaded onto its base.

The adapter is injected into the backbone's own linear layers (`peft.inject_adapter_in_model`), so the
backbone stays the Hugging Face model it was and `MemGPT` calls it as before. A saved LoRA model is the memory,
the adapter (MBs) and a config that names its base: loading fetches the base and puts the adapter back on it.
"""

from pathlib import Path
from typing import Any

import torch
from torch import nn

ADAPTER_WEIGHTS = "adapter.safetensors"
LORA_DEFAULTS = {"r": 8, "lora_alpha": 16, "lora_dropout": 0.0}


def _peft():
    try:
        import peft
    except ImportError as e:
        raise ImportError("LoRA needs peft: pip install 'memgpt[train]' (or pip install peft)") from e
    return peft


def linear_names(backbone: nn.Module) -> list[str]:
    """The names of the backbone's linear layers that LoRA adapts: every one but the output head."""
    out = backbone.get_output_embeddings()
    names = {
        n.rsplit(".", 1)[-1] for n, m in backbone.named_modules() if isinstance(m, nn.Linear) and m is not out
    }
    if not names:
        raise ValueError(f"{type(backbone).__name__} has no nn.Linear layers for LoRA to adapt")
    return sorted(names)


def add_lora(backbone: nn.Module, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Inject LoRA into `backbone` and freeze everything else in it; returns the adapter's config (JSON)."""
    peft = _peft()
    settings = {**LORA_DEFAULTS, "target_modules": linear_names(backbone), **(options or {})}
    peft.inject_adapter_in_model(peft.LoraConfig(**settings), backbone)
    for name, p in backbone.named_parameters():
        p.requires_grad_("lora_" in name)
    return settings


def has_lora(backbone: nn.Module) -> bool:
    return any("lora_" in name for name, _ in backbone.named_parameters())


def adapter_weights(backbone: nn.Module) -> dict[str, torch.Tensor]:
    """The adapter's tensors alone (what a LoRA save writes)."""
    state = _peft().get_peft_model_state_dict(backbone)
    return {k: v.detach().contiguous().cpu() for k, v in state.items()}


def load_lora(backbone: nn.Module, settings: dict[str, Any], file: Path) -> None:
    """Put the saved adapter `file` (made with `settings`) back on its base `backbone`."""
    from safetensors.torch import load_file

    if not file.is_file():
        raise FileNotFoundError(
            f"{file} is missing: this MemGPT was saved with a LoRA adapter on its backbone"
        )
    peft = _peft()
    peft.inject_adapter_in_model(peft.LoraConfig(**settings), backbone)
    result = peft.set_peft_model_state_dict(backbone, load_file(str(file)))
    missing = [k for k in result.missing_keys if "lora_" in k]
    if missing or result.unexpected_keys:
        raise ValueError(f"adapter {file} does not fit its base: missing {missing[:3]}, "
                         f"unexpected {list(result.unexpected_keys)[:3]}")  # fmt: skip
    for name, p in backbone.named_parameters():
        p.requires_grad_("lora_" in name)


def fingerprint(backbone: nn.Module) -> dict[str, torch.Tensor]:
    """A sample of every base weight (one in 97): a training step moves nearly all of them, so a backbone
    whose sample still matches the one taken at load time has not been fine-tuned."""
    return {
        n.replace(".base_layer", ""): p.detach().flatten()[::97].clone()  # the same name with LoRA on it
        for n, p in backbone.named_parameters()
        if "lora_" not in n
    }


def changed(backbone: nn.Module, before: dict[str, torch.Tensor]) -> bool:
    now = fingerprint(backbone)
    return now.keys() != before.keys() or any(
        not torch.equal(now[k], before[k].to(now[k].device)) for k in now
    )
