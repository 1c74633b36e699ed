"""Linear weights stored column-major on a CPU, for the products of a few rows that generation makes.

`nn.Linear` computes x @ W.T with W stored (out, in), row after row, as loaded. For a product of a few rows (a
step of generation: one row per document; a verification pass of drafted tokens: a few dozen), MKL is 1.5-3x
slower with that operand than with W.T stored contiguously (SmolLM2's 576 x 1,536 weight, 36 rows, 2 threads:
0.8 ms against 0.4 ms, on an Intel Xeon; an AMD EPYC showed no gain, docs/performance.md); for a chunk's read
(hundreds of rows) the two cost the same. So in eval mode on a CPU the weights are stored as W.T's contiguous
copy and kept as its transposed view: the same shape, the same values, and no module changed. Products of few
rows may round differently in the last bits; the chunk read's are bit for bit the same. Training keeps the
layout it was loaded with.
"""

import torch
from torch import nn


def column_major_linears(module: nn.Module, on: bool = True) -> int:
    """Store the weights of `module`'s linear layers column-major (`on`) or row-major; how many changed.

    A weight shared with an embedding (tied input and output embeddings) is left as it is: an embedding reads
    whole rows of it."""
    embeddings = {id(m.weight) for m in module.modules() if isinstance(m, nn.Embedding)}
    changed = 0
    for m in module.modules():
        if not isinstance(m, nn.Linear) or id(m.weight) in embeddings:
            continue
        w = m.weight.data
        if on and w.is_contiguous():
            m.weight.data = w.t().contiguous().t()  # (out, in), strides (1, out)
        elif not on and not w.is_contiguous():
            m.weight.data = w.contiguous()
        else:
            continue
        changed += 1
    return changed


def is_column_major(weight: torch.Tensor) -> bool:
    return weight.dim() == 2 and weight.t().is_contiguous() and not weight.is_contiguous()
