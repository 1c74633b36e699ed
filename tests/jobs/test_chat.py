"""jobs.chat on the real SmolLM2-135M-Instruct: turns framed by its chat template, the memory kept across a
restart, a real terminal, a state from another model refused."""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jobs.chat import Turns
from memgpt import MemGPT, MemoryState, load_tokenizer

REPO = Path(__file__).parents[2]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def chat(*flags: str, stdin: str) -> subprocess.CompletedProcess:
    """jobs.chat as a script drives it: user turns on stdin, one reply per line on stdout."""
    cmd = [sys.executable, "-m", "jobs.chat", *flags]
    return subprocess.run(cmd, input=stdin, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)


def test_turns_read_one_at_a_time_are_the_whole_conversation(smollm2_path):
    """What the memory reads turn by turn is token for token the template's rendering of the conversation."""
    tok = load_tokenizer(smollm2_path)
    turns = Turns.of(tok)
    conversation = [("My locker code is 4821.", "Noted: 4821."), ("And my name?", "You did not say.")]
    read, messages = [], []
    for i, (text, reply) in enumerate(conversation):
        generated = tok.encode(reply) + [tok.eos_token_id]  # as the model ends its turn
        read += turns.user(text, first=i == 0) + turns.reply(generated, {tok.eos_token_id})
        messages += [{"role": "user", "content": text}, {"role": "assistant", "content": reply}]
    whole = tok.apply_chat_template(messages, tokenize=False)
    assert read == tok.encode(whole, add_special_tokens=False)
    assert whole.count("<|im_start|>system") == 1  # the template's system prompt opens the first turn only
    assert turns.user("x", first=True) == tok.encode(
        tok.apply_chat_template([{"role": "user", "content": "x"}], tokenize=False), add_special_tokens=False
    )


@pytest.mark.slow
def test_a_fact_told_is_recalled_after_a_restart(tmp_path):
    state = tmp_path / "chat.safetensors"
    # greedy SmolLM2-135M recalled 10 codes of 10 so (7 of 10 with the template's own system prompt)
    system = "You are a helpful assistant. Remember what the user tells you and answer questions about it."
    told = chat("--state", str(state), "--save-every", "2", "--max-new-tokens", "32", "--system", system,
                stdin="My locker code is 4821.\n/quit\nnot read: the session has ended\n")  # fmt: skip
    assert told.returncode == 0, told.stderr[-2000:]
    assert len(told.stdout.splitlines()) == 1, told.stdout  # one reply, no prompt or banner on stdout
    assert "new conversation" in told.stderr
    info = MemoryState.read_info(state)
    assert info["turns"] == 2 and info["tokens"] > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chat.safetensors"]  # no temporary file left

    # the same question from the resumed memory, then from an empty one (/reset): only the first can know
    asked = chat("--state", str(state), "--max-new-tokens", "32", "--system", system,  # after /reset only
                 stdin="What is my locker code?\n/reset\nWhat is my locker code?\n")  # fmt: skip
    assert asked.returncode == 0, asked.stderr[-2000:]
    assert f"resumed {state}: 2 turns, {info['tokens']} tokens" in asked.stderr
    recalled, forgotten = asked.stdout.splitlines()
    assert "4821" in recalled and "4821" not in forgotten, asked.stdout
    assert MemoryState.read_info(state)["turns"] == 2  # after the reset


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")
def test_in_a_terminal_the_reply_streams_and_quit_ends_the_session(tmp_path):
    server, name = f"memgpt-chat-{os.getpid()}", "chat"
    tmux = ["tmux", "-L", server]  # a server of its own: other tmux sessions on the machine are not touched
    command = f"env OMP_NUM_THREADS=1 {sys.executable} -m jobs.chat --max-new-tokens 48"
    size = ["-x", "120", "-y", "40"]
    subprocess.run(
        [*tmux, "new-session", "-d", "-s", name, *size, "-c", str(REPO), command], check=True, env=ENV
    )
    try:

        def pane() -> list[str]:  # the screen's lines (capture-pane drops their trailing spaces)
            shown = subprocess.run([*tmux, "capture-pane", "-p", "-t", name], capture_output=True, text=True)
            return shown.stdout.splitlines()

        def alive() -> bool:
            return subprocess.run([*tmux, "has-session", "-t", name], capture_output=True).returncode == 0

        def prompts() -> int:
            return sum(line.startswith("you>") for line in pane())

        wait(lambda: prompts() == 1, "the prompt")
        assert any("commands: /save, /reset, /quit" in line for line in pane())
        subprocess.run([*tmux, "send-keys", "-t", name, "Name three fruits.", "Enter"], check=True)
        replies = set()  # the reply line as seen while it grows: streamed, not printed at once
        wait(lambda: replies.add(bot_line(pane())) or prompts() == 2, "the reply", interval=0.02)
        final = bot_line(pane())
        assert len(final) > len("bot> "), pane()
        assert any(len("bot> ") < len(r) < len(final) and final.startswith(r) for r in replies), replies
        subprocess.run([*tmux, "send-keys", "-t", name, "/quit", "Enter"], check=True)
        wait(lambda: not alive(), "the session to end")
    finally:
        subprocess.run([*tmux, "kill-server"], capture_output=True)


def bot_line(screen: list[str]) -> str:
    lines = [line.rstrip() for line in screen if line.startswith("bot> ")]
    return lines[-1] if lines else ""


def wait(done, what: str, timeout: float = 120, interval: float = 0.2) -> None:
    end = time.monotonic() + timeout
    while not done():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)


@pytest.mark.slow
def test_a_state_from_another_model_is_refused_in_one_line(tmp_path):
    state = tmp_path / "other.safetensors"
    MemGPT(device="cpu").init_state(1).save(state)  # the small default model: slots memory, another backbone
    run = chat("--state", str(state), stdin="hello\n")
    assert run.returncode == 1 and run.stdout == ""
    errors = [line for line in run.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and errors[0].startswith("jobs.chat: error: ValueError: "), run.stderr
    assert "another model" in errors[0] and "'kind': 'slots'" in errors[0]
