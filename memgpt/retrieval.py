"""Retrieval memory: kv memory plus every evicted entry kept in host memory, brought back when a query needs it.

After InfLLM (Xiao et al., NeurIPS 2024), training-free. What kv eviction drops goes, per layer, into a store
of blocks of `block` consecutive evicted entries. In every layer, the queries of each chunk (the mean of its last
QUERY_WINDOW) and of every `every`-th generated token score every block by its best-fitting key and attend to
the `topk` best beside the sinks, the kept entries and the recent window. InfLLM scores a block by a few representative
keys (the most attended); on SmolLM2 those are punctuation and the like, and the block holding a passkey
ranked anywhere among a thousand, so every key is scored: one matrix product over the store per layer. The
budget on the device stays as it is; the store grows with the book, in host memory.

Positions: the kept entries sit where kv memory puts them, after a gap of `topk * block` positions behind the
sinks; retrieved blocks are rotated into that gap (memgpt/rope.py), so every position stays inside the window.
"""

import torch

from . import kv
from .kv import EXTRA_ENTRIES, KVMemory, _take
from .memory import BackboneInputs, MemoryKind, register_memory

HOST = torch.device("cpu")
QUERY_WINDOW = 8  # the last real queries whose mean picks the blocks (the question, not the filler before it)


class RetrievalMemory(KVMemory):
    kind = "retrieval"

    def __init__(self, *args, block: int, topk: int, every: int = 1, **kwargs):
        super().__init__(*args, gap=block * topk, **kwargs)
        if self.rotation is None or self.budget is None:
            raise ValueError("retrieval memory needs a RoPE backbone, kv_positions='cache' and a kv_budget")
        self.block, self.topk, self.every = block, topk, every
        self.score_position = self.sinks + self.gap // 2  # where stored keys are scored from

    def init(self, batch_size: int, device: torch.device, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        state = super().init(batch_size, device, dtype)
        L, H, Dh = self.shape
        state.update(
            host_keys=torch.zeros(L, batch_size, H, 0, Dh, dtype=dtype),  # un-rotated (position 0)
            host_values=torch.zeros(L, batch_size, H, 0, Dh, dtype=dtype),
            host_len=torch.zeros(batch_size, dtype=torch.long),  # entries stored per document
            # entries written into these buffers by any state sharing them (updated in place): a state that
            # finds more than its own host_len was branched from, and writes into a copy instead
            host_fill=torch.zeros(batch_size, dtype=torch.long),
        )
        return state

    def read_inputs(self, state, embeds, mask, write, input_ids=None) -> BackboneInputs:
        inputs = super().read_inputs(state, embeds, mask, write, input_ids)
        inputs.attending = Retrieving(self, state, mask)
        return inputs

    def archive(self, state, layers, mask, scores, keep) -> dict[str, torch.Tensor]:
        """Append the entries eviction drops, un-rotated, to each document's store."""
        L = keep.shape[0]
        kept = torch.zeros_like(scores, dtype=torch.bool).scatter_(-1, keep, True)
        dropped = mask.unsqueeze(0) & ~kept  # (L, B, S); as many per document in every layer
        n_dropped = dropped[0].sum(-1)  # (B,)
        width = int(n_dropped.max())
        order = dropped.to(torch.uint8).argsort(dim=-1, descending=True, stable=True)[
            ..., :width
        ]  # reading order
        rank = (mask.long().cumsum(-1) - 1).unsqueeze(0).expand(L, -1, -1)
        keys = self.rotation(_take(layers, "keys", order), -self.position(rank.gather(-1, order)))
        values = _take(layers, "values", order)
        return self.store(state, keys, values, n_dropped)

    def store(self, state, keys, values, counts) -> dict[str, torch.Tensor]:
        """Write `counts[b]` new entries of document b behind its stored ones (the buffer doubles when full)."""
        host = {k: state[k] for k in ("host_keys", "host_values")}
        start, fill = state["host_len"], state["host_fill"]
        end = start + counts.cpu()
        need = int(end.max())
        capacity = host["host_keys"].shape[3]
        if need > capacity:  # doubling: a book of N tokens copies its store O(log N) times
            capacity = max(2 * capacity, -(-need // self.block) * self.block)
            host, fill = {k: _grow(v, capacity) for k, v in host.items()}, end.clone()
        elif bool((fill > start).any()):  # another state read on from this one: leave its entries alone
            host, fill = {k: v.clone() for k, v in host.items()}, end.clone()
        else:
            fill.copy_(end)
        for b in range(len(counts)):
            s, e = int(start[b]), int(end[b])
            host["host_keys"][:, b, :, s:e] = keys[:, b, :, : e - s].to(HOST)
            host["host_values"][:, b, :, s:e] = values[:, b, :, : e - s].to(HOST)
        return {**host, "host_len": end, "host_fill": fill}


class Retrieving:
    """Entered around the backbone calls that read one state: each layer attends to its best blocks too."""

    def __init__(self, memory: RetrievalMemory, state: dict[str, torch.Tensor], query_mask: torch.Tensor):
        self.memory, self.state, self.query_mask = memory, state, query_mask
        self.tokens: list = []
        self.held: dict[int, tuple[int, tuple]] = {}  # layer -> (calls it has served, its blocks)

    def __enter__(self) -> "Retrieving":
        self.tokens.append(EXTRA_ENTRIES.set(self.extend))
        return self

    def __exit__(self, *exc) -> None:
        EXTRA_ENTRIES.reset(self.tokens.pop())

    def extend(self, layer: int, query: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, ...] | None:
        """The keys (rotated into the gap), values and additive mask columns of layer `layer`'s best blocks.

        A generated token (one query) keeps the blocks chosen last for `every` tokens: choosing costs a pass
        over the whole store, and the prompt's choice is the one its answer needs."""
        T = query.shape[2]
        served, blocks = self.held.get(layer, (0, None))
        if T > 1 or blocks is None or served >= self.memory.every:
            served, blocks = 0, self.choose(layer, query, mask)
        self.held[layer] = served + 1, blocks
        if blocks is None:
            return None
        keys, values, columns = blocks
        return keys, values, columns.expand(-1, -1, T, -1)

    def choose(self, layer: int, query: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, ...] | None:
        """Layer `layer`'s best blocks for these queries: keys, values and mask columns (B, 1, 1, k * block)."""
        m, st = self.memory, self.state
        blocks = st["host_len"] // m.block  # complete blocks per document, (B,)
        if int(blocks.max()) == 0:
            return None
        B, H, T, Dh = query.shape
        k = min(m.topk, int(blocks.max()))
        Hkv = st["host_keys"].shape[2]
        q = (query.float() * _window(self.query_mask, T, query.device)[:, None, :, None]).sum(2)  # (B, H, Dh)
        fit = self.fit(layer, q.to(HOST).view(B, Hkv, H // Hkv, Dh), int(blocks.max()))
        fit = fit.masked_fill(torch.arange(fit.shape[1]) >= blocks[:, None], float("-inf"))
        chosen = fit.topk(k, dim=-1).indices.sort(-1).values  # (B, k), in reading order
        valid = chosen < blocks[:, None]
        entries = (chosen[..., None] * m.block + torch.arange(m.block)).flatten(1)  # (B, k * block)
        index = entries[:, None, :, None].expand(B, Hkv, -1, Dh)
        keys = st["host_keys"][layer].gather(2, index).to(query.device)
        values = st["host_values"][layer].gather(2, index).to(query.device)
        place = torch.arange(m.sinks, m.sinks + k * m.block, device=query.device).expand(1, B, -1)
        keys = m.rotation(keys[None], place)[0].to(query.dtype)
        allowed = valid.repeat_interleave(m.block, dim=1).to(query.device)  # (B, k * block)
        columns = torch.zeros(B, 1, 1, k * m.block, device=query.device, dtype=mask.dtype)
        columns = columns.masked_fill(~allowed[:, None, None, :], torch.finfo(mask.dtype).min)
        return keys, values.to(query.dtype), columns

    def fit(self, layer: int, q: torch.Tensor, n: int) -> torch.Tensor:
        """How well each of the first `n` blocks fits the queries q (B, Hkv, G, Dh): its best key's score, (B, n)."""
        m = self.memory
        B, Hkv, G, Dh = q.shape
        # q . R(p) k == R(-p) q . k: the query turns back by the scoring position, the stored keys stay as they are
        back = torch.full((1, B, Hkv * G), -m.score_position)
        q = m.rotation(q.reshape(1, B, 1, Hkv * G, Dh), back).view(B, Hkv, G, Dh)
        keys = self.state["host_keys"][layer][:, :, : n * m.block]  # (B, Hkv, n * block, Dh)
        # (B, Hkv, n * block, G): keys on the left, so the stored keys are read in place, not copied
        scores = keys @ q.to(keys.dtype).transpose(-1, -2)
        return scores.view(B, Hkv, n, m.block, G).amax(3).float().sum((1, 3))


def _window(query_mask: torch.Tensor, T: int, device) -> torch.Tensor:
    """Weights averaging each row's last QUERY_WINDOW real queries, (B, T)."""
    if query_mask.shape[1] == T:
        mask = query_mask.to(device).float()
    else:  # a generated token: every query is real
        mask = torch.ones(query_mask.shape[0], T, device=device)
    from_end = mask.flip(-1).cumsum(-1).flip(-1)  # real queries at or after each position
    w = mask * (from_end <= QUERY_WINDOW)
    return w / w.sum(-1, keepdim=True).clamp(min=1)


def _grow(t: torch.Tensor, capacity: int) -> torch.Tensor:
    """A copy of a store tensor (L, B, H, N, Dh) with room for `capacity` entries."""
    out = t.new_zeros(*t.shape[:3], capacity, t.shape[4])
    out[:, :, :, : t.shape[3]].copy_(t)
    return out


def check(config) -> None:
    kv.check(config)
    if config.kv_budget is None or config.kv_positions != "cache":
        raise ValueError("memory='retrieval' needs a kv_budget and kv_positions='cache'")
    if min(config.retrieval_block, config.retrieval_topk, config.retrieval_every) < 1:
        raise ValueError("retrieval_block, retrieval_topk and retrieval_every must be >= 1")


def build(config, backbone, tokenizer=None) -> RetrievalMemory:
    room = config.retrieval_topk * config.retrieval_block
    args = kv.kv_arguments(config, backbone, room, " + retrieval_topk * retrieval_block")
    return RetrievalMemory(*args, decay=config.kv_decay, block=config.retrieval_block,
                           topk=config.retrieval_topk, every=config.retrieval_every)  # fmt: skip


register_memory(
    MemoryKind(
        "retrieval",
        build,
        check=check,
        size=lambda config: config.kv_budget,
        prompt_room=lambda config: config.retrieval_topk * config.retrieval_block,
        signature=lambda config: {"block": config.retrieval_block},  # the store's layout
        layer_first=kv.LAYOUT["layer_first"] | {"host_keys", "host_values"},
        entry_dims={**kv.LAYOUT["entry_dims"], "host_keys": 3, "host_values": 3},
        entries=kv.LAYOUT["entries"],
    )
)
