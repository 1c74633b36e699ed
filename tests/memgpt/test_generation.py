"""MemGPT.generate runs transformers' own generation loop: its options behave as on the bare backbone."""

import pytest
import torch
from tiny import random_doc, tiny
from transformers import (
    GenerationConfig,
    LogitsProcessor,
    LogitsProcessorList,
    StoppingCriteria,
    StoppingCriteriaList,
    TextStreamer,
)


class BanTokens(LogitsProcessor):
    def __init__(self, banned: list[int]):
        self.banned = banned

    def __call__(self, input_ids, scores):
        scores[:, self.banned] = float("-inf")
        return scores


class StopAfterPeriod(StoppingCriteria):
    def __init__(self, tokenizer, prompt_length: int):
        self.tokenizer, self.prompt_length = tokenizer, prompt_length

    def __call__(self, input_ids, scores, **kwargs):
        text = self.tokenizer.decode(input_ids[0, self.prompt_length :])
        return torch.tensor([("." in text)] * input_ids.shape[0], device=input_ids.device)


def chat_prompt(tokenizer, text: str) -> torch.Tensor:
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": text}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )["input_ids"]


@pytest.mark.slow
def test_processor_stopping_criteria_and_streamer_as_in_transformers(smollm2, capsys):
    tok = smollm2.tokenizer
    prompt = chat_prompt(tok, "Write a short poem about the sea, in three lines.")
    first = smollm2.generate(prompt, max_new_tokens=12, do_sample=False)[0, prompt.shape[1]]
    runs = {}
    for name, generate in (("ours", smollm2.generate), ("theirs", smollm2.backbone.generate)):
        processors = LogitsProcessorList([BanTokens([int(first)])])  # the greedy first token is banned
        stopping = StoppingCriteriaList([StopAfterPeriod(tok, prompt.shape[1])])
        out = generate(
            prompt,
            max_new_tokens=40,
            do_sample=False,
            logits_processor=processors,
            stopping_criteria=stopping,
            streamer=TextStreamer(tok, skip_prompt=True),
            repetition_penalty=1.3,
            no_repeat_ngram_size=3,
        )
        runs[name] = (out, capsys.readouterr().out)
    (ours, streamed), (theirs, their_stream) = runs["ours"], runs["theirs"]
    assert torch.equal(ours, theirs)
    new = ours[0, prompt.shape[1] :]
    assert int(new[0]) != int(first) and len(new) < 40  # the processor acted, the criterion stopped it
    assert tok.decode(new).rstrip().endswith(".") and "." not in tok.decode(new[:-1])
    assert streamed == their_stream and streamed.strip() == tok.decode(new, skip_special_tokens=True).strip()


@pytest.mark.slow
def test_generation_config_and_scores_as_in_transformers(smollm2):
    prompt = chat_prompt(smollm2.tokenizer, "Name three colours.")
    config = GenerationConfig(
        max_new_tokens=8, do_sample=False, output_scores=True, return_dict_in_generate=True
    )
    ours = smollm2.generate(prompt, generation_config=config)
    theirs = smollm2.backbone.generate(prompt, generation_config=config)
    assert torch.equal(ours.sequences, theirs.sequences)
    assert len(ours.scores) == len(theirs.scores) == ours.sequences.shape[1] - prompt.shape[1]
    torch.testing.assert_close(torch.stack(ours.scores), torch.stack(theirs.scores), atol=1e-3, rtol=0)


def test_sampling_with_a_seed_repeats():
    model = tiny("llama", memory="kv")
    doc = random_doc(3 * model.config.chunk_size + 5, seed=2)[None]
    state = model.read([doc[0, :-5]])
    runs = [
        model.generate(doc[:, -5:], memory=state, do_sample=True, top_k=20, max_new_tokens=10, seed=s)
        for s in (1, 1, 2)
    ]
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])


def test_streamer_receives_the_new_tokens_of_a_long_prompt_read_into_memory():
    model = tiny("llama", memory="kv")
    doc = random_doc(3 * model.config.chunk_size + 7, seed=4)[None]

    class Collect:
        def __init__(self):
            self.puts = []

        def put(self, value):
            self.puts.append(value.flatten().tolist())

        def end(self):
            self.puts.append("end")

    streamer = Collect()
    out = model.generate(doc, max_new_tokens=6, eos_token_id=-1, streamer=streamer)
    assert out.shape[1] == doc.shape[1] + 6 and torch.equal(out[:, : doc.shape[1]], doc)
    prompt_tail, *tokens, end = streamer.puts  # transformers puts the visible prompt first
    assert len(prompt_tail) == 7 and end == "end"
    assert sum(tokens, []) == out[0, doc.shape[1] :].tolist()
