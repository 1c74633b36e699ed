"""Where the extraction job's time goes: one document read by the job's own actor, every phase timed.

python -m benchmarks.extraction_profile                          # 4k tokens of a real book, default model and settings
python -m benchmarks.extraction_profile --tokens 16384 --input book.txt
python -m benchmarks.extraction_profile --docs 4 --tokens 2048       # a lockstep group of 4, as the job reads
python -m benchmarks.extraction_profile --draft-tokens 0           # facts one token per forward pass
python -m benchmarks.extraction_profile --facts-pass separate      # the facts prompt read apart from the chunk
python -m benchmarks.extraction_profile --notes-every 2            # running notes every 2 chunks (the summary)
python -m benchmarks.extraction_profile --docs 4 --tokens 1024 --repeat 3   # 3 runs, each beside its bare read
python -m benchmarks.extraction_profile --docs 4 --tokens 960 --keep-ended-rows  # rows that ended stay in the batch
(on a machine with a GPU it runs there, in bf16, as the job's actors do)

The actor (`pipeline.actor.Extractor`, default settings) reads one document in this process; its phases are
timed where they run: reading (the memory's forward over each chunk), facts generation (with the grammar's
masks and the facts prompt's first pass timed apart), running notes, the summary, building each chunk's grammar, parsing and grounding the
lines, and writing the tables. Beside it, in the same run, the bare backbone's chunked forward over the same
tokens: the job's tokens of text per second over that one's is the ratio that says what extraction costs
over reading. Forward passes per generated token: the backbone's calls while generating, over the tokens
generated (1.0 is one pass a token; less is what copying spans would buy); and the positions the facts'
verification passes carried (rows times drafted width), of which how many were a row's own tokens. With
--repeat N the job and the bare read run N times, one after the other in turn (a shared machine's speed drifts
from minute to minute); the table is the run of median length and the ratio is the medians'.
"""

import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import NamedTuple

import torch

from . import common
from .planted_text import book_text


class Timers:
    """Seconds per phase, from wrapping the callables each phase runs; a phase inside another (the prompt a
    generation reads first) counts for the inner one only, so the phases add up."""

    def __init__(self):
        self.seconds: dict[str, float] = defaultdict(float)
        self.open: list[tuple[str, float]] = []  # the phases running, innermost last, with their start

    def wrap(self, phase: str, fn: Callable) -> Callable:
        def timed(*args, **kwargs):
            self.start(phase)
            try:
                return fn(*args, **kwargs)
            finally:
                self.stop()

        return timed

    def start(self, phase: str) -> None:
        self.open.append((phase, time.perf_counter()))

    def stop(self) -> None:
        phase, start = self.open.pop()
        spent = time.perf_counter() - start
        self.seconds[phase] += spent
        if self.open:
            self.seconds[self.open[-1][0]] -= spent

    @property
    def phase(self) -> str | None:
        return self.open[-1][0] if self.open else None


def instrument(ex, timers: Timers, calls: list[int]) -> None:
    """The actor's phases timed on this instance; the backbone's forward calls counted, and the positions of
    the facts' verification passes (calls[2]: carried, calls[3]: a row's own tokens, not padding)."""
    ex.fact_grammar = timers.wrap("grammar built per chunk", ex.fact_grammar)
    ex.fact_rows = timers.wrap("parsing and grounding", ex.fact_rows)
    if ex.notes is not None:
        ex.notes.update = timers.wrap("notes", ex.notes.update)
    generate, make_processor = ex.generate, ex.grammar.processor if ex.grammar else None

    def phase_generate(prompts, state, max_new, grammars=None, processor=None):
        phase = "facts" if grammars is not None else "summary"
        prompt_read[0] = phase == "facts"
        return timers.wrap(phase, generate)(prompts, state, max_new, grammars, processor)

    # the facts prompt's first pass (the chunk and the instruction, read before a token is written): apart
    prompt_read = [False]

    def before_pass(module, args, kwargs):
        if prompt_read[0] and timers.phase == "facts":
            timers.start("facts: reading the prompt")
        prompt_read[0] = False

    def after_pass(module, args, kwargs, output):
        if timers.phase == "facts: reading the prompt":
            timers.stop()

    ex.model.backbone.register_forward_pre_hook(before_pass, with_kwargs=True)
    ex.model.backbone.register_forward_hook(after_pass, with_kwargs=True)

    ex.generate = phase_generate
    after_reading = ex.facts_after_reading

    def phase_after_reading(*args):
        prompt_read[0] = True
        return timers.wrap("facts", after_reading)(*args)

    ex.facts_after_reading = phase_after_reading
    if make_processor is not None:  # the grammar's masks, inside generation: timed apart, then taken out
        ex.grammar.processor = lambda *args, **kwargs: _Timed(make_processor(*args, **kwargs), timers)

    def counted(step):
        def counted_step(*args, **kwargs):  # one backbone pass a chunk: not a generated token's
            calls[1] += 1
            return step(*args, **kwargs)

        return counted_step

    ex.model.step = timers.wrap("reading", counted(ex.model.step))
    ex.model.step_keeping_cache = timers.wrap("reading", counted(ex.model.step_keeping_cache))
    def count_pass(module, args, kwargs):
        calls[0] += 1
        if timers.phase == "facts":  # a verification pass: (A, K) tokens, the mask's last K columns theirs
            ids = kwargs["input_ids"]
            calls[2] += ids.numel()
            calls[3] += int(kwargs["attention_mask"][:, -ids.shape[1] :].sum())

    ex.model.backbone.base_model.register_forward_pre_hook(count_pass, with_kwargs=True)


class _Timed:
    """A grammar processor whose calls are timed: as transformers' logits processor (transformers calls the
    object, not a bound __call__) and as lookup decoding's constraint (memgpt/lookup.py)."""

    def __init__(self, proc, timers: Timers):
        self.proc, self.call = proc, timers.wrap("grammar masks", proc.__call__)
        for name in ("allowed", "allows", "accept", "valid_prefix", "forced"):
            setattr(self, name, timers.wrap("grammar masks", getattr(proc, name)))

    def __call__(self, input_ids, scores):
        return self.call(input_ids, scores)


class Run(NamedTuple):
    results: list[dict]
    seconds: dict[str, float]  # per phase, and "total"
    passes: int  # the backbone's passes while generating
    positions: tuple[int, int]  # the facts' verification passes: positions carried, a row's own tokens
    bare: float  # seconds of the bare chunked read after it


def profile(ex, texts: list[str], out: Path, timers: Timers) -> list[dict]:
    """Documents through the actor (instrumented with `timers`) as one lockstep group (as the job reads a
    group), their rows written as the sink writes them; `timers` gets "total"."""
    from pipeline.output import Output
    from pipeline.schemas import RESULT_TABLES, TABLES, to_table

    docs = [{"doc_id": f"profiled-{i}", "text": text, "source": f"profiled-{i}.txt", "title": None, "attempt": 1}
            for i, text in enumerate(texts)]  # fmt: skip
    start = time.perf_counter()
    results = ex.extract(docs)
    write = timers.wrap("writing", lambda: [Output(str(out)).write(t, r["doc_id"], to_table(r[t], TABLES[t]))
                                           for r in results for t in RESULT_TABLES if r[t]])  # fmt: skip
    write()
    timers.seconds["total"] = time.perf_counter() - start
    return results


def main(argv: list[str] | None = None) -> None:
    from pipeline.actor import Extractor
    from pipeline.config import ExtractConfig

    p = common.parser(__doc__)
    p.add_argument("--input", type=Path, default=None, help="a text file (default: Pride and Prejudice)")
    p.add_argument("--tokens", type=int, default=4096, help="tokens of the text read (per document)")
    p.add_argument("--docs", type=int, default=1, help="documents of --tokens each, read in lockstep as the job "
                   "reads a group (its batch_size, 4 by default)")  # fmt: skip
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--draft-tokens", type=int, default=None,
                   help="facts_draft_tokens (0: one token per pass, as before lookup decoding); none: the default")  # fmt: skip
    p.add_argument("--facts-pass", choices=("shared", "separate"), default=None,
                   help="facts_pass: shared (the default) or separate (the facts prompt read apart)")  # fmt: skip
    p.add_argument("--max-lines", type=int, default=None, help="facts_max_lines; none: the default")
    p.add_argument("--kv-budget", type=int, default=None, help="kv_budget; none: the job's default")
    p.add_argument("--repeat", type=int, default=1, help="runs of the job and of the bare read, in turn")
    p.add_argument("--keep-ended-rows", action="store_true", help="lookup decoding keeps a row that has "
                   "ended in the batch until every row ends, as before rows left it")  # fmt: skip
    p.add_argument("--notes-every", type=int, default=None,
                   help="running notes every K chunks (they are then the summary); none: the default (off)")  # fmt: skip
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.keep_ended_rows:
        from memgpt import lookup

        lookup._decode = partial(lookup._decode, shrink=False)
    text = args.input.read_text(encoding="utf-8") if args.input else book_text("pride_and_prejudice.txt")
    with tempfile.TemporaryDirectory() as tmp:
        given = {"facts_draft_tokens": args.draft_tokens, "facts_pass": args.facts_pass,
                 "facts_max_lines": args.max_lines, "kv_budget": args.kv_budget}  # fmt: skip
        settings = {k: v for k, v in given.items() if v is not None}  # the rest: the job's defaults
        if args.notes_every is not None:
            from pipeline.prompts import NotesConfig

            settings["notes"] = NotesConfig(every=args.notes_every)
        ex = Extractor(
            ExtractConfig(input="-", output=tmp, cpus_per_worker=args.threads, **settings), "profile"
        )
        ids = ex.tokenizer.encode(text, add_special_tokens=False)[: args.tokens * args.docs]
        # consecutive excerpts of the text, one per document
        excerpts = [ids[i * args.tokens : (i + 1) * args.tokens] for i in range(args.docs)]
        texts = [ex.tokenizer.decode(e) for e in excerpts]
        timers, calls = Timers(), [0, 0, 0, 0]  # backbone passes, chunk reads, verification positions (2)
        instrument(ex, timers, calls)
        runs = []
        for i in range(args.repeat):
            timers.seconds.clear()
            calls[:] = [0, 0, 0, 0]
            results = profile(ex, texts, Path(tmp) / f"run{i}", timers)
            passes = calls[0] - calls[1]  # the bare read's passes below are not the job's
            start = time.perf_counter()
            for e in excerpts:
                common.bare_forward(ex.model, torch.tensor(e), ex.model.config.chunk_size)
            runs.append(Run(results, dict(timers.seconds), passes, (calls[2], calls[3]), time.perf_counter() - start))
    report(runs, len(ids))


def report(runs: list[Run], n_tokens: int) -> None:
    """The phases of the run of median length; the ratio of the medians (of each, when several runs)."""
    results, seconds, calls, positions, _ = sorted(runs, key=lambda r: r.seconds["total"])[len(runs) // 2]
    seconds = dict(seconds)
    total = seconds.pop("total")
    bare = sorted(r.bare for r in runs)[len(runs) // 2]
    summaries = [r["summaries"][0] for r in results]
    generated, facts = sum(s["tokens_generated"] for s in summaries), sum(s["n_facts"] for s in summaries)
    # per document: a chunk ends at a sentence, so 1,024 tokens read as 3 chunks of 512 at most
    chunks = "/".join(str(s["n_chunks"]) for s in summaries)
    rest = total - sum(seconds.values())  # chunking, batching, building the results' rows
    rows = [{"phase": k, "seconds": v, "share": v / total} for k, v in [*seconds.items(), ("the rest", rest)]]
    title = (f"{len(results)} document(s) in lockstep, {n_tokens:,} tokens, chunks {chunks}, {generated:,} generated, "
             f"{facts} facts; {common.machine()}")  # fmt: skip
    common.print_table(rows, title)
    if len(runs) > 1:
        each = " / ".join(f"{n_tokens / r.seconds['total']:,.0f} vs {n_tokens / r.bare:,.0f} "
                          f"({r.bare / r.seconds['total']:.2f})" for r in runs)  # fmt: skip
        print(f"\n{len(runs)} runs, the job's tokens of text/s vs the bare read's (ratio): {each}")
    print(
        f"\nthe job: {n_tokens / total:,.0f} tokens of text/s; the bare backbone's chunked read: "
        f"{n_tokens / bare:,.0f} tokens/s; ratio {bare / total:.2f}" + (" (medians)" if len(runs) > 1 else "")
    )
    print(f"forward passes per generated token: {calls / max(generated, 1):.2f} ({calls:,} passes while generating, "
          f"{generated:,} tokens generated)")  # fmt: skip
    print(f"the facts' verification passes: {positions[0]:,} positions carried, {positions[1]:,} of them a row's own "
          f"tokens ({positions[1] / max(positions[0], 1):.0%})\ncommand: {common.command()}")  # fmt: skip


if __name__ == "__main__":
    main()
