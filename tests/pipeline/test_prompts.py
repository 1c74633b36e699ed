import copy

import pytest

from pipeline.prompts import PromptConfig, Prompts, choose_style

TEMPLATE = (
    "{% for m in messages %}<|user|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


@pytest.fixture(scope="module")
def chat_tokenizer(tokenizer):
    tok = copy.deepcopy(tokenizer)
    tok.chat_template = TEMPLATE
    return tok


def encode(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def test_task_format_is_chunk_then_marker(tokenizer):
    p = Prompts(tokenizer, PromptConfig(), "slots")
    chunk = encode(tokenizer, "Mr. Darcy walked in.")
    assert p.style == "task"
    assert p.facts(chunk) == chunk + encode(tokenizer, "\nFacts:\n")
    assert p.summary() == encode(tokenizer, "Summary:\n")
    assert p.facts_overhead == len(encode(tokenizer, "\nFacts:\n"))


def test_one_decision_point(tokenizer, chat_tokenizer):
    auto = PromptConfig()
    assert choose_style(auto, chat_tokenizer, "kv") == "chat"
    assert choose_style(auto, chat_tokenizer, "slots") == "task"  # slot models use what they were trained on
    assert choose_style(auto, tokenizer, "kv") == "task"  # no template to use
    assert choose_style(PromptConfig(style="task"), chat_tokenizer, "kv") == "task"


def test_chat_prompt_splices_the_chunk_tokens_unchanged(chat_tokenizer):
    config = PromptConfig(facts_instruction="List facts:", summary_instruction="Summarize.")
    p = Prompts(chat_tokenizer, config, "kv")
    chunk = encode(chat_tokenizer, "Mr. Darcy walked in.")
    ids = p.facts(chunk)
    assert p.style == "chat" and len(ids) == len(chunk) + p.facts_overhead
    before = encode(chat_tokenizer, "<|user|>List facts:\n\n")
    assert ids[len(before) : len(before) + len(chunk)] == chunk
    assert chat_tokenizer.decode(ids) == "<|user|>List facts:\n\nMr. Darcy walked in.\n<|assistant|>"
    assert chat_tokenizer.decode(p.summary()) == "<|user|>Summarize.\n<|assistant|>"


def test_chat_style_needs_a_template(tokenizer):
    with pytest.raises(ValueError, match="chat template"):
        Prompts(tokenizer, PromptConfig(style="chat"), "kv")


def test_unknown_style():
    with pytest.raises(ValueError, match="style"):
        PromptConfig(style="fancy")
