"""Lookup decoding (memgpt/lookup.py): the tokens of step-by-step greedy decoding, in fewer forward passes."""

import pytest
import torch
from tiny import random_doc, tiny
from transformers import LogitsProcessor, LogitsProcessorList

from memgpt import lookup
from memgpt.lookup import Lookup, continue_generate, lookup_generate
from memgpt.padding import right_pad


def prompts_and_state(model, seed: int = 0):
    """Three prompts of different lengths (one over a chunk, read into memory first), after a text read."""
    doc = random_doc(200, seed=seed)
    repeated = torch.cat([doc[:12]] * 4).tolist()  # a prompt that repeats itself: drafts to find
    prompts = [repeated, doc[50:57].tolist(), doc[60:100].tolist()]
    state = model.read([doc[100:180].tolist()] * 3, memory=model.init_state(3))
    return prompts, state


def greedy(model, prompts, state, max_new, processors=None) -> list[list[int]]:
    replies = model.reply(prompts, memory=state, max_new_tokens=max_new, eos_token_id=-1,
                          logits_processor=LogitsProcessorList(processors or []))  # fmt: skip
    return [list(r.ids) for r in replies]


@pytest.mark.parametrize("memory", ["kv", "slots", "retrieval"])
@pytest.mark.parametrize("draft", [0, 5])
def test_the_same_tokens_as_greedy_decoding_from_every_memory(memory, draft):
    model = tiny("llama", memory=memory, chunk_size=32)
    prompts, state = prompts_and_state(model)
    rows, passes = lookup_generate(model, prompts, state, max_new_tokens=20, draft_tokens=draft, eos=set())
    assert rows == greedy(model, prompts, state, 20)
    assert passes == 20 if draft == 0 else passes <= 20  # the prompt's pass, then one per token at most


@pytest.mark.parametrize("memory", ["kv", "slots"])
def test_generating_from_the_chunks_own_cache_writes_what_a_prompt_of_chunk_and_question_would(memory):
    """The chunk read once, for the memory and for what is generated about it: the same new memory as `step`,
    the same tokens as generating from the memory before with the chunk in the prompt, and generating leaves
    the new memory as it was. One document of the batch has ended: it reads nothing and gets nothing."""
    options = {"kv_budget": 24, "kv_sinks": 2, "kv_recent": 4} if memory == "kv" else {}
    model = tiny("llama", memory=memory, chunk_size=32, **options)
    doc = random_doc(300, seed=3)
    state = model.read([doc[:90].tolist(), doc[100:150].tolist(), doc[150:170].tolist()])  # kv: evicted
    chunks = [doc[200:220].tolist(), [], doc[230:243].tolist()]
    questions = [doc[5:10].tolist(), doc[20:28].tolist()]  # for the two rows that read a chunk
    ids, mask = right_pad(chunks, 0)
    new, chunk = model.step_keeping_cache(state, ids, mask)
    expected_state = model.step(state, ids, mask)
    kept = {k: v.clone() for k, v in new.tensors.items()}
    rows, _ = continue_generate(model, chunk, questions, [chunks[0], chunks[2]], 12, draft_tokens=4, eos=set())
    assert chunk.rows.tolist() == [0, 2]
    prompts = [chunks[0] + questions[0], chunks[2] + questions[1]]
    assert rows == greedy(model, prompts, state.select([0, 2]), 12)
    for name, t in expected_state.tensors.items():
        torch.testing.assert_close(new.tensors[name], t, rtol=0, atol=0)
        torch.testing.assert_close(new.tensors[name], kept[name], rtol=0, atol=0)


def test_without_memory_and_with_no_tokens_to_write():
    model = tiny("llama", memory="kv", chunk_size=32)
    prompts, _ = prompts_and_state(model)
    rows, _ = lookup_generate(model, prompts, None, max_new_tokens=10, draft_tokens=4, eos=set())
    assert rows == greedy(model, prompts, None, 10)
    assert lookup_generate(model, prompts, None, max_new_tokens=0) == ([[], [], []], 0)


class Copy:
    """Allows one sequence only: every token is forced."""

    def __init__(self, tokens: list[int]):
        self.tokens, self.at = tokens, 0

    def allowed(self, row: int) -> torch.Tensor:
        return torch.arange(4096) == self.tokens[self.at]

    def allows(self, row: int, token: int) -> bool:
        return token == self.tokens[self.at]

    def accept(self, row: int, token: int) -> None:
        self.at += 1

    def valid_prefix(self, row: int, draft: list[int]) -> int:
        return next((i for i, t in enumerate(draft) if t != self.tokens[self.at + i]), len(draft))

    def forced(self, row: int) -> list[int]:
        return self.tokens[self.at :]


def test_forced_tokens_are_drafted_and_kept_several_a_pass():
    model = tiny("llama", memory="kv", chunk_size=64)
    prompts, state = prompts_and_state(model)
    prompts, state = prompts[:1], state.select([0])
    text = random_doc(60, seed=5).tolist()
    rows, passes = lookup_generate(model, prompts, state, 40, Copy(text), draft_tokens=8, eos=set())
    assert rows == [text[:40]]
    assert passes == 1 + 5  # the prompt, then the last token and 8 forced ones a pass: 40 = 1 + 4 * 9 + 3


class EvenTokens:
    """Allows only even token ids, as a stateless constraint and as transformers' processor."""

    def allowed(self, row: int) -> torch.Tensor:
        return torch.arange(4096) % 2 == 0

    def allows(self, row: int, token: int) -> bool:
        return token % 2 == 0

    def accept(self, row: int, token: int) -> None:
        pass

    def valid_prefix(self, row: int, draft: list[int]) -> int:
        return next((i for i, t in enumerate(draft) if t % 2), len(draft))

    def forced(self, row: int) -> list[int]:
        return []


class EvenProcessor(LogitsProcessor):
    def __call__(self, input_ids, scores):
        return scores.masked_fill(torch.arange(scores.shape[-1]) % 2 == 1, float("-inf"))


@pytest.mark.parametrize("few_allowed", [4096, 16])  # the logits of the allowed tokens alone; of all tokens
def test_a_constraint_gives_the_tokens_of_its_logits_processor(few_allowed, monkeypatch):
    monkeypatch.setattr(lookup, "FEW_ALLOWED", few_allowed)
    model = tiny("llama", memory="kv", chunk_size=32)
    prompts, state = prompts_and_state(model, seed=1)
    rows, _ = lookup_generate(model, prompts, state, 16, EvenTokens(), draft_tokens=6, eos=set())
    assert rows == greedy(model, prompts, state, 16, [EvenProcessor()])
    assert all(t % 2 == 0 for r in rows for t in r)


def test_a_row_stops_at_its_end_token_and_the_others_go_on():
    model = tiny("llama", memory="kv", chunk_size=32)
    prompts, state = prompts_and_state(model)
    full, _ = lookup_generate(model, prompts, state, 12, draft_tokens=4, eos=set())
    end = full[1][3]  # row 1's fourth token made its end
    rows, _ = lookup_generate(model, prompts, state, 12, draft_tokens=4, eos={end})
    for got, whole in zip(rows, full, strict=True):
        cut = whole.index(end) + 1 if end in whole else len(whole)
        assert got == whole[:cut]
    assert len(rows[1]) <= 4


class CopyPerRow:
    """Each row allows one sequence of its own: every token is forced."""

    def __init__(self, texts: list[list[int]]):
        self.rows = [Copy(t) for t in texts]

    def allowed(self, row: int) -> torch.Tensor:
        return self.rows[row].allowed(0)

    def allows(self, row: int, token: int) -> bool:
        return self.rows[row].allows(0, token)

    def accept(self, row: int, token: int) -> None:
        self.rows[row].accept(0, token)

    def valid_prefix(self, row: int, draft: list[int]) -> int:
        return self.rows[row].valid_prefix(0, draft)

    def forced(self, row: int) -> list[int]:
        return self.rows[row].forced(0)


def test_a_row_that_ends_leaves_the_batch_and_the_others_keep_their_own_rows():
    """Rows end at different passes and leave the batch; the ones left are still told apart (their own
    constraint, cache and positions), and write what greedy decoding writes."""
    model = tiny("llama", memory="kv", chunk_size=32)
    prompts, state = prompts_and_state(model)
    end = 4095
    texts = [random_doc(30, seed=10 + r).tolist() for r in range(3)]
    texts = [t[:n] + [end] + t[n:] for t, n in zip(texts, (25, 3, 12), strict=True)]  # they end at 26, 4, 13
    widths = []  # the rows of each pass over the backbone

    def count(module, args, kwargs):
        widths.append(len(kwargs["input_ids"] if kwargs.get("input_ids") is not None else kwargs["inputs_embeds"]))

    hook = model.backbone.base_model.register_forward_pre_hook(count, with_kwargs=True)
    try:
        rows, _ = lookup_generate(model, prompts, state, 30, CopyPerRow(texts), draft_tokens=4, eos={end})
    finally:
        hook.remove()
    assert rows == [t[: t.index(end) + 1] for t in texts]
    decoding = widths[widths.index(3) :]  # after the prompt's own read (a long prompt's prefix: fewer rows)
    assert decoding[-1] == 1 and sorted(decoding, reverse=True) == decoding  # the batch shrank


def test_rows_that_leave_the_batch_change_no_one_elses_tokens():
    model = tiny("llama", memory="kv", chunk_size=32)
    prompts, state = prompts_and_state(model)
    full = greedy(model, prompts, state, 16)
    ends = {full[1][2], full[2][6]} - set(full[0])  # rows 1 and 2 end early, row 0 writes on
    rows, _ = lookup_generate(model, prompts, state, 16, draft_tokens=4, eos=ends)
    for got, whole in zip(rows, full, strict=True):
        cut = next((i + 1 for i, t in enumerate(whole) if t in ends), len(whole))
        assert got == whole[:cut]
    assert len(rows[0]) == 16


def test_drafts_follow_the_longest_run_of_last_tokens_found_latest_first():
    lookup = Lookup([1, 2, 3, 9, 1, 2, 3, 7, 8, 5])
    assert lookup.drafts([1, 2, 3], 2) == [[7, 8], [9, 1]]  # "1 2 3" twice: the latest first
    assert lookup.drafts([4, 3], 3) == [[7, 8, 5], [9, 1, 2]]  # no "4 3": the run "3"
    assert lookup.drafts([6], 3) == []
    lookup.append(3)
    assert lookup.drafts([], 1) == [[7], [9]]  # the tokens so far end on "5 3": the run "3"
