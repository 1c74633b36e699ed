"""KV memory: a fixed budget of the backbone's own key/value entries per layer (training-free).

What is kept after each chunk: the first `sinks` entries (attention sinks), the last `recent` entries, and
of the rest those that received the most attention so far (H2O / SnapKV / StreamingLLM). With no budget
nothing is dropped, and reading chunk by chunk is exactly one forward pass over the whole document.

Positions ("cache", the default): a kept entry's position is its place among the kept entries and new tokens
follow them, so positions stay below budget + chunk whatever the document's length; for RoPE backbones the
keys that eviction moves are re-rotated to their new place (memgpt/rope.py). "absolute" gives new tokens their
index in the document instead (true distances, but past the backbone's window positions it never saw).
"""

from contextlib import contextmanager
from contextvars import ContextVar

import torch
from transformers import AttentionInterface
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, eager_mask

from . import hub
from .attention import grouped_sdpa
from .cache import reserved_cache
from .memory import BackboneInputs, MemoryKind, positions_from_mask, register_memory
from .rope import KeyRotation, find_rotary

POSITIONS = ("cache", "absolute")
SCORING_ATTENTION = "memgpt_sdpa_window"
SCORE_WINDOW = 32  # the last queries of each chunk whose attention scores the entries (SnapKV's window)
_SCORING = ContextVar("memgpt_kv_scoring", default=False)
# entries a layer attends to beside its cache: (layer, query, mask) -> (keys, values, mask columns) or None;
# set by a retrieval tier (memgpt/retrieval.py) around the backbone calls that read its state
EXTRA_ENTRIES: ContextVar = ContextVar("memgpt_extra_entries", default=None)


@contextmanager
def scoring_entries():
    """Within it, backbone calls return the window's attention weights that eviction scores entries by."""
    token = _SCORING.set(True)
    try:
        yield
    finally:
        _SCORING.reset(token)


def sdpa_with_window_scores(module, query, key, value, attention_mask, scaling=None, **kwargs):
    """SDPA for the output (`grouped_sdpa`); attention weights only for the last SCORE_WINDOW queries, (B, H, w, S).

    The weights are computed only inside `scoring_entries()` (reading a chunk), not while generating.
    """
    kwargs.pop("output_attentions", None)  # not every architecture passes it: the context says instead
    extra = EXTRA_ENTRIES.get()
    cache_mask = _full_mask(attention_mask, query, key) if extra else None
    found = extra(module.layer_idx, query, cache_mask) if extra else None
    if found is None:
        out, _ = grouped_sdpa(module, query, key, value, attention_mask, scaling=scaling, **kwargs)
    else:
        keys, values, columns = found
        mask = torch.cat([cache_mask, columns], dim=-1)
        both = (torch.cat([key, keys], dim=2), torch.cat([value, values], dim=2))
        out, _ = grouped_sdpa(module, query, *both, mask, scaling=scaling, **kwargs)
    if not _SCORING.get():
        return out, None
    B, H, _, Dh = query.shape
    Hkv, w = key.shape[1], min(SCORE_WINDOW, query.shape[2])
    # grouped-query attention without repeating the keys: query head h reads kv head h // (H // Hkv)
    q = query[:, :, -w:].reshape(B, Hkv, H // Hkv * w, Dh)
    scale = scaling if scaling is not None else Dh**-0.5
    logits = (q @ key.transpose(-1, -2)).float().view(B, H, w, -1) * scale  # (B, H, w, S)
    if attention_mask is not None:  # additive (B, 1, T, S) mask, as built for eager attention
        logits = logits + attention_mask[:, :, -w:, : key.shape[2]].float()
    return out, logits.softmax(-1)


def _full_mask(attention_mask: torch.Tensor | None, query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
    """The additive (B, 1, T, S) mask over the cache's S entries; causal when transformers passed none."""
    if attention_mask is not None:
        return attention_mask[:, :, :, : key.shape[2]]
    T, S = query.shape[2], key.shape[2]
    causal = torch.ones(T, S, dtype=torch.bool, device=query.device).tril(S - T)
    mask = torch.zeros(T, S, dtype=query.dtype, device=query.device).masked_fill(
        ~causal, torch.finfo(query.dtype).min
    )
    return mask.expand(query.shape[0], 1, T, S)


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
        positions: str = "cache",
        rotation: KeyRotation | None = None,
        gap: int = 0,
        decay: float = 1.0,
    ):
        super().__init__()
        self.shape = (num_layers, num_kv_heads, head_dim)
        self.budget, self.sinks, self.recent = budget, sinks, recent
        self.positions = positions
        self.decay = decay
        # positions left free after the sinks, where a retrieval tier puts what it brings back
        self.gap = gap
        # RoPE keys carry their position: moved entries are rotated to their new place (None: no RoPE)
        self.rotation = rotation if positions == "cache" else None
        self.needs_attentions = budget is not None

    def init(self, batch_size, device, dtype) -> dict[str, torch.Tensor]:
        L, H, Dh = self.shape
        empty = torch.zeros(L, batch_size, H, 0, Dh, device=device, dtype=dtype)
        return {
            "keys": empty,
            "values": empty.clone(),
            "mask": torch.zeros(batch_size, 0, dtype=torch.bool, device=device),
            "scores": torch.zeros(L, batch_size, 0, device=device, dtype=torch.float32),
            "n_read": torch.zeros(batch_size, dtype=torch.long, device=device),
        }

    def position(self, rank: torch.Tensor) -> torch.Tensor:
        """The position of the entry with index `rank` among the kept ones ("cache" positions)."""
        return rank + self.gap * (rank >= self.sinks) if self.gap else rank

    def chunk_positions(self, state: dict[str, torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
        if self.positions == "absolute":
            return positions_from_mask(mask, state["n_read"])
        return self.position(positions_from_mask(mask, state["mask"].sum(-1)))

    def read_inputs(self, state, embeds, mask, write, input_ids=None) -> BackboneInputs:
        keys, values = state["keys"].to(embeds.dtype), state["values"].to(embeds.dtype)
        # room for this chunk's entries behind the kept ones: written in place, no concatenation
        cache = reserved_cache(list(zip(keys.unbind(0), values.unbind(0), strict=True)), room=embeds.shape[1])
        return BackboneInputs(
            inputs_embeds=embeds,
            attention_mask=torch.cat([state["mask"].to(mask.dtype), mask], dim=1),
            position_ids=self.chunk_positions(state, mask),
            cache=cache,
            text=slice(0, embeds.shape[1]),
            input_ids=input_ids,
        )

    def update(self, state, inputs, hidden, mask, attentions) -> dict[str, torch.Tensor]:
        layers = inputs.cache.layers  # each (B, H, S+T, Dh): the kept entries, then this chunk's
        full_mask = torch.cat([state["mask"], mask.bool()], dim=1)  # (B, S+T)
        # (L, B, S+T); decay < 1 forgets old attention, so entries heavy long ago do not crowd out newer ones
        scores = torch.nn.functional.pad(state["scores"] * self.decay, (0, mask.shape[1]))
        if attentions is not None:
            window = attentions[0].shape[2]
            query_mask = mask[:, -window:].to(attentions[0].dtype)[:, None, :, None]  # (B, 1, w, 1)
            received = torch.stack([(a * query_mask).sum(dim=(1, 2)) for a in attentions])  # (L, B, S+T)
            scores = scores + received.float()
        if self.budget is not None and full_mask.shape[1] > self.budget:
            keep = self.keep(full_mask, scores)
            new = self.evict(layers, full_mask, scores, keep)
            new.update(self.archive(state, layers, full_mask, scores, keep))
        else:
            keys = torch.stack([layer.keys for layer in layers])  # (L, B, H, S+T, Dh)
            values = torch.stack([layer.values for layer in layers])
            new = {"keys": keys, "values": values, "mask": full_mask, "scores": scores}
        new["n_read"] = state["n_read"] + mask.sum(-1)
        return {**state, **new}  # what a subclass keeps beside the entries (a retrieval store) carries over

    def keep(self, mask: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """The `budget` entries each layer keeps, (L, B, budget): sinks, recent, then the most attended.

        Real entries first, in reading order; then padding (documents with fewer entries than the budget).
        """
        L, S = scores.shape[0], mask.shape[1]  # mask (B, S), scores (L, B, S)
        rank = mask.long().cumsum(-1) - 1  # index among the document's real entries
        count = mask.sum(-1, keepdim=True)
        protected = mask & ((rank < self.sinks) | (rank >= count - self.recent))
        priority = scores.masked_fill(~mask, float("-inf")).masked_fill(protected, float("inf"))
        keep = priority.topk(self.budget, dim=-1).indices  # (L, B, budget)
        is_pad = (~mask).unsqueeze(0).expand(L, -1, -1).gather(-1, keep)
        return keep.gather(-1, (keep + S * is_pad).argsort(-1))

    def evict(
        self, layers, mask: torch.Tensor, scores: torch.Tensor, keep: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """The state holding only the entries `keep` of every layer, at their new places."""
        count = mask.sum(-1, keepdim=True)
        keys = _take(layers, "keys", keep)
        if (
            self.rotation is not None
        ):  # entry j moves from its place among all entries to its place among the kept
            rank = (mask.long().cumsum(-1) - 1).unsqueeze(0).expand(keep.shape[0], -1, -1)
            shift = self.position(torch.arange(keep.shape[-1], device=mask.device)) - self.position(
                rank.gather(-1, keep)
            )
            is_pad = ~mask.unsqueeze(0).expand(keep.shape[0], -1, -1).gather(-1, keep)
            keys = self.rotation(keys, shift.masked_fill(is_pad, 0))
        return {
            "keys": keys,
            "values": _take(layers, "values", keep),
            "mask": torch.arange(self.budget, device=mask.device)[None, :] < count.clamp(max=self.budget),
            "scores": scores.gather(-1, keep),
        }

    def archive(self, state, layers, mask, scores, keep) -> dict[str, torch.Tensor]:
        """What becomes of the entries eviction drops: nothing here; a retrieval tier keeps them."""
        return {}


def _take(layers, name: str, keep: torch.Tensor) -> torch.Tensor:
    """Entries `keep` (L, B, K) of every layer's cache, as one (L, B, H, K, Dh) tensor.

    Whole rows by index_select: an element-wise gather, or stacking the layers first, costs 4x as much.
    """
    sources = [getattr(layer, name) for layer in layers]  # each (B, H, S, Dh)
    B, H, S, Dh = sources[0].shape
    K = keep.shape[-1]
    start = torch.arange(B * H, device=keep.device).view(B, H, 1) * S  # where each (document, head) starts
    rows = [(start + keep[i][:, None, :]).flatten() for i in range(len(sources))]  # (B * H * K,) per layer
    if torch.is_grad_enabled() and sources[0].requires_grad:  # out= records no gradient
        return torch.stack(
            [src.reshape(-1, Dh)[r].view(B, H, K, Dh) for src, r in zip(sources, rows, strict=True)]
        )
    out = sources[0].new_empty(len(sources), B, H, K, Dh)
    for i, (src, r) in enumerate(zip(sources, rows, strict=True)):
        torch.index_select(src.reshape(-1, Dh), 0, r, out=out[i].view(-1, Dh))  # copied once, in place
    return out


def check(config) -> None:
    """What every kv-family memory needs of its config."""
    if not 0.0 <= config.kv_decay <= 1.0:
        raise ValueError(f"kv_decay must be in [0, 1], got {config.kv_decay}")
    if config.kv_positions not in POSITIONS:
        raise ValueError(f"kv_positions must be one of {POSITIONS}, got {config.kv_positions!r}")
    if config.kv_budget is not None and config.kv_budget < config.kv_sinks + config.kv_recent:
        raise ValueError(
            f"kv_budget ({config.kv_budget}) must hold kv_sinks + kv_recent ({config.kv_sinks + config.kv_recent})"
        )


def kv_arguments(config, backbone, room: int = 0, what: str = "") -> tuple:
    """KVMemory's positional arguments for this backbone, once the budget, a chunk and `room` fit its window."""
    if config.kv_positions == "cache" and config.kv_budget is not None:
        window = hub.position_window(backbone.config)
        if window is not None and config.kv_budget + config.chunk_size + room > window:
            raise ValueError(
                f"kv_budget + chunk_size{what} ({config.kv_budget} + {config.chunk_size}"
                f"{f' + {room}' if room else ''}) must fit the backbone's {window}-position window"
            )
    shapes = hub.backbone_shapes(backbone.config)
    rotary = find_rotary(backbone) if config.kv_positions == "cache" else None
    rotation = KeyRotation(rotary) if rotary is not None else None
    shape = (shapes["num_layers"], shapes["num_kv_heads"], shapes["head_dim"])
    return (*shape, config.kv_budget, config.kv_sinks, config.kv_recent, config.kv_positions, rotation)


def build(config, backbone, tokenizer=None) -> KVMemory:
    return KVMemory(*kv_arguments(config, backbone), decay=config.kv_decay)


LAYOUT = {
    "layer_first": frozenset({"keys", "values", "scores"}),
    "entry_dims": {"keys": 3, "values": 3, "mask": 1, "scores": 2},
    "entries": ("keys", 3),
}
register_memory(MemoryKind("kv", build, check=check, size=lambda config: config.kv_budget, **LAYOUT))
