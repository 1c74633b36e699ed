"""Slot memory: n learned vectors per document, read before each chunk and rewritten after it (RMT/ARMT)."""

import torch
from torch import nn

from . import hub
from .memory import BackboneInputs, MemoryKind, positions_from_mask, register_memory

PRETRAINED_GATE_BIAS = -2.0  # sigmoid(-2) = 0.12 of a write slot's output enters M_t at first


class SlotMemory(nn.Module):
    """Chunk layout: [read slots (n) | chunk tokens (T) | write slots (n)].

    g (read): the chunk's tokens attend to the read slots, which hold M_{t-1}.
    f (update): the backbone's outputs at the write slots, projected and gated with M_{t-1}, are M_t.
    """

    kind = "slots"
    needs_attentions = False

    def __init__(
        self, num_slots: int, hidden_size: int, init_std: float = 0.02, write_scale: float | None = None
    ):
        super().__init__()
        self.num_slots = num_slots
        self.initial = nn.Parameter(torch.randn(num_slots, hidden_size) * init_std)  # M_0
        self.read_embed = nn.Parameter(torch.zeros(num_slots, hidden_size))
        self.write_embed = nn.Parameter(torch.randn(num_slots, hidden_size) * init_std)
        self.proj = nn.Linear(hidden_size, hidden_size)
        self.gate = nn.Linear(2 * hidden_size, hidden_size)
        # proj starts as the identity (RMT feeds write outputs back unchanged): a write slot's output enters the
        # next chunk as it left the backbone, in the space a pretrained backbone's (tied) embeddings and LM head
        # share, so its in-context reading already applies; a random proj would start the memory as noise.
        nn.init.eye_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)
        nn.init.normal_(self.gate.weight, std=init_std)
        nn.init.zeros_(self.gate.bias)
        if write_scale is not None:  # a pretrained backbone (see `write_scale` below)
            # A pretrained backbone's last hidden states are larger than its token embeddings (13x in SmolLM2):
            # a slot that large drowns what the layers add to it in the residual stream, so the write is scaled
            # to a token's size. The gate starts mostly shut (12 % new, as an LSTM's forget gate starts open):
            # what M_0 learned to do for a frozen backbone (a soft prompt) survives the first writes while
            # writing is learned. Trained from scratch with its backbone, the memory keeps the plain start.
            self.proj.weight.data.mul_(write_scale)
            nn.init.constant_(self.gate.bias, PRETRAINED_GATE_BIAS)

    def init(self, batch_size, device, dtype) -> dict[str, torch.Tensor]:
        memory = self.initial.to(device, dtype).unsqueeze(0).expand(batch_size, -1, -1)  # (B, n, D)
        return {"memory": memory, "n_read": torch.zeros(batch_size, dtype=torch.long, device=device)}

    def read_inputs(self, state, embeds, mask, write, input_ids=None) -> BackboneInputs:
        memory = state["memory"].to(embeds.dtype)  # (B, n, D)
        B, n = memory.shape[:2]
        parts = [memory + self.read_embed.to(embeds.dtype), embeds]
        ones = mask.new_ones(B, n)
        masks = [ones, mask]
        if write:  # write slots sit after the padding, so right-padded rows stay exact
            parts.append(memory + self.write_embed.to(embeds.dtype))
            masks.append(ones)
        full_mask = torch.cat(masks, dim=1)
        return BackboneInputs(
            inputs_embeds=torch.cat(parts, dim=1),
            attention_mask=full_mask,
            position_ids=positions_from_mask(full_mask),
            cache=None,
            text=slice(n, n + embeds.shape[1]),
        )

    def update(self, state, inputs, hidden, mask, attentions) -> dict[str, torch.Tensor]:
        prev = state["memory"]  # (B, n, D)
        candidate = self.proj(hidden[:, -self.num_slots :].to(self.proj.weight.dtype))  # (B, n, D)
        gate = torch.sigmoid(self.gate(torch.cat([candidate, prev.to(candidate.dtype)], dim=-1)))
        memory = gate * candidate + (1 - gate) * prev.to(candidate.dtype)
        return {"memory": memory, "n_read": state["n_read"] + mask.sum(-1)}


def build(config, backbone, tokenizer=None) -> SlotMemory:
    init_std = getattr(backbone.config, "initializer_range", 0.02)
    hidden = hub.backbone_shapes(backbone.config)["hidden_size"]
    return SlotMemory(config.num_slots, hidden, init_std, write_scale(backbone))


def write_scale(backbone) -> float | None:
    """A token embedding's size over a last hidden state's (the final norm's weights set it), at most 1, for a
    backbone loaded with its weights; None for one built from its config (its weights train with the memory)."""
    if not getattr(backbone.config, "name_or_path", ""):
        return None
    embed = backbone.get_input_embeddings().weight.detach().float()
    norms = [p for n, p in backbone.named_parameters() if "norm" in n and p.dim() == 1]
    if not norms:
        return 1.0
    return min(1.0, float(embed.pow(2).mean().sqrt() / norms[-1].detach().float().pow(2).mean().sqrt()))


def check(config) -> None:
    if config.num_slots < 1:
        raise ValueError(f"num_slots must be >= 1, got {config.num_slots}")


register_memory(
    MemoryKind(
        "slots",
        build,
        check=check,
        size=lambda config: config.num_slots,
        signature=lambda config: {"num_slots": config.num_slots},
        entry_dims={},
        entries=("memory", 1),
        trained=True,
    )
)
