"""Training a MemGPT: memory language modelling on text, and task fine-tuning on planted long documents.

The whole loop is `train()`. Objectives, per document of N chunks read with the memory:
- lm:       predict each chunk's tokens with the memory of the earlier chunks;
- facts:    with chunk t in context and the memory of chunks < t, write chunk t's `subject | relation | object`
            lines (pronouns resolved from memory);
- summary:  from the memory alone after chunk t (every chunk, or only the last), write every entity's state;
- context:  the backbone alone, with the document's last chunks in its context window, writes the summary or
            the last chunk's facts (what the kv, no-memory and truncated-context baselines are asked to do).
Truncated BPTT detaches the state every `bptt_depth` chunks; a curriculum grows N (RMT-style).

Rooms: recipe.py (TrainConfig), planted.py + filler.py (the planted documents), batches.py, losses.py,
loop.py (`train`), distributed.py (Ray Train), checkpoints.py, evaluate.py and scoring.py.
"""

from .distributed import train_with_ray
from .evaluate import planted_accuracy, read_chunks, summarize
from .loop import train
from .recipe import TRAIN_CONFIG, TrainConfig

__all__ = [
    "TRAIN_CONFIG",
    "TrainConfig",
    "planted_accuracy",
    "read_chunks",
    "summarize",
    "train",
    "train_with_ray",
]
