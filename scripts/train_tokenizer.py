"""Train the default byte-level BPE tokenizer shipped as memgpt/assets/tokenizer.json.

python scripts/train_tokenizer.py ../shared/corpus/*.txt --vocab-size 4096
"""

import argparse
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

SPECIAL_TOKENS = ["<|endoftext|>", "<|pad|>"]


def train(files: list[str], vocab_size: int) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=True,
    )
    tok.train(files, trainer)
    return tok


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("files", nargs="+")
    p.add_argument("--vocab-size", type=int, default=4096)
    p.add_argument("--out", default=str(Path(__file__).parents[1] / "memgpt" / "assets" / "tokenizer.json"))
    args = p.parse_args()
    train(args.files, args.vocab_size).save(args.out)
    print(f"wrote {args.out}")
