"""A terminal conversation with an instruct model whose every turn is read into a fixed-size memory.

    python -m jobs.chat [--model PATH_OR_HUB_ID] [--state chat.safetensors] [--save-every N]
        [--max-new-tokens N] [--sample] [--system TEXT] [--memory kv|retrieval|archival] [--kv-budget N]

Each turn, the user's and the model's, is framed by the model's chat template and read into the memory, so
a turn costs the same however long the conversation: only the new turn is tokenised, and the reply is
generated from the memory. Commands: /save, /reset, /quit. With --state the memory (and, inside the file, the
number of turns) is saved when the session ends, every --save-every turns and on /save, and resumed next
time. When standard input is not a terminal, each line is one user turn and each reply one line on stdout.
"""

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from transformers import TextStreamer

PROG = "jobs.chat"
COMMANDS = ("/save", "/reset", "/quit")
# a finished exchange the template renders turns after, so a new turn's text is what the template adds to it
EXAMPLE = [{"role": "user", "content": "Hi."}, {"role": "assistant", "content": "Hello."}]
MARK = "\x00REPLY\x00"  # a reply's content, to find what the template puts around it


class OneLineParser(argparse.ArgumentParser):
    """Argument errors as one line (not usage + error) and exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = OneLineParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(p)
    p.add_argument("--state", help="memory file (safetensors): resumed if it exists, saved at the end")
    p.add_argument("--save-every", type=int, default=10, help="also save every N turns (0: only at the end)")
    p.add_argument("--max-new-tokens", type=int, default=256, help="longest reply, in tokens")
    p.add_argument("--system", help="system prompt of a new conversation (default: the template's own)")
    p.add_argument("--traceback", action="store_true", help="show the full traceback of a failure")
    return p.parse_args(argv)


def add_model_args(p: argparse.ArgumentParser) -> None:
    """The model options jobs.chat and jobs.continue share."""
    from memgpt import memory_names
    from memgpt.names import TEXT_MODEL_SETTINGS

    p.add_argument("--model", help="HF model folder, hub id, GGUF file or MemGPT folder (default: SmolLM2)")
    p.add_argument("--memory", choices=memory_names(trained=False), default="kv")
    p.add_argument(
        "--chunk-size",
        type=int,
        default=TEXT_MODEL_SETTINGS["chunk_size"],
        help="tokens read per backbone pass",
    )
    p.add_argument(
        "--kv-budget", type=int, default=TEXT_MODEL_SETTINGS["kv_budget"], help="kv entries kept per layer"
    )
    p.add_argument("--sample", action="store_true", help="sample (the model's settings) instead of greedy")
    p.add_argument("--seed", type=int, help="makes sampling repeatable")


def load_model(args: argparse.Namespace, prog: str):
    """The MemGPT the flags name; the offline SmolLM2 by default (made ready once, with a line to stderr)."""
    import transformers

    from memgpt import MemGPT
    from memgpt.names import model_path

    transformers.utils.logging.disable_progress_bar()  # its "Loading weights" bar is noise in a chat
    name = model_path(args.model, progress=lambda m: status(f"{prog}: {m}"))
    options = {"memory": args.memory, "chunk_size": args.chunk_size, "kv_budget": args.kv_budget}
    return MemGPT.from_pretrained(name, **options).eval()


def check_window(model, max_new_tokens: int) -> None:
    """Generated tokens go after the kept entries: refuse a reply that would leave the backbone's window."""
    from memgpt import hub

    window, c = hub.position_window(model.backbone.config), model.config
    if window is None or c.kv_budget is None:
        return
    room = c.prompt_room  # retrieved blocks or recalled passages go between the kept entries and the reply
    if c.kv_budget + c.chunk_size + room + max_new_tokens > window:
        raise ValueError(
            f"kv_budget + chunk_size{' + recalled memory' if room else ''} + max_new_tokens ({c.kv_budget} + "
            f"{c.chunk_size}{f' + {room}' if room else ''} + {max_new_tokens}) must fit the backbone's "
            f"{window}-position window"
        )


def status(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def generate_options(model, args: argparse.Namespace) -> dict:
    """Greedy, or the backbone's sampling settings with --sample; stops at any of the model's end tokens."""
    stops = model.backbone.generation_config.eos_token_id
    stops = set(stops if isinstance(stops, list) else [stops] if stops is not None else [])
    if model.tokenizer.eos_token_id is not None:
        stops.add(model.tokenizer.eos_token_id)
    options = {"do_sample": args.sample, "eos_token_id": sorted(stops) or None}
    if args.seed is not None:
        options["seed"] = args.seed
    return options


# ---- the chat template, one turn at a time ---------------------------------------------------------------


@dataclass(frozen=True)
class Turns:
    """Token ids of one turn at a time, as the model's chat template frames them in a whole conversation."""

    tokenizer: object
    system: str | None
    header: list[int]  # what opens the model's reply (the generation prompt)
    closing: list[int]  # what follows a reply's content (end-of-turn token, newline)

    @classmethod
    def of(cls, tokenizer, system: str | None = None) -> "Turns":
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError("the model's tokenizer has no chat template: use an instruct (chat) model")
        asked = EXAMPLE + [{"role": "user", "content": "?"}]
        header = _added(render(tokenizer, asked), render(tokenizer, asked, prompt=True))
        replied = _added(render(tokenizer, asked, prompt=True), render(tokenizer, asked + [_reply(MARK)]))
        if not replied.startswith(MARK):
            raise ValueError("the model's chat template does not render a reply after its generation prompt")
        encode = lambda text: tokenizer.encode(text, add_special_tokens=False)  # noqa: E731
        return cls(tokenizer, system, encode(header), encode(replied[len(MARK) :]))

    def user(self, text: str, first: bool) -> list[int]:
        """The user's turn; a conversation's first opens with the system prompt (given, or the template's)."""
        message = {"role": "user", "content": text}
        if first:
            system = [{"role": "system", "content": self.system}] if self.system else []
            rendered = render(self.tokenizer, system + [message])
        else:
            rendered = _added(render(self.tokenizer, EXAMPLE), render(self.tokenizer, EXAMPLE + [message]))
        return self.tokenizer.encode(rendered, add_special_tokens=False)

    def reply(self, generated: list[int], stops: set[int]) -> list[int]:
        """The model's whole turn as the template frames it: header, its own tokens, the closing."""
        if generated and generated[-1] in stops:  # its own end-of-turn: the closing holds the template's
            generated = generated[:-1]
        return self.header + generated + self.closing


def render(tokenizer, messages: list[dict], prompt: bool = False) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=prompt)


def _added(before: str, after: str) -> str:
    """The text a template adds to a conversation by one more turn (or the generation prompt)."""
    if not after.startswith(before):
        raise ValueError("the model's chat template does not render a conversation turn by turn")
    return after[len(before) :]


def _reply(content: str) -> dict:
    return {"role": "assistant", "content": content}


# ---- the conversation and its memory -------------------------------------------------------------------


class Chat:
    """A conversation held as a memory state: each exchange reads the user's turn and the reply into it."""

    def __init__(self, model, turns: Turns, options: dict, max_new_tokens: int):
        self.model, self.turns, self.options, self.max_new_tokens = model, turns, options, max_new_tokens
        self.stops = set(options["eos_token_id"] or [])
        self.reset()

    def reset(self) -> None:
        self.state, self.n_turns = self.model.init_state(1), 0
        self.saved_turns = 0  # the turns held when last saved (saving every N turns counts from it)

    @property
    def tokens(self) -> int:
        return int(self.state.n_read[0])

    def say(self, text: str, streamer=None) -> str:
        """The reply to `text`, streamed; the memory takes both turns only once the reply is complete."""
        import torch

        user = torch.tensor(self.turns.user(text, first=self.tokens == 0))
        state = self.model.read([user], memory=self.state)
        header = torch.tensor([self.turns.header])
        options = dict(self.options)
        if options.get("seed") is not None:  # repeatable, but not the same random draws for every reply
            options["seed"] += self.n_turns
        (answer,) = self.model.reply(
            [header], memory=state, max_new_tokens=self.max_new_tokens, streamer=streamer, **options
        )
        reply = torch.tensor(self.turns.reply(answer.ids, self.stops))
        self.state = self.model.read([reply], memory=state)  # assigned last: an interrupted turn leaves none
        self.n_turns += 2
        return answer.text

    def describe(self) -> str:
        return f"{self.n_turns} turns, {self.tokens} tokens"


class LineStreamer(TextStreamer):
    """Streams a reply to `out` as it is generated; with `single_line`, its newlines become spaces."""

    def __init__(self, tokenizer, out: TextIO, single_line: bool):
        super().__init__(tokenizer, skip_prompt=True, skip_special_tokens=True)
        self.out, self.single_line = out, single_line

    def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
        if self.single_line:  # one reply per line, so a script can read them
            text = text.replace("\r\n", " ").replace("\n", " ").replace("\r", " ")
        self.out.write(text + ("\n" if stream_end else ""))
        self.out.flush()


# ---- saving and resuming -------------------------------------------------------------------------------


def save(chat: Chat, path: Path) -> None:
    """The state, with its turn count inside the file, written to a temporary file and renamed (atomic)."""
    info = {"turns": chat.n_turns, "tokens": chat.tokens, "model": chat.model.name}
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        chat.state.save(tmp, info=info)
        os.replace(tmp, path)
        chat.saved_turns = chat.n_turns
    finally:
        tmp.unlink(missing_ok=True)


def resume(chat: Chat, path: Path) -> None:
    """Continue from a saved state, refused unless it belongs to this model (one line, exit 1)."""
    from memgpt import MemoryState

    state = MemoryState.load(path)
    try:
        chat.model.check_state(state)
    except ValueError as e:
        raise ValueError(f"{path} was saved from another model or memory: {e}") from None
    if state.batch_size != 1:
        raise ValueError(f"{path} holds {state.batch_size} memories; a chat resumes from one")
    chat.state = state.to(chat.model.device)
    chat.n_turns = int(MemoryState.read_info(path).get("turns", 0))  # 0 for a state saved by another job
    chat.saved_turns = chat.n_turns


# ---- the session ---------------------------------------------------------------------------------------


def session(chat: Chat, args: argparse.Namespace, interactive: bool) -> None:
    """Read user turns (a prompt on a terminal, else one per line) until /quit or the end of input."""
    path = Path(args.state) if args.state else None
    while True:
        try:
            text = input("you> " if interactive else "").strip()
        except EOFError:
            return
        if text == "/quit":
            return
        if text.startswith("/"):
            command(chat, text, path)
        elif text:
            respond(chat, text, interactive)
            if (
                path is not None
                and args.save_every > 0
                and chat.n_turns - chat.saved_turns >= args.save_every
            ):
                save(chat, path)


def command(chat: Chat, text: str, path: Path | None) -> None:
    if text == "/reset":
        chat.reset()
        status(f"{PROG}: memory reset")
    elif text == "/save" and path is None:
        status(f"{PROG}: nothing to save to: start with --state FILE")
    elif text == "/save":
        save(chat, path)
        status(f"{PROG}: saved {path}: {chat.describe()}")
    else:
        status(f"{PROG}: unknown command {text.split()[0]} (commands: {', '.join(COMMANDS)})")


def respond(chat: Chat, text: str, interactive: bool) -> None:
    """Stream the reply to stdout: as it comes on a terminal (Ctrl-C stops it), else as one line."""
    streamer = LineStreamer(chat.model.tokenizer, sys.stdout, single_line=not interactive)
    if not interactive:
        chat.say(text, streamer)
        return
    print("bot> ", end="", flush=True)
    try:
        chat.say(text, streamer)
    except KeyboardInterrupt:  # the memory takes an exchange only once its reply is complete
        print(flush=True)
        status(f"{PROG}: reply interrupted: this exchange is not in the memory")


def start(args: argparse.Namespace) -> Chat:
    """The model, and the conversation resumed from --state when that file exists."""
    if args.save_every < 0 or args.max_new_tokens < 1:
        raise ValueError("--save-every must be >= 0 and --max-new-tokens >= 1")
    if args.state and Path(args.state).is_dir():
        raise ValueError(f"--state {args.state} is a directory; give a file such as chat.safetensors")
    model = load_model(args, PROG)
    check_window(model, args.max_new_tokens)
    turns = Turns.of(model.tokenizer, args.system)
    chat = Chat(model, turns, generate_options(model, args), args.max_new_tokens)
    if args.state and Path(args.state).is_file():
        resume(chat, Path(args.state))
        status(f"{PROG}: resumed {args.state}: {chat.describe()}")
    else:
        status(f"{PROG}: new conversation ({model.config.memory} memory of {model.config.kv_budget} entries)")
    return chat


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    interactive = sys.stdin.isatty()
    try:
        import torch

        with torch.inference_mode():  # no graphs kept across turns
            return _chat(args, interactive)
    except Exception as e:  # one line for the user; --traceback for the details
        if args.traceback:
            raise
        print(f"{PROG}: error: {one_line(e)}", file=sys.stderr)
        return 1


def _chat(args: argparse.Namespace, interactive: bool) -> int:
    chat = start(args)
    if interactive:
        import readline  # noqa: F401  (line editing and history for input())

        status(f"{PROG}: commands: {', '.join(COMMANDS)}")
    try:
        session(chat, args, interactive)
    except KeyboardInterrupt:  # at the prompt, or a script's reply: the session ends, finished turns kept
        status("")
    if args.state:
        save(chat, Path(args.state))
        status(f"{PROG}: saved {args.state}: {chat.describe()}")
    return 0


def one_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"


if __name__ == "__main__":
    sys.exit(main())
