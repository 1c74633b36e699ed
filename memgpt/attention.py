"""SDPA whose query heads share their key/value heads on a CPU, instead of copies of them.

With a mask and more than one query, transformers' SDPA repeats each key/value head for its group of query
heads (`repeat_kv`): a copy of the whole cache, per layer, per forward pass. SmolLM2 has 3 key/value heads for
9 query heads, so a pass that verifies a few drafted tokens over a cache of 1,500 entries copied 3x that cache in
every layer, and the copies cost more than the attention. torch's own grouped-query SDPA (`enable_gqa`) gives the
same numbers on a CPU without the copy; on CUDA, with a mask, it would leave the fast kernels, so there
transformers' path is kept.
"""

import torch
import torch.nn.functional as F
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

GROUPED_SDPA = "memgpt_sdpa"


def grouped_sdpa(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    """transformers' `sdpa_attention_forward`, with grouped heads where that saves the copies: a CPU, a mask,
    several queries (one query transformers already packs). Output (B, T, H, Dh)."""
    grouped = (
        attention_mask is not None
        and query.device.type == "cpu"
        and query.shape[1] != key.shape[1]
        and query.shape[2] > 1
        and kwargs.get("position_bias") is None
        and kwargs.get("softcap") is None
    )
    if not grouped:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout, scaling, **kwargs)
    out = F.scaled_dot_product_attention(
        query, key, value, attn_mask=attention_mask, dropout_p=dropout, scale=scaling, enable_gqa=True
    )  # (B, H, T, Dh)
    return out.transpose(1, 2).contiguous(), None


def use_grouped_sdpa(backbone: torch.nn.Module) -> None:
    """The backbone's SDPA attention, if that is what it uses, made `grouped_sdpa` (other kinds are kept)."""
    if getattr(backbone.config, "_attn_implementation", None) == "sdpa":
        backbone.set_attn_implementation(GROUPED_SDPA)


# the transformers extension point: any model using ALL_ATTENTION_FUNCTIONS can run it, no forks
AttentionInterface.register(GROUPED_SDPA, grouped_sdpa)
ALL_MASK_ATTENTION_FUNCTIONS.register(GROUPED_SDPA, sdpa_mask)
