"""Greedy decoding that drafts what it copies and lets the model verify it: several tokens per forward pass.

Where the output copies the prompt (fact lines copied from the chunk just read), the next tokens can be
guessed: the tokens a `Constraint` forces (a grammar with one way on), then the tokens that followed the
last few generated ones where the prompt has them (prompt lookup, as transformers' `prompt_lookup_num_tokens`).
One forward pass reads the row's last token and its whole draft; the model's greedy choice at each position
keeps the draft up to the first token it would not have written, and that choice is the next token. The
output is the one step-by-step greedy decoding writes (up to the rounding of a wider matrix product).

Rows of a batch keep different numbers of draft tokens: a rejected token's cache entry stays where it was
written and is masked out of every later step (a hole), so no row waits for another and nothing is copied.
A row that has ended leaves the batch, with its rows of the cache: later passes carry only the rows writing.
transformers' own assisted decoding runs one row at a time, and calls a stateful processor on prefixes
that a rejection then takes back.
"""

from collections import defaultdict
from contextlib import nullcontext
from typing import Protocol

import torch

from .cache import reserved_cache
from .padding import left_pad

NGRAM = 3  # the longest run of last tokens looked up in the prompt
CANDIDATES = 8  # prompt places tried per lookup; the draft kept is the longest the constraint allows
FEW_ALLOWED = 2048  # allowed tokens up to which a position's logits are computed for those alone (CPU)


class Constraint(Protocol):
    """What a row may write next, after the tokens it has accepted (`accept`)."""

    def allowed(self, row: int) -> torch.Tensor: ...  # (V,) bool

    def allows(self, row: int, token: int) -> bool: ...

    def accept(self, row: int, token: int) -> None: ...

    def valid_prefix(self, row: int, draft: list[int]) -> int: ...  # how many of `draft` it would allow

    def forced(self, row: int) -> list[int]: ...  # the tokens it allows one way only, next


class Lookup:
    """The prompt's n-grams (1..NGRAM tokens) -> where they end, and the tokens generated so far, per row."""

    def __init__(self, prompt: list[int]):
        self.tokens = list(prompt)
        self.ends: dict[tuple[int, ...], list[int]] = defaultdict(list)
        for i in range(len(self.tokens)):
            self._index(i)

    def _index(self, i: int) -> None:
        for n in range(1, NGRAM + 1):
            if i - n + 1 >= 0:
                self.ends[tuple(self.tokens[i - n + 1 : i + 1])].append(i)

    def append(self, token: int) -> None:
        self.tokens.append(token)
        self._index(len(self.tokens) - 1)

    def drafts(self, after: list[int], k: int) -> list[list[int]]:
        """Up to k tokens that followed the longest run of the last tokens (of all so far, then `after`) found
        before: one draft per place it was found, the latest first."""
        context = self.tokens + after
        for n in range(min(NGRAM, len(context)), 0, -1):
            ends = [e for e in self.ends.get(tuple(context[-n:]), []) if e + 1 < len(self.tokens)]
            if ends:
                return [self.tokens[e + 1 : e + 1 + k] for e in reversed(ends[-CANDIDATES:])]
        return []


@torch.no_grad()
def lookup_generate(
    model,
    prompts: list[list[int]],
    memory=None,
    max_new_tokens: int = 64,
    constraint: Constraint | None = None,
    draft_tokens: int = 8,
    eos: set[int] | None = None,
) -> tuple[list[list[int]], int]:
    """Greedy continuations of `prompts` (token lists) from `memory`, each to its first `eos` token (kept) or
    `max_new_tokens`; also the number of forward passes it took (the prompt's read counts one)."""
    if max_new_tokens <= 0:
        return [[] for _ in prompts], 0
    pad = model._pad_for_generate(None)
    ids, mask = left_pad(prompts, pad)
    state, tail_ids, tail_mask = model._read_prompt(ids, mask, memory, pad)
    embeds = model.backbone.get_input_embeddings()(tail_ids)
    inputs = model.memory.read_inputs(state.tensors, embeds, tail_mask, write=False, input_ids=tail_ids)
    if inputs.logits_processor is not None:
        raise ValueError(
            f"lookup decoding does not apply a memory's own logits processor ({model.config.memory})"
        )
    cache = inputs.cache if inputs.cache is not None else reserved_cache()
    prefix = inputs.text.start
    with inputs.attending or nullcontext():
        if prefix:
            model._read_prefix(inputs, prefix, tail_ids.shape[1], cache)
        # (B, S + T): grows by each step's tokens, holes set to 0
        # a hook's own batch state (retrieval) keeps every row in the batch
        return _decode(model, cache, inputs.attention_mask, inputs.position_ids[:, inputs.text], tail_ids,
                       [Lookup(p) for p in prompts], max_new_tokens, constraint, draft_tokens, eos,
                       shrink=inputs.attending is None)  # fmt: skip


@torch.no_grad()
def continue_generate(
    model,
    chunk,
    prompts: list[list[int]],
    sources: list[list[int]],
    max_new_tokens: int = 64,
    constraint: Constraint | None = None,
    draft_tokens: int = 8,
    eos: set[int] | None = None,
) -> tuple[list[list[int]], int]:
    """Greedy continuations of `prompts` appended to a chunk just read (`chunk`: `MemGPT.step_keeping_cache`),
    one per row that read it; drafts are looked up in `sources` (the chunk's tokens) and the prompts. The same
    tokens `lookup_generate` writes for the chunk's tokens followed by the prompt, from the memory before it."""
    if max_new_tokens <= 0:
        return [[] for _ in prompts], 0
    ids, mask = left_pad(prompts, model._pad_for_generate(None))  # (A, W)
    ids, mask = ids.to(model.device), mask.to(chunk.attention_mask.device)
    attention = torch.cat([chunk.attention_mask, mask.to(chunk.attention_mask.dtype)], dim=1)
    positions = chunk.next_position[:, None] + (mask.long().cumsum(-1) - 1).clamp(min=0)  # (A, W)
    lookups = [Lookup(list(s) + list(p)) for s, p in zip(sources, prompts, strict=True)]
    return _decode(model, chunk.cache, attention, positions, ids, lookups, max_new_tokens, constraint,
                   draft_tokens, eos)  # fmt: skip


def _decode(model, cache, attention, positions, prompt_ids, lookups, max_new_tokens, constraint, draft_tokens,
            eos, shrink: bool = True) -> tuple[list[list[int]], int]:  # fmt: skip
    """Read the prompts' last tokens (B, T) after `cache`, then draft, verify and accept until every row ends;
    with `shrink`, a row that ends leaves the batch (and the cache)."""
    backbone, pad = model.backbone, model._pad_for_generate(None)
    eos = eos if eos is not None else model.end_of_turn
    B = prompt_ids.shape[0]
    generated: list[list[int]] = [[] for _ in range(B)]
    out = backbone(input_ids=prompt_ids, attention_mask=attention, position_ids=positions, cache=cache,
                   use_cache=True, logits_to_keep=1)  # fmt: skip
    passes = 1
    first = out.logits[:, -1].float()
    last = [_choose(first[r], constraint, r, t) for r, t in enumerate(first.argmax(-1).tolist())]
    next_pos = positions[:, -1] + 1  # (B,)
    done = [False] * B
    for r in range(B):
        done[r] = _take(r, last[r], generated, lookups, constraint, eos, max_new_tokens)
    live = list(range(B))  # the rows still writing, in the order the batch holds them now
    while not all(done):
        if shrink and any(done[r] for r in live):  # a row that ended leaves: no more passes over its padding
            kept_rows = [j for j, r in enumerate(live) if not done[r]]
            index = torch.tensor(kept_rows, device=attention.device)
            cache.batch_select_indices(index.to(next_pos.device))
            attention, next_pos = attention[index], next_pos[index.to(next_pos.device)]
            live = [live[j] for j in kept_rows]
        drafts = [[] if done[r] else _draft(r, lookups[r], constraint, draft_tokens,
                                            max_new_tokens - len(generated[r]) - 1) for r in live]  # fmt: skip
        A, K = len(live), 1 + max(len(d) for d in drafts)
        step = torch.full((A, K), pad, dtype=torch.long)
        step_mask = torch.zeros(A, K, dtype=attention.dtype)
        for j, r in enumerate(live):
            if done[r]:
                continue
            step[j, : 1 + len(drafts[j])] = torch.tensor([last[r], *drafts[j]])
            step_mask[j, : 1 + len(drafts[j])] = 1
        step, step_mask = step.to(model.device), step_mask.to(attention.device)
        attention = torch.cat([attention, step_mask], dim=1)
        step_positions = next_pos[:, None] + torch.arange(K, device=next_pos.device)
        choices = _Choices(backbone, constraint, input_ids=step, attention_mask=attention,
                           position_ids=step_positions, cache=cache, use_cache=True)  # fmt: skip
        passes += 1
        for j, r in enumerate(live):
            if done[r]:
                continue
            kept = 0
            for i in range(len(drafts[j]) + 1):
                token = choices.choose(j, i, r)
                done[r] = _take(r, token, generated, lookups, constraint, eos, max_new_tokens)
                if done[r] or i == len(drafts[j]) or token != drafts[j][i]:
                    break
                kept += 1
            last[r] = generated[r][-1]
            # the draft's rejected tokens stay in the cache: masked out from now on
            attention[j, attention.shape[1] - K + 1 + kept :] = 0
            next_pos[j] += 1 + kept
    return generated, passes


def _draft(row: int, lookup: Lookup, constraint: Constraint | None, k: int, room: int) -> list[int]:
    """The constraint's forced tokens, then the prompt's continuation, as far as the constraint allows."""
    k = min(k, room)
    if k <= 0:
        return []
    forced = constraint.forced(row)[:k] if constraint is not None else []
    drafts = [forced + d for d in lookup.drafts(forced, k - len(forced))] or [forced]
    if constraint is None:
        return drafts[0]
    best = max(drafts, key=lambda d: constraint.valid_prefix(row, d))
    return best[: constraint.valid_prefix(row, best)]


class _Choices:
    """One verification pass's greedy choices, position by position, under the constraint.

    On a CPU a pass over a few rows is bound by reading the weights, and the output layer is a fifth of them
    (SmolLM2: 49,152 x 576). Where the constraint allows few tokens (a copied line: a handful), their logits
    alone are computed from the last hidden state, reading those rows of the output layer only; the whole
    vocabulary's logits are computed once, if a position allows many. The argmax over the allowed tokens is
    the masked full one's (ties to the lowest id, as there), up to the rounding of a narrower product."""

    def __init__(self, backbone, constraint: Constraint | None, **inputs):
        self.backbone, self.constraint = backbone, constraint
        self.head = _output_layer(backbone) if constraint is not None else None
        if self.head is None:
            self.logits = backbone(**inputs).logits.float()  # (B, K, V)
            self.likeliest = self.logits.argmax(-1).tolist()  # one device sync a pass
        else:
            self.hidden = backbone.base_model(**inputs).last_hidden_state  # (B, K, D)
            self.logits = None

    def choose(self, j: int, i: int, row: int) -> int:
        """The greedy token at position i of the batch's j-th row, which is the constraint's `row`."""
        if self.head is None:
            return _choose(self.logits[j, i], self.constraint, row, self.likeliest[j][i])
        allowed = self.constraint.allowed(row).to(self.hidden.device)
        ids = allowed[: self.head.weight.shape[0]].nonzero().squeeze(-1)  # (n,)
        if len(ids) > FEW_ALLOWED:
            if self.logits is None:
                self.logits = self.backbone.get_output_embeddings()(self.hidden).float()
            return int(
                self.logits[j, i].masked_fill(~allowed[: self.logits.shape[-1]], float("-inf")).argmax()
            )
        weight, bias = self.head.weight[ids], self.head.bias[ids] if self.head.bias is not None else None
        return int(ids[torch.nn.functional.linear(self.hidden[j, i], weight, bias).argmax()])


def _output_layer(backbone) -> torch.nn.Linear | None:
    """The output layer, where the greedy token of a few allowed ones can be found from their rows alone: a
    plain linear layer on a CPU (a scale or soft cap after it keeps the order of the logits), else None."""
    head = backbone.get_output_embeddings()
    if type(head) is not torch.nn.Linear or head.weight.device.type != "cpu":
        return None
    return head


def _choose(logits: torch.Tensor, constraint: Constraint | None, row: int, token: int) -> int:
    """The greedy token: the most likely (`token`), or the most likely the constraint allows."""
    if constraint is None or constraint.allows(row, token):
        return token
    allowed = constraint.allowed(row).to(logits.device)
    return int(logits.masked_fill(~allowed, float("-inf")).argmax())


def _take(row, token, generated, lookups, constraint, eos, max_new) -> bool:
    """Append an accepted token; whether the row is done."""
    generated[row].append(token)
    lookups[row].append(token)
    if constraint is not None:
        constraint.accept(row, token)
    return token in eos or len(generated[row]) >= max_new
