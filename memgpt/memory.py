"""The interface every memory offers the model, and the registry that builds a memory by its name.

A memory is one module: its `Memory` class (what the backbone reads, how a chunk updates the state) and one
`register_memory(MemoryKind(...))` call that says what it is (how it is built from a config, which options
it reads, its state's layout, its size). The model, the config, the state and the jobs ask the registry.
"""

from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn
from transformers import Cache, LogitsProcessor

# a MemGPTConfig: memgpt/config.py builds on this module, so it is not imported here
Config = Any


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
    # what the memory asks of the tokens generated from it (archival: prefer the words it recalled)
    logits_processor: LogitsProcessor | None = None


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


def _no_check(config: Config) -> None:
    return None


@dataclass(frozen=True)
class MemoryKind:
    """What a memory is, declared once beside its code.

    build: (config, backbone, tokenizer) -> the `Memory` module.
    options: a memory with options of its own (beside MemGPTConfig's fields) declares them as a dataclass,
        given in `MemGPTConfig(memory_options={...})` and read with `config.options()`.
    check: raises ValueError for a config it cannot run with.
    size: entries it holds per document (None: unbounded); prompt_room: positions it puts before a prompt.
    signature: what a saved state must agree with besides the backbone's shapes.
    layer_first: state tensors whose first dimension is the layer (the document is the second);
    entry_dims: state tensors that grow with the entries held, and which dimension grows (padded when
        batched); entries: the tensor and dimension that count the entries held.
    trained: its weights are learned (slots): it reads prompts in the task format it was trained on, not a
        chat template, and a conversation needs an untrained (training-free) memory.
    """

    name: str
    build: Callable[..., nn.Module]
    options: type | None = None
    check: Callable[[Config], None] = _no_check
    size: Callable[[Config], int | None] = lambda config: None
    prompt_room: Callable[[Config], int] = lambda config: 0
    signature: Callable[[Config], dict[str, Any]] = lambda config: {}
    layer_first: frozenset[str] = frozenset()
    entry_dims: Mapping[str, int] = field(default_factory=dict)
    entries: tuple[str, int] | None = None
    trained: bool = False


MEMORIES: dict[str, MemoryKind] = {}


def register_memory(kind: MemoryKind) -> MemoryKind:
    """Make `kind` buildable by its name (`MemGPTConfig(memory=kind.name)`); a name is registered once."""
    known = MEMORIES.get(kind.name)
    same = known is not None and _origin(known.build) == _origin(
        kind.build
    )  # the same module, imported again
    if known is not None and not same:
        raise ValueError(f"a memory named {kind.name!r} is already registered")
    MEMORIES[kind.name] = kind
    return kind


def _origin(fn: Callable) -> tuple[str, str]:
    return fn.__module__, fn.__qualname__


def memory_kind(name: str) -> MemoryKind:
    if name not in MEMORIES:
        raise ValueError(f"memory must be one of {memory_names()}, got {name!r}")
    return MEMORIES[name]


def memory_names(trained: bool | None = None) -> tuple[str, ...]:
    """The registered memories' names (only the trained, or only the training-free ones, if asked)."""
    return tuple(n for n, k in MEMORIES.items() if trained is None or k.trained == trained)


def positions_from_mask(mask: torch.Tensor, start: torch.Tensor | int = 0) -> torch.Tensor:
    """Position ids that count only real (mask=1) positions, starting at `start` per row. (B, T)"""
    pos = mask.long().cumsum(-1) - 1
    if isinstance(start, torch.Tensor):
        start = start[:, None]
    return pos.clamp(min=0) + start
