"""MemoryState: the fixed-size memory of a batch of documents, saved and loaded with safetensors."""

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save as save_bytes
from safetensors.torch import save_file

from .memory import MemoryKind, memory_kind


@dataclass
class MemoryState:
    """Tensors whose first dimension is the document, or the layer then the document (the memory's
    `MemoryKind.layer_first`); every memory keeps n_read (B,). The built-in memories hold:

    slots: memory (B, n, D)
    kv:    keys/values (L, B, H, S, Dh), mask (B, S), scores (L, B, S)
    retrieval: kv's, plus the store in host memory: host_keys/host_values (L, B, H, N, Dh), host_len and
           host_fill (B,)
    archival: kv's, plus every token read in host memory: host_tokens (B, N) int32
    `signature` names the model the state belongs to; loading it into another model fails clearly.
    """

    kind: str
    tensors: dict[str, torch.Tensor]
    signature: dict[str, Any]

    @property
    def batch_size(self) -> int:
        return int(self.tensors["n_read"].shape[0])

    @property
    def n_read(self) -> torch.Tensor:
        """Tokens read so far per document, (B,)."""
        return self.tensors["n_read"]

    @property
    def layout(self) -> MemoryKind:
        return memory_kind(self.kind)

    def size(self) -> int:
        """Number of memory entries held per document (slots, or kv entries per layer)."""
        entries = self.layout.entries
        return 0 if entries is None else int(self.tensors[entries[0]].shape[entries[1]])

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors.values())

    def _batch_dim(self, name: str) -> int:
        return 1 if name in self.layout.layer_first else 0

    def select(self, index: torch.Tensor | list[int]) -> "MemoryState":
        """The states of the documents at `index`, in that order."""
        index = torch.as_tensor(index, dtype=torch.long, device=self.n_read.device)
        return self._map(lambda name, t: t.index_select(self._batch_dim(name), index))

    def scatter(self, index: torch.Tensor | list[int], other: "MemoryState") -> "MemoryState":
        """A copy of self where the documents at `index` take their state from `other` (batch len(index))."""
        index = torch.as_tensor(index, dtype=torch.long, device=self.n_read.device)
        a, b = _pad_entries(self, other)
        return a._map(lambda name, t: t.index_copy(a._batch_dim(name), index, b.tensors[name].to(t.dtype)))

    @staticmethod
    def cat(states: list["MemoryState"]) -> "MemoryState":
        """Concatenate states of several batches into one batch."""
        first = states[0]
        widths = _widths(states)
        states = [_pad_to(s, widths) for s in states]
        tensors = {
            name: torch.cat([s.tensors[name] for s in states], dim=first._batch_dim(name))
            for name in first.tensors
        }
        return MemoryState(first.kind, tensors, first.signature)

    def detach(self) -> "MemoryState":
        return self._map(lambda _, t: t.detach())

    def to(self, device: torch.device | str) -> "MemoryState":
        """On `device`, except a retrieval store (`host_*`), which stays in host memory."""
        return self._map(lambda name, t: t if name.startswith("host_") else t.to(device))

    def _map(self, fn) -> "MemoryState":
        return MemoryState(self.kind, {k: fn(k, v) for k, v in self.tensors.items()}, self.signature)

    def save(self, path: str | Path, info: dict | None = None) -> None:
        """safetensors at `path`; `info` (JSON) travels with it, read back by `read_info`."""
        save_file(self._cpu_tensors(), str(path), metadata=self._metadata(info))

    def to_bytes(self, info: dict | None = None) -> bytes:
        """The bytes `save` would write."""
        return save_bytes(self._cpu_tensors(), metadata=self._metadata(info))

    def _cpu_tensors(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().contiguous().cpu() for k, v in self.tensors.items()}

    def _metadata(self, info: dict | None) -> dict[str, str]:
        meta = {"kind": self.kind, "signature": json.dumps(self.signature, sort_keys=True)}
        return meta | ({"info": json.dumps(info, sort_keys=True)} if info else {})

    @staticmethod
    def read_info(path: str | Path) -> dict:
        """The `info` saved with a state ({} if none), without loading its tensors."""
        with safe_open(str(path), framework="pt") as f:
            return json.loads((f.metadata() or {}).get("info", "{}"))

    @classmethod
    def load(cls, path: str | Path, device: torch.device | str = "cpu") -> "MemoryState":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"memory state file not found: {path}")
        try:
            with safe_open(str(path), framework="pt", device=str(device)) as f:
                meta = f.metadata() or {}
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as e:  # safetensors raises its own error types for corrupt files
            raise ValueError(f"{path} is not a valid safetensors memory state: {e}") from e
        if "kind" not in meta or "signature" not in meta or "n_read" not in tensors:
            raise ValueError(
                f"{path} is a safetensors file but not a MemGPT memory state (no kind/signature)"
            )
        try:
            memory_kind(meta["kind"])
        except ValueError as e:
            raise ValueError(
                f"{path} holds a {meta['kind']!r} memory state, a memory unknown here: {e}"
            ) from None
        return cls(meta["kind"], tensors, json.loads(meta["signature"]))


def _pad_to(state: MemoryState, widths: dict[str, int]) -> MemoryState:
    """Pad each tensor with masked-out (zero) entries up to `widths[name]` along its entries dimension."""
    t = dict(state.tensors)
    for name, width in widths.items():
        dim = state.layout.entry_dims[name]
        extra = width - t[name].shape[dim]
        if extra > 0:
            t[name] = torch.nn.functional.pad(t[name], [0, 0] * (t[name].dim() - dim - 1) + [0, extra])
    return MemoryState(state.kind, t, state.signature)


def _widths(states: list[MemoryState]) -> dict[str, int]:
    """The most entries any of `states` holds, per tensor that grows with them."""
    dims = states[0].layout.entry_dims
    return {n: max(s.tensors[n].shape[d] for s in states) for n, d in dims.items() if n in states[0].tensors}


def _pad_entries(a: MemoryState, b: MemoryState) -> tuple[MemoryState, MemoryState]:
    widths = _widths([a, b])
    return _pad_to(a, widths), _pad_to(b, widths)
