"""Finding and loading what a MemGPT is built from: local folders, the Hugging Face Hub, backbone configs."""

import json
import os
import struct
from pathlib import Path
from typing import Any

import torch
from transformers import (
    CONFIG_MAPPING,
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedConfig,
    PreTrainedModel,
)

ASSETS = Path(__file__).parent / "assets"
# shipped, trained here (model card inside)
DEFAULT_MODEL = Path(__file__).parent / "pretrained" / "memgpt-small"
# never pickle: weights come from safetensors only
HUB_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model", "*.tiktoken", "*.md"]
# what reading a file that is no (complete) GGUF raises, from transformers' and gguf's readers
GGUF_ERRORS = (ValueError, OSError, EOFError, IndexError, KeyError, struct.error)


def load_tokenizer(
    name_or_path: str | Path | None = None, trust_remote_code: bool = False, gguf_file: str | None = None
):
    """The backbone's tokenizer, or with no argument the shipped byte-level BPE (works offline).
    With `gguf_file` (a name in the folder `name_or_path`, or a path), the tokenizer stored in that GGUF."""
    if gguf_file is not None:
        return _from_gguf(AutoTokenizer, find_gguf(name_or_path, gguf_file))
    path = ASSETS if name_or_path is None else resolve(name_or_path, trust_remote_code)
    # a MemGPT folder's config.json is no transformers config: say so, rather than have transformers warn
    # ("You are using a model of type `memgpt` to instantiate ...") while it looks for the tokenizer's class
    memgpt_folder = _read_json(path / "config.json").get("model_type") == "memgpt"
    options = {"config": PreTrainedConfig()} if memgpt_folder else {}
    return AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code, **options)


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


def find_gguf(name_or_path: str | Path, gguf_file: str | None = None) -> Path | None:
    """The GGUF file a model argument names, a path ending in .gguf or a folder plus `gguf_file`; else None."""
    if gguf_file is None and not str(name_or_path).lower().endswith(".gguf"):
        return None
    file = Path(name_or_path).expanduser() / (gguf_file or "")  # an absolute gguf_file stands alone
    if not file.is_file():
        raise FileNotFoundError(f"GGUF file {str(file)!r} does not exist")
    return file


def custom_code(path: Path) -> list[str]:
    """The custom code a model folder would have transformers import: the `auto_map` entries of its
    config.json and tokenizer_config.json, and of a MemGPT's local backbone folder. Empty for a model that
    transformers knows. Reads JSON only: nothing is imported."""
    code: list[str] = []
    for folder, _ in _folder_configs(path):
        for name in ("config.json", "tokenizer_config.json"):
            for ref in (_read_json(folder / name).get("auto_map") or {}).values():
                refs = ref if isinstance(ref, list) else [ref]  # a tokenizer's entry is [slow, fast]
                code += [str(r) for r in refs if r and str(r) not in code]
    return code


def unknown_model_type(path: Path) -> str | None:
    """The `model_type` of a model folder (or of a MemGPT's backbone) that this transformers does not know."""
    for _, config in _folder_configs(path):
        model_type = config.get("model_type")
        if model_type and model_type != "memgpt" and model_type not in CONFIG_MAPPING:
            return str(model_type)
    return None


def _folder_configs(path: Path) -> list[tuple[Path, dict]]:
    """(folder, config.json) of a model folder, and of a MemGPT's local or inline backbone."""
    config = _read_json(path / "config.json")
    found = [(path, config)]
    backbone = config.get("backbone") if config.get("model_type") == "memgpt" else None
    if isinstance(backbone, str) and backbone.startswith("./"):
        found.append((path / backbone, _read_json(path / backbone / "config.json")))
    elif isinstance(backbone, dict):
        found.append((path, backbone))
    return found


def _read_json(file: Path) -> dict:
    """A JSON object from `file`; {} when there is no such file."""
    if not file.is_file():
        return {}
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{file} is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{file} must hold a JSON object, not {type(data).__name__}")
    return data


def backbone_from_config(config: dict[str, Any]) -> PreTrainedModel:
    """A randomly initialised causal LM from a plain HF config dict (`model_type` plus its fields)."""
    config = dict(config)
    model_type = config.pop("model_type", None)
    if model_type is None:
        raise ValueError("a backbone config dict needs a 'model_type' (e.g. 'llama', 'gpt2', 'qwen2')")
    hf_config = AutoConfig.for_model(model_type, **config)
    return AutoModelForCausalLM.from_config(hf_config)


def load_backbone(
    path: Path,
    trust_remote_code: bool = False,
    dtype: torch.dtype | None = None,
    gguf_file: str | None = None,
) -> PreTrainedModel:
    """A causal LM from a folder of safetensors weights, or from the GGUF file `gguf_file` (dequantized)."""
    if gguf_file is not None:  # a GGUF holds no code
        return _from_gguf(AutoModelForCausalLM, find_gguf(path, gguf_file), dtype=dtype, **_dense_gguf())
    code = [] if trust_remote_code else custom_code(path)
    if code:
        raise ValueError(
            f"{path} needs custom code ({', '.join(code)}); load it with trust_remote_code=True only if you "
            "trust its source"
        )
    try:
        return AutoModelForCausalLM.from_pretrained(
            str(path), use_safetensors=True, trust_remote_code=trust_remote_code, dtype=dtype
        )
    except OSError as e:
        raise OSError(f"could not load a causal LM with safetensors weights from {path}: {e}") from e


def _dense_gguf() -> dict[str, Any]:
    """Ask for plain dense weights: transformers may otherwise keep GGUF blocks packed, which it cannot save."""
    try:
        from transformers import GgufConfig
    except ImportError:  # transformers before GgufConfig always dequantized
        return {}
    return {"quantization_config": GgufConfig(dequantize=True)}


def _from_gguf(auto_class, file: Path, **options):
    """`auto_class.from_pretrained` on a GGUF file; a file that is no readable GGUF fails in one line."""
    try:
        return auto_class.from_pretrained(str(file.parent), gguf_file=file.name, **options)
    except GGUF_ERRORS as e:
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ValueError(f"could not load {file} as a GGUF model: {reason}") from None


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


def position_window(config) -> int | None:
    """The number of positions the backbone was trained on (None when its config does not say)."""
    c = config.get_text_config(decoder=True)
    for name in ("max_position_embeddings", "n_positions"):
        if isinstance(getattr(c, name, None), int):
            return int(getattr(c, name))
    return None
