"""Gist memory: n learned write slots whose keys and values, at every layer, are the memory (gist tokens).

Chunk layout: [learned prefix: n entries per layer | M_{t-1}: n entries per layer | chunk (T) | write slots (n)].

g (read): the chunk's tokens attend to the n entries of every layer that the last write left, as to any cache.
f (update): the write slots attend to M_{t-1} and the chunk; their own keys and values, at every layer, are
    M_t, moved to positions n..2n-1 (RoPE keys are re-rotated). Learned: the slots' embeddings, and a prefix of
    keys and values read before everything (prefix tuning: it teaches a frozen backbone the answer's form). A frozen
    backbone reads M_t with the attention it already has, not through one vector per slot fed back as input
    (the slot memory), which loses what the layers computed (Gist tokens, Mu et al. 2023; 500xCompressor keeps
    key/value activations for the same reason).
"""

import math
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

import torch
from torch import nn

from .cache import reserved_cache
from .memory import BackboneInputs, MemoryKind, positions_from_mask, register_memory
from .rope import KeyRotation, find_rotary
from .slots import check  # n slots, as the slot memory's

# how many positions at the end of the backbone call are write slots (None: not a write)
_WRITING: ContextVar = ContextVar("memgpt_gist_writing", default=None)


@dataclass(frozen=True)
class GistOptions:
    # rank of the low-rank update the backbone's linear layers get at the write slots (0: none)
    write_rank: int = 8


@contextmanager
def _writing(n: int):
    token = _WRITING.set(n)
    try:
        yield
    finally:
        _WRITING.reset(token)


class WriteAdapter(nn.Module):
    """A low-rank update of one linear layer that acts at the write slots only (the last n positions of a write):
    the text, the prompts and every read of the memory go through the backbone unchanged."""

    def __init__(self, linear: nn.Linear, rank: int):
        super().__init__()
        self.down = nn.Parameter(torch.empty(rank, linear.in_features))
        self.up = nn.Parameter(torch.zeros(linear.out_features, rank))  # starts as no change
        nn.init.kaiming_uniform_(self.down, a=math.sqrt(5))
        # LoRA's alpha / r with alpha 1: the adapter learns at the memory's rate, well above an adapter's usual
        self.scale = 1.0 / rank

    def hook(self, module: nn.Module, args: tuple, out: torch.Tensor) -> torch.Tensor:
        n = _WRITING.get()
        if n is None:
            return out
        x = args[0][:, -n:]
        delta = (x.to(self.down.dtype) @ self.down.T @ self.up.T * self.scale).to(out.dtype)
        return torch.cat([out[:, :-n], out[:, -n:] + delta], dim=1)


class GistMemory(nn.Module):
    kind = "gist"
    needs_attentions = False

    def __init__(
        self,
        num_slots: int,
        words: torch.Tensor,
        prefix: tuple[torch.Tensor, torch.Tensor],
        rotation=None,
        linears: dict[str, nn.Linear] | None = None,
        rank: int = 0,
    ):
        super().__init__()
        self.adapters = nn.ModuleDict()
        for name, linear in (linears or {}).items() if rank else ():
            adapter = self.adapters[name.replace(".", "_")] = WriteAdapter(linear, rank)
            linear.register_forward_hook(adapter.hook)
        self.num_slots = num_slots
        L, H, _, Dh = prefix[0].shape
        self.shape = (L, H, Dh)
        self.rotation = rotation
        self.write_embed = nn.Parameter(words.detach().clone())  # (n, D)
        self.prefix_keys = nn.Parameter(prefix[0].detach().clone())  # (L, H, n, Dh)
        self.prefix_values = nn.Parameter(prefix[1].detach().clone())

    def init(self, batch_size, device, dtype) -> dict[str, torch.Tensor]:
        L, H, Dh = self.shape
        n = self.num_slots
        empty = torch.zeros(L, batch_size, H, n, Dh, device=device, dtype=dtype)
        return {
            "keys": empty,
            "values": empty.clone(),
            "mask": torch.zeros(batch_size, n, dtype=torch.bool, device=device),  # M_0: nothing to read
            "n_read": torch.zeros(batch_size, dtype=torch.long, device=device),
        }

    def read_inputs(self, state, embeds, mask, write, input_ids=None) -> BackboneInputs:
        B, T, _ = embeds.shape
        n = self.num_slots
        fixed = [
            p.to(embeds.dtype).unsqueeze(1).expand(-1, B, -1, -1, -1)
            for p in (self.prefix_keys, self.prefix_values)
        ]
        keys = torch.cat([fixed[0], state["keys"].to(embeds.dtype)], dim=3)  # (L, B, H, 2n, Dh)
        values = torch.cat([fixed[1], state["values"].to(embeds.dtype)], dim=3)
        cache = reserved_cache(list(zip(keys.unbind(0), values.unbind(0), strict=True)), room=T + n)
        parts, masks = [embeds], [mask]
        if write:  # after the padding, so right-padded rows stay exact
            parts.append(self.write_embed.to(embeds.dtype).unsqueeze(0).expand(B, -1, -1))
            masks.append(mask.new_ones(B, n))
        new_mask = torch.cat(masks, dim=1)
        return BackboneInputs(
            inputs_embeds=torch.cat(parts, dim=1),
            attention_mask=torch.cat([mask.new_ones(B, n), state["mask"].to(mask.dtype), new_mask], dim=1),
            position_ids=positions_from_mask(new_mask, 2 * n),  # prefix at 0..n-1, the memory at n..2n-1
            cache=cache,
            text=slice(0, T),
            attending=_writing(n) if write and len(self.adapters) else None,
            input_ids=input_ids,
        )

    def update(self, state, inputs, hidden, mask, attentions) -> dict[str, torch.Tensor]:
        n = self.num_slots
        keys = torch.stack([layer.keys[:, :, -n:] for layer in inputs.cache.layers])  # (L, B, H, n, Dh)
        values = torch.stack([layer.values[:, :, -n:] for layer in inputs.cache.layers])
        if self.rotation is not None:  # from after the chunk back to n..2n-1
            start = inputs.position_ids[:, -n] - n  # (B,)
            shift = (-start).view(1, -1, 1).expand(keys.shape[0], -1, n)  # (L, B, n)
            keys = self.rotation(keys, shift)
        return {
            "keys": keys,
            "values": values,
            "mask": torch.ones_like(state["mask"]),
            "n_read": state["n_read"] + mask.sum(-1),
        }


def build(config, backbone, tokenizer=None) -> GistMemory:
    rotary = find_rotary(backbone)
    embeddings = backbone.get_input_embeddings().weight
    # start as real tokens (a spread of the vocabulary) and the backbone's own keys and values of them
    pick = torch.linspace(
        min(1000, embeddings.shape[0] // 2), embeddings.shape[0] - 1, config.num_slots
    ).long()
    words = embeddings[pick].detach()
    cache = reserved_cache()
    with torch.no_grad():
        backbone.base_model(inputs_embeds=words[None], cache=cache, use_cache=True)
    prefix = tuple(torch.stack([getattr(layer, k)[0] for layer in cache.layers]) for k in ("keys", "values"))
    layers = backbone.base_model.layers if hasattr(backbone.base_model, "layers") else backbone.base_model
    linears = {n: m for n, m in layers.named_modules() if isinstance(m, nn.Linear)}
    rotation = KeyRotation(rotary) if rotary is not None else None
    return GistMemory(config.num_slots, words, prefix, rotation, linears, config.options().write_rank)


register_memory(
    MemoryKind(
        "gist",
        build,
        options=GistOptions,
        check=check,
        size=lambda config: config.num_slots,
        signature=lambda config: {"num_slots": config.num_slots},
        layer_first=frozenset({"keys", "values"}),
        entries=("mask", 1),
        trained=True,
    )
)
