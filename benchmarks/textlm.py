"""What memory language modelling buys on real text: per-token loss on a held-out book, with memory vs without.

Windows of N chunks from a book the model was not trained on are read chunk by chunk; the loss of each
chunk's tokens is measured with the memory of the earlier chunks, and with the memory reset before the chunk.

    python -m jobs.train jobs/configs/train_text.yaml
    python -m benchmarks.textlm --model runs/memgpt-text/model --text ../shared/corpus/moby_dick.txt
"""

import json
from pathlib import Path

import torch
import torch.nn.functional as F

from memgpt import MemGPT

from .common import parser


@torch.no_grad()
def chunk_losses(model: MemGPT, windows: torch.Tensor, memory: bool) -> list[float]:
    """Mean next-token loss of each chunk position over the windows (B, N, C)."""
    B, N, C = windows.shape
    state = model.init_state(B)
    out = []
    for t in range(N):
        chunk = windows[:, t]
        res = model(chunk, memory=state if memory else model.init_state(B))
        out.append(float(F.cross_entropy(res.logits[:, :-1].flatten(0, 1), chunk[:, 1:].flatten())))
        state = res.memory
    return out


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__)
    p.add_argument("--model", required=True)
    p.add_argument("--text", required=True, help="a held-out text file")
    p.add_argument("--chunks", type=int, default=8)
    p.add_argument("--windows", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = MemGPT.from_pretrained(args.model, device="cpu", dtype=torch.float32).eval()
    C = model.config.chunk_size
    tokens = torch.tensor(
        model.tokenizer.encode(Path(args.text).read_text(encoding="utf-8"), add_special_tokens=False)
    )
    width = args.chunks * C
    starts = torch.linspace(0, len(tokens) - width - 1, args.windows).long()
    windows = torch.stack([tokens[s : s + width] for s in starts]).view(args.windows, args.chunks, C)
    with_mem, without = chunk_losses(model, windows, True), chunk_losses(model, windows, False)
    print("| chunk | loss with memory | loss without memory |\n|---|---|---|")
    for t, (a, b) in enumerate(zip(with_mem, without, strict=True)):
        print(f"| {t + 1} | {a:.3f} | {b:.3f} |")
    later = slice(1, None)
    summary = {"with_memory": sum(with_mem[later]) / (args.chunks - 1),
               "without_memory": sum(without[later]) / (args.chunks - 1)}  # fmt: skip
    print(json.dumps({k: round(v, 4) for k, v in summary.items()}))


if __name__ == "__main__":
    main()
