"""A key/value cache that writes new entries into room reserved up front instead of concatenating.

transformers' DynamicLayer copies the whole cache at every update (`torch.cat`): per chunk when a kv memory is
read, per token when generating from it. Here each update copies only the new entries; when the room runs out
the buffer doubles, so generating N tokens copies the cache O(log N) times, not N times.
"""

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer


class ReservedLayer(DynamicLayer):
    """A DynamicLayer whose `keys`/`values` are views of a larger buffer: (B, H, S, Dh) of (B, H, S + room, Dh).

    Under autograd it concatenates, as DynamicLayer does. Offloading is not supported (the buffer stays put).
    """

    def __init__(self, room: int = 0, keys: torch.Tensor | None = None, values: torch.Tensor | None = None):
        super().__init__()
        self.room = room
        if keys is not None and values is not None:
            self._reserve(keys, values, room)

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self._reserve(key_states[..., :0, :], value_states[..., :0, :], self.room)

    def _reserve(self, keys: torch.Tensor, values: torch.Tensor, room: int) -> None:
        B, H, S, _ = keys.shape
        self._keys = keys.new_empty(B, H, S + room, keys.shape[-1])
        self._values = values.new_empty(B, H, S + room, values.shape[-1])
        self._keys[:, :, :S], self._values[:, :, :S] = keys, values
        self._expose(S)
        self.device = keys.device
        self.is_initialized = True

    def _expose(self, length: int) -> None:
        self.keys, self.values = self._keys[:, :, :length], self._values[:, :, :length]
        self._exposed = self.keys  # DynamicLayer's own methods replace self.keys; then the buffer is stale

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        if torch.is_grad_enabled() and (key_states.requires_grad or self.keys.requires_grad):
            # autograd forbids writing into a buffer whose earlier views are still part of the graph
            return super().update(key_states, value_states)
        S, T = self.keys.shape[-2], key_states.shape[-2]
        if self.keys is not self._exposed or S + T > self._keys.shape[-2]:
            self._reserve(self.keys, self.values, room=max(self.room, S + T))  # doubles: O(log N) copies
        self._keys[:, :, S : S + T] = key_states
        self._values[:, :, S : S + T] = value_states
        self._expose(S + T)
        return self.keys, self.values

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if not self.is_initialized or self.keys is not self._exposed:
            return super().batch_select_indices(indices)
        length = self.keys.shape[-2]  # the rows kept, with the room behind them: one copy, no re-reserving
        self._keys, self._values = self._keys[indices], self._values[indices]
        self._expose(length)

    def crop(self, tokens_to_remove: int) -> None:
        super().crop(tokens_to_remove)
        if self.is_initialized:  # a fresh buffer: later writes must not overwrite what was returned before
            self._reserve(self.keys, self.values, self.room)


def reserved_cache(
    entries: list[tuple[torch.Tensor, torch.Tensor]] | None = None, room: int = 0
) -> DynamicCache:
    """A DynamicCache of ReservedLayers, holding `entries` (keys, values) per layer, or empty (filled lazily)."""
    cache = DynamicCache()
    cache.layer_class_to_replicate = ReservedLayer
    if entries is not None:
        cache.layers = [ReservedLayer(room, keys, values) for keys, values in entries]
    return cache
