"""Passkey retrieval: a number hidden at some depth of filler text, asked for at the end.

python -m benchmarks.passkey            # 1k-16k tokens, 3 depths: minutes on 2 CPU cores
python -m benchmarks.passkey --full     # 1k-128k tokens (16x SmolLM2's window), 5 depths
"""

import random

import torch

FILLER = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. "
NEEDLE = "The pass key is {key}. Remember it. {key} is the pass key. "
QUESTION = "What is the pass key? The pass key is"


def passkey_ids(tokenizer, n_tokens: int, depth: float, key: str) -> torch.Tensor:
    """About `n_tokens` tokens: filler with the needle at `depth` (0: start, 1: just before the question)."""
    filler = tokenizer.encode(FILLER, add_special_tokens=False)
    needle = tokenizer.encode(NEEDLE.format(key=key), add_special_tokens=False)
    question = tokenizer.encode(QUESTION, add_special_tokens=False)
    room = max(0, n_tokens - len(needle) - len(question))
    repeats = room // len(filler)
    before = round(depth * repeats)
    ids = filler * before + needle + filler * (repeats - before) + question
    return torch.tensor(ids)


def random_key(rng: random.Random) -> str:
    return str(rng.randrange(10_000, 100_000))
