"""What every benchmark shares: the methods compared on one real model, the record of the machine and command,
interleaved timing, peak memory, a table printer."""

import argparse
import copy
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable

import torch

from memgpt import MemGPT
from memgpt.config import default_backbone
from memgpt.names import model_path

# methods that are the backbone alone (its own attention over the text, or the last window of it), not a memory
BACKBONE_METHODS = ("full", "truncated", "passage")

# Backbones built from their configs (random weights: speed does not depend on what the weights learned).
BACKBONES = {
    "default": default_backbone(),  # MemGPTConfig's default: Llama-style, 4 layers, 256 wide
    "qwen2-0.5b": {  # the shape of Qwen/Qwen2-0.5B: 24 layers, 896 wide, grouped-query attention (14 / 2 heads)
        "model_type": "qwen2",
        "vocab_size": 151936,
        "hidden_size": 896,
        "intermediate_size": 4864,
        "num_hidden_layers": 24,
        "num_attention_heads": 14,
        "num_key_value_heads": 2,
        "max_position_embeddings": 32768,
        "rope_theta": 1000000.0,
        "rms_norm_eps": 1e-6,
        "tie_word_embeddings": True,
    },
}


def add_backbone_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--backbone", choices=list(BACKBONES), default="default", help="backbone shape (default: %(default)s)"
    )
    p.add_argument(
        "--layers",
        type=int,
        default=None,
        help="keep the backbone's first N layers: every cost compared here is per layer, so ratios hold",
    )


def backbone_config(args: argparse.Namespace) -> dict:
    config = dict(BACKBONES[args.backbone])
    if args.layers is not None:
        config["num_hidden_layers"] = args.layers
    return config


def parser(doc: str | None) -> argparse.ArgumentParser:
    """A benchmark's command line, its module docstring as the help."""
    return argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)


def load_methods(model: str | None, methods: list[str], **options) -> dict[str, MemGPT]:
    """The model loaded once (fp32 on CPU; None: SmolLM2's offline copy) and a MemGPT per method, all sharing
    its backbone: "full" and "truncated" are the backbone with every kv entry kept (exact attention), any other
    method is the memory of that name with `options` (chunk_size, kv_budget, ...)."""
    torch.set_grad_enabled(False)
    base = MemGPT.from_pretrained(
        model_path(model), memory="kv", kv_budget=None, device="cpu", dtype=torch.float32
    )
    return {m: base.eval() if m in BACKBONE_METHODS else
            MemGPT.from_backbone(base.backbone, tokenizer=base.tokenizer, memory=m, **options).eval()
            for m in methods}  # fmt: skip


def record(**results) -> dict:
    """What a benchmark's JSON holds: the command that made it and the machine it ran on, then its results."""
    return {"command": command(), "machine": machine(), **results}


def bare_forward(model: MemGPT, docs: torch.Tensor, chunk: int) -> None:
    """What a reader with no memory runs: the backbone over each chunk on its own. docs (N,) or (B, N)"""
    docs = docs if docs.dim() == 2 else docs[None]
    for piece in docs.split(chunk, dim=1):
        model.backbone.base_model(input_ids=piece.to(model.device), use_cache=False)


def backbone_label(args: argparse.Namespace) -> str:
    layers = backbone_config(args)["num_hidden_layers"]
    return f"{args.backbone} backbone ({layers} layers)"


def machine() -> str:
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    return (
        f"{platform.machine()} {torch.get_num_threads()} threads, {device}, torch {torch.__version__}, "
        f"python {platform.python_version()}"
    )


def command() -> str:
    main = sys.modules["__main__"]
    name = main.__spec__.name if main.__spec__ else sys.argv[0]
    return " ".join(["python -m", name, *sys.argv[1:]])


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def interleaved(fns: dict[str, Callable[[], object]], repeat: int = 3, warmup: int = 1) -> dict[str, float]:
    """Median seconds of each fn, run in turns (A B A B …) so load on the machine hits all alike."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            sync()
            start = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def print_table(rows: list[dict], title: str) -> None:
    print(f"\n{title}")
    cols = list(rows[0])
    widths = [max(len(c), *(len(_fmt(r[c])) for r in rows)) for c in cols]
    print(" | ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)))
    print("-|-".join("-" * w for w in widths))
    for r in rows:
        print(" | ".join(_fmt(r[c]).ljust(w) for c, w in zip(cols, widths, strict=True)))


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:,.3f}" if abs(v) < 10 else f"{v:,.0f}"
    return str(v)


def answers_after(
    model: MemGPT, prefix: list[int], questions: list[list[int]], max_new_tokens: int
) -> list[str]:
    """The backbone alone: greedy answers to each question after one prefix, whose cache is computed once."""
    tok = model.tokenizer
    cache = model.backbone(torch.tensor([prefix]), use_cache=True).past_key_values
    out = []
    for q in questions:
        ids = torch.tensor([prefix + q])
        gen = model.backbone.generate(ids, past_key_values=copy.deepcopy(cache), max_new_tokens=max_new_tokens,
                                      do_sample=False, pad_token_id=tok.eos_token_id)  # fmt: skip
        out.append(tok.decode(gen[0, ids.shape[1] :], skip_special_tokens=True))
    return out
