import torch

from memgpt import MemGPT, MemGPTConfig

VOCAB = 4096
# Llama-style shapes (grouped-query attention: 4 query heads, 2 kv heads)
LLAMA_SHAPE = {"vocab_size": VOCAB, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
               "num_attention_heads": 4, "num_key_value_heads": 2}  # fmt: skip

TINY_BACKBONES = {
    "gpt2": {
        "model_type": "gpt2",
        "vocab_size": VOCAB,
        "n_embd": 64,
        "n_layer": 2,
        "n_head": 4,
        "n_positions": 1024,
    },
    "llama": {"model_type": "llama", **LLAMA_SHAPE, "tie_word_embeddings": False},
    "qwen2": {"model_type": "qwen2", **LLAMA_SHAPE},
    "gpt_neox": {
        "model_type": "gpt_neox",
        "vocab_size": VOCAB,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
    },
}


def tiny(arch: str = "llama", seed: int = 0, **options) -> MemGPT:
    """A tiny real MemGPT in fp32 on the CPU."""
    torch.manual_seed(seed)
    options.setdefault("chunk_size", 32)
    config = MemGPTConfig(backbone=TINY_BACKBONES[arch], **options)
    return MemGPT(config, device="cpu", dtype=torch.float32).eval()


def random_doc(n: int, seed: int = 0, low: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(low, VOCAB, (n,), generator=g)
