"""KV memory: a fixed budget of the backbone's own key/value entries per layer (training-free).

What is kept after each chunk: the first `sinks` entries (attention sinks), the last `recent` entries, and
of the rest those that received the most attention so far (H2O / SnapKV / StreamingLLM). With no budget
nothing is dropped, and reading chunk by chunk is exactly one forward pass over the whole document.
"""

import torch
from transformers import AttentionInterface, DynamicCache
from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, eager_mask

from .memory import BackboneInputs, positions_from_mask

SCORING_ATTENTION = "memgpt_sdpa_window"
SCORE_WINDOW = 32  # the last queries of each chunk whose attention scores the entries (SnapKV's window)


def sdpa_with_window_scores(module, query, key, value, attention_mask, scaling=None, **kwargs):
    """SDPA for the output; attention weights only for the last SCORE_WINDOW queries, (B, H, w, S)."""
    kwargs.pop("output_attentions", None)
    out, _ = sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, **kwargs)
    q = query[:, :, -SCORE_WINDOW:]
    k = repeat_kv(key, query.shape[1] // key.shape[1])
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    logits = (q @ k.transpose(-1, -2)).float() * scale
    if attention_mask is not None:  # additive (B, 1, T, S) mask, as built for eager attention
        logits = logits + attention_mask[:, :, -q.shape[2] :, : k.shape[2]].float()
    return out, logits.softmax(-1)


# the transformers extension point: any model using ALL_ATTENTION_FUNCTIONS can run it, no forks
AttentionInterface.register(SCORING_ATTENTION, sdpa_with_window_scores)
ALL_MASK_ATTENTION_FUNCTIONS.register(SCORING_ATTENTION, eager_mask)


class KVMemory(torch.nn.Module):
    kind = "kv"

    def __init__(
        self,
        num_layers: int,
        num_kv_heads: int,
        head_dim: int,
        budget: int | None,
        sinks: int,
        recent: int,
        rolling_positions: bool,
    ):
        super().__init__()
        self.shape = (num_layers, num_kv_heads, head_dim)
        self.budget, self.sinks, self.recent = budget, sinks, recent
        # rolling: a new token's position is the number of entries kept, so learned position tables never
        # overflow; absolute: its index in the document, so RoPE distances to kept entries stay true
        self.rolling_positions = rolling_positions
        self.needs_attentions = budget is not None

    def init(self, batch_size: int, device: torch.device, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        L, H, Dh = self.shape
        empty = torch.zeros(L, batch_size, H, 0, Dh, device=device, dtype=dtype)
        return {
            "keys": empty,
            "values": empty.clone(),
            "mask": torch.zeros(batch_size, 0, dtype=torch.bool, device=device),
            "scores": torch.zeros(L, batch_size, 0, device=device, dtype=torch.float32),
            "n_read": torch.zeros(batch_size, dtype=torch.long, device=device),
        }

    def next_position(self, state: dict[str, torch.Tensor]) -> torch.Tensor:
        return state["mask"].sum(-1) if self.rolling_positions else state["n_read"]

    def read_inputs(
        self, state: dict[str, torch.Tensor], embeds: torch.Tensor, mask: torch.Tensor, write: bool
    ) -> BackboneInputs:
        keys, values = state["keys"].to(embeds.dtype), state["values"].to(embeds.dtype)
        cache = DynamicCache(ddp_cache_data=list(zip(keys.unbind(0), values.unbind(0), strict=True)))
        return BackboneInputs(
            inputs_embeds=embeds,
            attention_mask=torch.cat([state["mask"].to(mask.dtype), mask], dim=1),
            position_ids=positions_from_mask(mask, self.next_position(state)),
            cache=cache,
            text=slice(0, embeds.shape[1]),
        )

    def update(self, state, inputs, hidden, mask, attentions) -> dict[str, torch.Tensor]:
        cache = inputs.cache
        keys = torch.stack([layer.keys for layer in cache.layers])  # (L, B, H, S+T, Dh)
        values = torch.stack([layer.values for layer in cache.layers])
        full_mask = torch.cat([state["mask"], mask.bool()], dim=1)  # (B, S+T)
        scores = torch.nn.functional.pad(state["scores"], (0, mask.shape[1]))  # (L, B, S+T)
        if attentions is not None:
            window = attentions[0].shape[2]
            query_mask = mask[:, -window:].to(attentions[0].dtype)[:, None, :, None]  # (B, 1, w, 1)
            received = torch.stack([(a * query_mask).sum(dim=(1, 2)) for a in attentions])  # (L, B, S+T)
            scores = scores + received.float()
        new = {"keys": keys, "values": values, "mask": full_mask, "scores": scores}
        if self.budget is not None and full_mask.shape[1] > self.budget:
            new = self.evict(new)
        new["n_read"] = state["n_read"] + mask.sum(-1)
        return new

    def evict(self, s: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Keep `budget` entries per layer and document: sinks, recent, then the most attended."""
        mask, budget = s["mask"], self.budget  # (B, S)
        L, S = s["scores"].shape[0], mask.shape[1]
        rank = mask.long().cumsum(-1) - 1  # index among the document's real entries
        count = mask.sum(-1, keepdim=True)
        protected = mask & ((rank < self.sinks) | (rank >= count - self.recent))
        priority = s["scores"].masked_fill(~mask, float("-inf")).masked_fill(protected, float("inf"))
        keep = priority.topk(budget, dim=-1).indices  # (L, B, budget)
        # real entries first, in reading order; then the padding
        is_pad = (~mask).unsqueeze(0).expand(L, -1, -1).gather(-1, keep)
        keep = keep.gather(-1, (keep + S * is_pad).argsort(-1))
        idx = keep[:, :, None, :, None].expand(-1, -1, s["keys"].shape[2], -1, s["keys"].shape[4])
        return {
            "keys": s["keys"].gather(3, idx),
            "values": s["values"].gather(3, idx),
            "mask": torch.arange(budget, device=mask.device)[None, :] < count.clamp(max=budget),
            "scores": s["scores"].gather(-1, keep),
        }
