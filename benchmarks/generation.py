"""Generation: tokens/s of `generate` continuing from a memory state vs the backbone's own `generate`.

Both see a prompt of the same visible length; MemGPT also reads its memory (slots or kept kv entries).

    python -m benchmarks.generation         # ~1 minute on 2 CPU cores
    python -m benchmarks.generation --full
    python -m benchmarks.generation --backbone qwen2-0.5b --layers 4   # a real model's shape
"""

import copy

import torch

from memgpt import MemGPT, MemGPTConfig

from . import common


def main() -> None:
    p = common.parser(__doc__)
    p.add_argument("--full", action="store_true")
    common.add_backbone_args(p)
    args = p.parse_args()
    backbone = common.backbone_config(args)
    new_tokens, batch = (256, 8) if args.full else (64, 4)
    g = torch.Generator().manual_seed(0)
    prompt = torch.randint(2, 4096, (batch, 64), generator=g)
    hf = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, pad_token_id=1)
    rows = []
    for memory, options in (("slots", {}), ("kv", {"kv_budget": 512})):
        model = MemGPT(MemGPTConfig(backbone, memory=memory, **options)).eval()
        with torch.inference_mode():
            state = model.read([torch.randint(2, 4096, (4_000,), generator=g) for _ in range(batch)])
        # the baseline is the same weights as a plain HF model: SDPA attention, not kv memory's scoring function
        plain = copy.deepcopy(model.backbone)
        plain.set_attn_implementation("sdpa")
        fns = {
            "backbone": lambda b=plain: b.generate(prompt, **hf),
            "memgpt": lambda m=model, s=state: m.generate(
                prompt, memory=s, max_new_tokens=new_tokens, eos_token_id=-1
            ),
        }
        with torch.inference_mode():
            seconds = common.interleaved(fns, repeat=3)
        rows.append(
            {
                "memory": memory,
                "batch": batch,
                "new tokens": new_tokens,
                "backbone tok/s": batch * new_tokens / seconds["backbone"],
                "memgpt tok/s": batch * new_tokens / seconds["memgpt"],
                "ratio": seconds["backbone"] / seconds["memgpt"],
            }
        )
    common.print_table(
        rows,
        f"generate from memory vs backbone generate, 64-token prompt, {common.backbone_label(args)} (goal: ratio >= 0.9)",
    )
    print(f"machine: {common.machine()}\ncommand: {common.command()}")


if __name__ == "__main__":
    main()
