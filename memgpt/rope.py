"""Moving cached keys to new positions: RoPE is a rotation, so a key moved by Δ positions is rotated by Δ once more.

kv memory gives its kept entries the positions 0..S-1 (their place in the cache) and new tokens the positions
after them, so the backbone never sees a position outside its trained window however long the document is
(StreamingLLM). When eviction closes the gaps, each kept key moves to a lower position; `KeyRotation` rotates it
there with the backbone's own rotary embedding, so every rope type whose angle grows linearly with the
position (default, linear, dynamic inside the window, yarn, llama3, longrope) goes through one code path, and
partial rotary (GPT-NeoX's `rotary_pct`) rotates only the dimensions the embedding covers.
"""

import inspect

import torch
from torch import nn
from transformers import PreTrainedModel


def find_rotary(backbone: PreTrainedModel) -> nn.Module | None:
    """The backbone's shared rotary embedding (`base_model.rotary_emb`), or None for a backbone without RoPE."""
    rotary = getattr(backbone.base_model, "rotary_emb", None)
    if rotary is None:
        return None
    required = [
        p.name
        for p in inspect.signature(rotary.forward).parameters.values()
        if p.default is inspect.Parameter.empty and p.kind is p.POSITIONAL_OR_KEYWORD
    ]
    if required not in (["x", "position_ids"], ["self", "x", "position_ids"]):
        raise ValueError(
            f"{backbone.config.model_type}: its rotary embedding takes {required}, not (x, position_ids); "
            "kv memory can only re-rotate keys of backbones with one rotary embedding for all layers "
            "(use kv_positions='absolute' for it)"
        )
    return rotary


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class KeyRotation:
    """Rotates cached keys by a number of positions with the backbone's rotary embedding (not a submodule)."""

    def __init__(self, rotary: nn.Module):
        self.rotary = rotary

    def __call__(self, keys: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
        """keys (L, B, H, K, Dh) moved by `shift` (L, B, K) positions (negative: towards the start)."""
        L, B, _, K, _ = keys.shape
        probe = keys.new_empty(0, dtype=torch.float32)  # the rotary embedding reads only device and dtype
        cos, sin = self.rotary(probe, shift.reshape(L * B, K))  # (L*B, K, R), times attention_scaling
        scale = getattr(self.rotary, "attention_scaling", 1.0)  # yarn scales cos/sin; a move must not
        cos, sin = (t.view(L, B, 1, K, -1) / scale for t in (cos, sin))
        R = cos.shape[-1]
        rot = keys[..., :R].float()
        moved = (rot * cos + rotate_half(rot) * sin).to(keys.dtype)
        return torch.cat([moved, keys[..., R:]], dim=-1) if R < keys.shape[-1] else moved
