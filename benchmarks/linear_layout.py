"""Linear weights stored row-major (as loaded) or column-major (`MemGPT.eval()` on a CPU), side by side.

python -m benchmarks.linear_layout                 # SmolLM2-135M's weight shapes, 2 threads
python -m benchmarks.linear_layout --rows 4 36 2048 --threads 1
python -m benchmarks.linear_layout --int4      # and torch's CPU kernel for 4-bit weights in groups of 32

For each of the backbone's weight shapes and a number of rows (4: a step of generation for a group of 4;
36: a verification pass of 4 x 9 drafted tokens; 512 and 2,048: a chunk's read), milliseconds of one
`F.linear`, each layout timed over enough distinct weights (~400 MB) that they come from memory, not cache,
as a whole model's do; then the column-major layout's speed over the row-major's. With --int4, also the weights
put on a 4-bit grid in groups of 32 (GGUF's Q4_1, the format of the default model's file, so the grid holds the
offline SmolLM2's weights exactly) and multiplied by torch's CPU kernel for them (`_weight_int4pack_mm_for_cpu`,
fp32 activations): an eighth of the bytes to read.
"""

import time

import torch
import torch.nn.functional as F

from . import common

# SmolLM2-135M (576 wide, 1,536 in the MLP, 3 kv heads of 64): q and o, k and v, gate and up, down
SHAPES = [(576, 576), (192, 576), (1536, 576), (576, 1536)]


def milliseconds(weights: list, rows: int, in_features: int, multiply=F.linear, repeats: int = 3) -> float:
    """The best of `repeats` rounds of `multiply(x, w)` over every one of `weights`, per product."""
    x = torch.randn(rows, in_features)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for w in weights:
            multiply(x, w)
        best = min(best, (time.perf_counter() - start) / len(weights))
    return best * 1e3


def int4_weights(w: torch.Tensor, group: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """`w` (out, in) on a Q4_1 grid, d * q + m per group of `group` inputs, q in 0..15: the packed q and the
    kernel's (scale, zero) per group, whose w is (q - 8) * scale + zero."""
    groups = w.view(w.shape[0], -1, group)
    low, high = groups.amin(-1), groups.amax(-1)
    d = ((high - low) / 15).clamp(min=1e-8)
    q = ((groups - low[..., None]) / d[..., None]).round().clamp(0, 15).to(torch.int32).view_as(w)
    packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q, 2)
    return packed, torch.stack([d, low + 8 * d], dim=-1).transpose(0, 1).contiguous()


def int4_product(x: torch.Tensor, weight: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    packed, scales = weight
    return torch.ops.aten._weight_int4pack_mm_for_cpu(x, packed, 32, scales)


def main(argv: list[str] | None = None) -> None:
    p = common.parser(__doc__)
    p.add_argument("--rows", type=int, nargs="+", default=[4, 36, 512, 2048])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--megabytes", type=int, default=400, help="distinct weights per shape, in all")
    p.add_argument("--int4", action="store_true", help="also 4-bit weights in groups of 32 (torch's CPU kernel)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    results = []
    for out_features, in_features in SHAPES:
        n = max(2, args.megabytes * 2**20 // (out_features * in_features * 4))
        row_major = [torch.randn(out_features, in_features) for _ in range(n)]
        column_major = [w.t().contiguous().t() for w in row_major]  # what memgpt.layout stores
        int4 = [int4_weights(w) for w in row_major] if args.int4 else []
        for rows in args.rows:
            row_ms = milliseconds(row_major, rows, in_features)
            column_ms = milliseconds(column_major, rows, in_features)
            results.append({"weight (out x in)": f"{out_features} x {in_features}", "rows": rows,
                            "row-major ms": row_ms, "column-major ms": column_ms,
                            "speed-up": row_ms / column_ms})  # fmt: skip
            if int4:
                results[-1]["int4 ms"] = milliseconds(int4, rows, in_features, int4_product)
        del row_major, column_major, int4
    common.print_table(results, f"F.linear, one weight at a time from memory; {common.machine()}")
    print(f"command: {common.command()}")


if __name__ == "__main__":
    main()
