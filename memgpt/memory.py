"""The interface every memory offers the model: what the backbone reads, and how a chunk updates the state."""

from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol

import torch
from transformers import Cache


@dataclass
class BackboneInputs:
    """One backbone call: chunk/prompt embeddings wrapped with what the memory adds around them."""

    inputs_embeds: torch.Tensor  # (B, P, D)
    attention_mask: torch.Tensor  # (B, S + P): cached entries first, then the P new positions
    position_ids: torch.Tensor  # (B, P)
    cache: Cache | None
    text: slice  # where the chunk/prompt tokens sit among the P positions
    attending: AbstractContextManager | None = None  # entered around every backbone call on this state
    input_ids: torch.Tensor | None = None  # (B, T) the chunk's tokens, for a memory that keeps the text


class Memory(Protocol):
    """M_t = f(M_{t-1}, x_t, h_t) is `update`; c_t = g(M_t, q_t) is the backbone's attention over `read_inputs`."""

    kind: str
    needs_attentions: bool

    def init(self, batch_size: int, device: torch.device, dtype: torch.dtype) -> dict[str, torch.Tensor]: ...

    def read_inputs(
        self,
        state: dict[str, torch.Tensor],
        embeds: torch.Tensor,
        mask: torch.Tensor,
        write: bool,
        input_ids: torch.Tensor | None = None,
    ) -> BackboneInputs: ...

    def update(
        self,
        state: dict[str, torch.Tensor],
        inputs: BackboneInputs,
        hidden: torch.Tensor,
        mask: torch.Tensor,
        attentions: tuple[torch.Tensor, ...] | None,
    ) -> dict[str, torch.Tensor]: ...


def positions_from_mask(mask: torch.Tensor, start: torch.Tensor | int = 0) -> torch.Tensor:
    """Position ids that count only real (mask=1) positions, starting at `start` per row. (B, T)"""
    pos = mask.long().cumsum(-1) - 1
    if isinstance(start, torch.Tensor):
        start = start[:, None]
    return pos.clamp(min=0) + start
