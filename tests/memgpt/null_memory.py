"""A memory that keeps nothing: registered from this file alone, to show a new memory needs no other change."""

from dataclasses import dataclass

import torch
from torch import nn

from memgpt.memory import BackboneInputs, MemoryKind, positions_from_mask, register_memory


@dataclass(frozen=True)
class NullOptions:
    label: str = "nothing"  # an option of its own, given as MemGPTConfig(memory_options={"label": ...})


class NullMemory(nn.Module):
    """The backbone reads each chunk or prompt alone: M_t = M_0 for every t."""

    kind = "null"
    needs_attentions = False

    def init(self, batch_size: int, device: torch.device, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        return {"n_read": torch.zeros(batch_size, dtype=torch.long, device=device)}

    def read_inputs(self, state, embeds, mask, write, input_ids=None) -> BackboneInputs:
        return BackboneInputs(embeds, mask, positions_from_mask(mask), None, slice(0, embeds.shape[1]))

    def update(self, state, inputs, hidden, mask, attentions) -> dict[str, torch.Tensor]:
        return {"n_read": state["n_read"] + mask.sum(-1)}


register_memory(
    MemoryKind(
        "null",
        lambda config, backbone, tokenizer: NullMemory(),
        options=NullOptions,
        size=lambda config: 0,
        signature=lambda config: {"label": config.options().label},
    )
)
