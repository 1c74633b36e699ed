"""Finding and loading what a MemGPT is built from: local folders, the Hugging Face Hub, backbone configs."""

import os
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

ASSETS = Path(__file__).parent / "assets"
DEFAULT_MODEL = Path(__file__).parent / "pretrained" / "memgpt-small"  # shipped, trained here (model card inside)
# never pickle: weights come from safetensors only
HUB_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model", "*.tiktoken", "*.md"]


def load_tokenizer(name_or_path: str | Path | None = None, trust_remote_code: bool = False):
    """The backbone's tokenizer, or with no argument the shipped byte-level BPE (works offline)."""
    path = ASSETS if name_or_path is None else resolve(name_or_path, trust_remote_code)
    return AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code)


def resolve(name_or_path: str | Path, trust_remote_code: bool = False) -> Path:
    """A local folder as is; otherwise a hub id fetched (or found in the local cache) by huggingface_hub."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    name = str(name_or_path)
    if path.exists() or name.startswith(("/", ".", "~")) or name.count("/") > 1:
        raise FileNotFoundError(
            f"model path {name!r} is not a directory (expected a MemGPT or HF model folder)"
        )
    from huggingface_hub import snapshot_download

    patterns = HUB_PATTERNS + (["*.py"] if trust_remote_code else [])
    try:
        return Path(snapshot_download(name, allow_patterns=patterns))
    except Exception as e:  # offline, unknown repo, gated repo: all end here
        endpoint = os.environ.get("HF_ENDPOINT", "the Hugging Face Hub")
        raise OSError(
            f"could not load model {name!r}: no such local folder, and {endpoint} could not provide it "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}). "
            "Pass a local folder, or run where the hub is reachable or the model is in the HF cache."
        ) from e


def backbone_from_config(config: dict[str, Any]) -> PreTrainedModel:
    """A randomly initialised causal LM from a plain HF config dict (`model_type` plus its fields)."""
    config = dict(config)
    model_type = config.pop("model_type", None)
    if model_type is None:
        raise ValueError("a backbone config dict needs a 'model_type' (e.g. 'llama', 'gpt2', 'qwen2')")
    hf_config = AutoConfig.for_model(model_type, **config)
    return AutoModelForCausalLM.from_config(hf_config)


def load_backbone(
    path: Path, trust_remote_code: bool = False, dtype: torch.dtype | None = None
) -> PreTrainedModel:
    try:
        return AutoModelForCausalLM.from_pretrained(
            str(path), use_safetensors=True, trust_remote_code=trust_remote_code, dtype=dtype
        )
    except OSError as e:
        raise OSError(f"could not load a causal LM with safetensors weights from {path}: {e}") from e


def backbone_shapes(config) -> dict[str, int]:
    """Layers, kv heads, head size and hidden size, whatever the architecture calls them."""
    c = config.get_text_config(decoder=True)
    heads = c.num_attention_heads
    return {
        "num_layers": c.num_hidden_layers,
        "num_kv_heads": getattr(c, "num_key_value_heads", None) or heads,
        "head_dim": getattr(c, "head_dim", None) or c.hidden_size // heads,
        "hidden_size": c.hidden_size,
    }


def uses_rope(config) -> bool:
    c = config.get_text_config(decoder=True)
    return getattr(c, "rope_parameters", None) is not None or hasattr(c, "rotary_pct")
