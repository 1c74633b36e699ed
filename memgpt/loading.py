"""Saving and loading a MemGPT: one folder (config, memory weights, tokenizer, the backbone or its name)."""

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from . import hub, lora
from .config import CONFIG_NAME, MemGPTConfig

MEMORY_WEIGHTS = "memory.safetensors"
BACKBONE_DIR = "./backbone"


def load(cls, name_or_path: str | Path, device: str | torch.device | None, dtype: torch.dtype | None,
         trust_remote_code: bool, gguf_file: str | None, **options):  # fmt: skip
    """`cls.from_pretrained`: a saved MemGPT folder, a HF causal LM (folder or hub id) or a GGUF file."""
    gguf = hub.find_gguf(name_or_path, gguf_file)
    if gguf is not None:  # not referenced by name: save_pretrained writes it as backbone/ (safetensors)
        options.setdefault("memory", "kv")
        backbone = hub.load_backbone(gguf.parent, dtype=dtype, gguf_file=gguf.name)
        tokenizer = hub.load_tokenizer(gguf.parent, gguf_file=gguf.name)
        config = MemGPTConfig(backbone=backbone.config.to_dict(), **options)
        return cls(config, backbone, tokenizer, device=device, dtype=dtype)
    path = hub.resolve(name_or_path, trust_remote_code)
    config_file = path / CONFIG_NAME
    if not config_file.is_file():
        raise FileNotFoundError(f"{path} has no {CONFIG_NAME}: not a MemGPT or Hugging Face model folder")
    raw = json.loads(config_file.read_text())
    if raw.get("model_type") != "memgpt":  # a plain HF causal LM
        options.setdefault("memory", "kv")
        config = MemGPTConfig(backbone=str(name_or_path), **options)
        backbone = hub.load_backbone(path, trust_remote_code)
        tokenizer = hub.load_tokenizer(path, trust_remote_code)
        return cls(config, backbone, tokenizer, device=device, dtype=dtype)
    config = MemGPTConfig.from_dict(raw).replace(**options)
    if isinstance(config.backbone, str):
        local = config.backbone.startswith("./")
        backbone_path = path / config.backbone if local else hub.resolve(config.backbone, trust_remote_code)
        backbone = hub.load_backbone(backbone_path, trust_remote_code)
    else:
        backbone = hub.backbone_from_config(config.backbone)
    has_tokenizer = (path / "tokenizer.json").is_file() or (path / "tokenizer_config.json").is_file()
    tokenizer = hub.load_tokenizer(path) if has_tokenizer else None
    model = cls(config, backbone, tokenizer, device=device, dtype=dtype)
    if config.adapter is not None:
        lora.load_lora(model.backbone, config.adapter, path / lora.ADAPTER_WEIGHTS)
    load_memory_weights(model, path / MEMORY_WEIGHTS)
    return model


def save(model, directory: str | Path, save_backbone: bool | None = None) -> None:
    """`model.save_pretrained`: the backbone by its name while it is the named model's (with a LoRA adapter
    beside it, if it has one), saved whole once its own weights have changed (fine-tuned)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = model.config
    referenced = isinstance(config.backbone, str) and not config.backbone.startswith("./")
    tuned = referenced and lora.changed(model.backbone, model.base_fingerprint)
    adapter = lora.has_lora(model.backbone)
    if save_backbone is None:
        save_backbone = not referenced or tuned
    if adapter and (save_backbone or config.adapter is None):
        raise ValueError("a LoRA adapter is saved beside a named, unchanged base: this backbone "
                         f"{'has no name' if not referenced else 'changed too'}; merge it or train one or the other")  # fmt: skip
    if save_backbone:
        model.backbone.save_pretrained(directory / BACKBONE_DIR)
        config = config.replace(
            backbone=BACKBONE_DIR, base_model=config.backbone if referenced else config.base_model
        )
    elif not referenced:
        raise ValueError("this backbone has no name to reference; save it with save_backbone=True")
    if adapter:
        save_file(lora.adapter_weights(model.backbone), str(directory / lora.ADAPTER_WEIGHTS))
    config.save(directory)
    weights = {k: v.detach().contiguous().cpu() for k, v in model.memory.state_dict().items()}
    save_file(weights, str(directory / MEMORY_WEIGHTS), metadata={"memory": config.memory})
    if model.tokenizer is not None:
        model.tokenizer.save_pretrained(str(directory))


def load_memory_weights(model, file: Path) -> None:
    """The memory's learned weights (slots), checked against the model's shapes; none for a training-free memory."""
    expected = model.memory.state_dict()
    if not expected:
        return
    if not file.is_file():
        raise FileNotFoundError(f"{file} is missing: a {model.config.memory} MemGPT needs its memory weights")
    with safe_open(str(file), framework="pt") as f:
        found = {k: f.get_tensor(k) for k in f.keys()}
    for name, tensor in expected.items():
        if name not in found or found[name].shape != tensor.shape:
            got = tuple(found[name].shape) if name in found else "missing"
            raise ValueError(
                f"memory weights in {file} do not fit this model: {name} is {got} in the file, "
                f"{tuple(tensor.shape)} in the model (memory={model.config.memory}, "
                f"num_slots={model.config.num_slots}, hidden_size={model.hidden_size})"
            )
    model.memory.load_state_dict(found, strict=True)
