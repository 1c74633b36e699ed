"""The model actor: one MemGPT per actor reads a group of documents in lockstep, chunk by chunk.

For each chunk it writes the chunk into memory and extracts its facts, conditioned on the memory of the chunks
before it (so a pronoun can resolve to a name read chapters ago): by default from the cache of that one read.
After the last chunk it makes the summary: from the facts and entity states (pipeline/summary.py), or generated
from the memory. A document's memory lives only inside the call that reads it, so an actor that Ray restarts
(re-running __init__) loses nothing but the call in flight, which Ray retries.
"""

import time
from itertools import groupby

import pyarrow as pa
import torch
from transformers import LogitsProcessorList

from memgpt import ChunkCache, MemGPT, MemGPTConfig, MemoryState, names
from memgpt.lookup import continue_generate, lookup_generate
from memgpt.names import RANDOM_MODEL, STORY_MODEL, TEXT_MODEL
from memgpt.padding import right_pad
from memgpt.repetition import no_loops, tidy_prose
from pipeline.checkpoints import Checkpoints, group_key
from pipeline.chunking import Chunk, chunk_text
from pipeline.config import ExtractConfig
from pipeline.facts import dedupe, ground, parse_facts
from pipeline.grammar import FactsGrammar, fact_grammar, names_in, prose_grammar, prose_of
from pipeline.io import error_row, safe_name
from pipeline.notes import RunningNotes
from pipeline.prompts import Prompts
from pipeline.reading import Reading
from pipeline.schemas import RESULT_TABLES, RESULTS, TABLES, validate_row
from pipeline.summary import evidence_for, lead_summary, person_facts, summary_from_states

STATES = "states"  # <output>/states/<doc id>.safetensors: final memories kept with --save-states
SHARED_PASS = ("kv", "slots")  # memories a generation continues from right after a chunk (facts_pass shared)
MIN_TEXT_CHUNK = 8  # tokens of document text per chunk, at least, once the facts prompt is added


def load_model(config: ExtractConfig, device: str | None = None) -> MemGPT:
    """The run's MemGPT on `device` (CUDA when this process has a GPU); the seed fixes random weights."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(config.seed)
    options = model_options(config)
    if config.model == RANDOM_MODEL:
        return MemGPT(MemGPTConfig(**options), device=device).eval()
    model = MemGPT.from_pretrained(
        model_path(config), device=device, trust_remote_code=config.trust_remote_code, **options
    )
    return model.eval()


def model_options(config: ExtractConfig) -> dict:
    """Memory settings given by the run, over the default model's own when the run names no model."""
    return names.model_settings(
        config.model, memory=config.memory, chunk_size=config.chunk_size, kv_budget=config.kv_budget
    )


def model_path(config: ExtractConfig, progress=None) -> str:
    """Where the run's model loads from: the offline copy of the text model when the run names none."""
    return names.model_path(config.model, progress)


def model_name(config: ExtractConfig) -> str:
    """The model as the tables name it (the same on every machine, so the tables are too)."""
    if config.model == RANDOM_MODEL:
        return f"random-init(seed={config.seed})"
    return TEXT_MODEL if config.model is None else config.model


def model_reason(config: ExtractConfig) -> str:
    """Why the run uses its model, for the run report."""
    if config.model is None:
        return "the default for text: an instruct model that knows English (offline copy; --model to change)"
    if config.model == STORY_MODEL:
        return "named by --model: trained on the synthetic stories of jobs.quickstart only"
    return "named by --model"


class Extractor:
    """Ray Data actor: `__init__` loads the model once; `__call__` turns a batch of documents into results."""

    def __init__(self, config: ExtractConfig, run_id: str):
        torch.set_num_threads(max(1, int(config.cpus_per_worker)))  # fixed, so results do not vary with it
        self.config, self.run_id = config, run_id
        self.model = load_model(config)
        self.tokenizer = self.model.tokenizer
        if self.tokenizer is None:
            raise ValueError(f"model {model_name(config)!r} has no tokenizer")
        self.prompts = Prompts(self.tokenizer, config.prompts, self.model.config.memory)
        self.notes_every = config.notes.every_for(self.prompts.style, config.summary_from)
        self.notes = None
        if self.notes_every:
            self.notes = RunningNotes(self.model, config.notes.max_new_tokens, config.notes.instruction)
        self.grammar_mode = config.facts_grammar
        if self.grammar_mode == "auto":
            self.grammar_mode = "text" if self.prompts.style == "chat" else "none"
        self.summary_from = summary_source(config, self.grammar_mode, self.notes_every)
        # lookup decoding for the facts (memgpt/lookup.py); archival memory shapes the logits itself
        self.lookup = config.facts_draft_tokens > 0 and self.model.config.memory != "archival"
        self.grammar = None
        if config.facts and self.grammar_mode != "none":
            self.grammar = FactsGrammar(
                self.tokenizer, self.model.backbone.get_output_embeddings().weight.shape[0]
            )
        # the facts from the cache of the chunk's own read: memories whose read leaves a plain cache
        self.shared = (
            config.facts and config.facts_pass == "shared" and self.model.config.memory in SHARED_PASS
        )
        overhead = self.prompts.facts_overhead if config.facts and not self.shared else 0
        if config.facts and self.notes and not self.shared:  # the notes go into every facts prompt
            overhead += (
                config.notes.max_new_tokens + len(self.prompts.facts([], "x")) - len(self.prompts.facts([]))
            )
        self.text_chunk = self.model.config.chunk_size - overhead  # chunk + facts prompt fit one chunk
        if self.text_chunk < MIN_TEXT_CHUNK:
            raise ValueError(
                f"chunk_size {self.model.config.chunk_size} leaves {self.text_chunk} tokens of text "
                f"next to the {overhead}-token facts prompt (with the notes); use a larger chunk_size"
            )
        self.device = _device_name(self.model.device)
        self.checkpoints = Checkpoints(config.output)
        self.resumed_from: dict[
            str, int
        ] = {}  # group key -> first chunk read by the last call (0: from the start)

    def __call__(self, batch: pa.Table) -> pa.Table:
        """Results of a batch of lockstep groups: rows of the read stage (`schemas.GROUPS`, a group per row)
        or of documents with a `group` column (consecutive rows of one group)."""
        if "docs" in batch.column_names:
            groups = [row["docs"] for row in batch.to_pylist()]
        else:
            groups = [list(g) for _, g in groupby(batch.to_pylist(), key=lambda d: d["group"])]
        results = [r for group in groups if group for r in self.extract_or_record(group)]
        return pa.Table.from_pylist(results, schema=RESULTS)

    def extract_or_record(self, docs: list[dict]) -> list[dict]:
        """The boundary where per-document failures become `errors` rows: a failed group is retried one
        document at a time, and a document that still fails gets an error result."""
        try:
            return self.extract(docs)
        except Exception as e:  # noqa: BLE001 - any failure of one document must not stop the others
            if len(docs) > 1:
                return [r for d in docs for r in self.extract_or_record([d])]
            return [self.failed(docs[0], e)]

    @torch.inference_mode()
    def extract(self, docs: list[dict]) -> list[dict]:
        """Read `docs` in lockstep; return one result (rows per table) per document.

        With `checkpoint_every` K > 0 the group's memory state and readings are saved every K chunks, and a
        retried read of the same group starts from its last checkpoint instead of chunk 0."""
        start = time.perf_counter()
        chunks = [chunk_text(d["text"], self.tokenizer, self.text_chunk) for d in docs]
        n_steps = max(len(c) for c in chunks)
        key = group_key([d["doc_id"] for d in docs])
        resumed = self.resume(key, docs)
        if resumed is None:
            state, first, before, readings = (
                self.model.init_state(len(docs)),
                0,
                0.0,
                [Reading() for _ in docs],
            )
        else:
            state, progress = resumed
            first, before = progress["next_chunk"], progress["seconds"]
            readings = [Reading.from_dict(r) for r in progress["readings"]]
        self.resumed_from[key] = first
        for t in range(first, n_steps):
            state = self.read_chunk(t, docs, chunks, readings, state)
            every = self.config.checkpoint_every
            if every and (t + 1) % every == 0 and t + 1 < n_steps:
                progress = {"run_id": self.run_id, "doc_ids": [d["doc_id"] for d in docs],
                            "text_chunk": self.text_chunk, "readings": [r.to_dict() for r in readings],
                            "seconds": before + time.perf_counter() - start}  # fmt: skip
                self.checkpoints.save(key, t + 1, state, progress)
        summaries = self.summaries(docs, chunks, readings, state)
        seconds = before + time.perf_counter() - start
        return self.results(docs, chunks, readings, summaries, state, seconds)

    def summaries(self, docs: list[dict], chunks: list[list[Chunk]], readings: list[Reading],
                  state: MemoryState) -> list[tuple[str, str, list[dict]]]:  # fmt: skip
        """Each document's summary: (where it came from, text, evidence). With `summary_from: auto`, a document
        whose facts follow fewer than two people (a manual, a README) gets its opening sentences (`lead`): the
        small default model's summaries from memory are about something else (docs/knowledge.md); one without a
        sentence of prose gets its summary from the memory."""
        made: list[tuple[str, str, list[dict]] | None] = [None] * len(docs)
        starts = [[c.char_start for c in cs] for cs in chunks]
        for i, (d, r) in enumerate(zip(docs, readings, strict=True)):
            if self.summary_from == "notes":  # the last notes are the summary of the whole document
                made[i] = ("notes", r.notes.strip(), evidence_for(r.notes, d["text"], starts[i]))
            elif self.summary_from == "states":
                least = 2 if self.config.summary_from == "auto" else 1
                text, evidence = summary_from_states(
                    dedupe(r.facts), d["text"], starts[i], self.config.summary_people, least
                )
                made[i] = ("states", text, evidence) if text or least == 1 else None
            if self.summary_from == "lead" or (self.summary_from == "states" and made[i] is None):
                text, evidence = lead_summary(d["text"], starts[i])  # under auto: too few people for states
                made[i] = ("lead", text, evidence) if text or self.summary_from == "lead" else None
        need = [i for i, m in enumerate(made) if m is None]
        if need:
            processor = self.prose_without_loops([readings[i].seen for i in need])
            texts, counts = self.generate(
                [self.prompts.summary()] * len(need), _select(state, need), self.config.max_new_tokens_summary,
                processor=processor,
            )  # fmt: skip
            for i, text, n in zip(need, texts, counts, strict=True):
                # no loop, and no end cut off by the token limit
                text = tidy_prose(text, n >= self.config.max_new_tokens_summary)
                made[i] = ("memory", text, evidence_for(text, docs[i]["text"], starts[i]))
                readings[i].generated += n
        return made

    def read_chunk(self, t: int, docs: list[dict], chunks: list[list[Chunk]], readings: list[Reading],
                   state: MemoryState) -> MemoryState:  # fmt: skip
        """Chunk t of every document that has one: M_t = f(M_{t-1}, x_t) and the chunk's facts, conditioned on
        the memory of the chunks before (facts_pass shared: generated after the same read, separate: from a
        prompt holding the chunk), the names it said, and the running notes where due."""
        active = [i for i, c in enumerate(chunks) if t < len(c)]
        passages = {}  # the chunks' prose: fenced code blanked, also where a block opened in an earlier chunk
        for i in active:
            text = docs[i]["text"][chunks[i][t].char_start : chunks[i][t].char_end]
            passages[i], readings[i].in_code = prose_of(text, readings[i].in_code)
        chunk_names = {i: names_in(passages[i]) for i in active}
        # who each subject pronoun of the chunk means, from the people the document has shown so far
        antecedents = {i: readings[i].entities.read(passages[i], chunk_names[i]) for i in active}
        ids, mask = right_pad([c[t].token_ids if t < len(c) else [] for c in chunks], self.pad_id)
        if self.config.facts:
            chosen = self.config.facts_antecedents == "entities"
            grammars = [self.fact_grammar(passages[i], readings[i], antecedents[i] if chosen else None)
                        for i in active]  # fmt: skip
            if self.shared:  # the chunk read once: M_t, then the facts from the cache of that read
                state, after = self.model.step_keeping_cache(state, ids, mask)
                texts, counts = self.facts_after_reading(
                    after,
                    [readings[i].notes for i in active],
                    [chunks[i][t].token_ids for i in active],
                    grammars,
                )
            else:  # the facts prompt (instruction and chunk) from M_{t-1}, then M_t
                prompts = [self.prompts.facts(chunks[i][t].token_ids, readings[i].notes) for i in active]
                texts, counts = self.generate(
                    prompts, _select(state, active), self.config.max_new_tokens_facts, grammars
                )
                state = self.model.step(state, ids, mask)
            for i, text, n in zip(active, texts, counts, strict=True):
                said = antecedents[i] if chosen else None  # which "he" a line's subject was resolved from
                readings[i].add_facts(*self.fact_rows(docs[i], chunks[i][t], text, said), n)
        else:
            state = self.model.step(state, ids, mask)
        for i in active:
            readings[i].meet(chunk_names[i])
        if self.notes:  # every K chunks, and at a document's end: M_t = f(M_{t-1}, x_t) in text
            due = [i for i in active if (t + 1) % self.notes_every == 0 or t + 1 == len(chunks[i])]
            if due:
                passages = [docs[i]["text"][readings[i].noted : chunks[i][t].char_end] for i in due]
                prose = self.prose([readings[i].seen for i in due])
                new, counts = self.notes.update([readings[i].notes for i in due], passages, prose)
                for i, text, n in zip(due, new, counts, strict=True):
                    r = readings[i]
                    r.notes, r.noted, r.generated = text, chunks[i][t].char_end, r.generated + n
        return state

    def results(self, docs: list[dict], chunks: list[list[Chunk]], readings: list[Reading],
                summaries: list[tuple[str, str, list[dict]]], state: MemoryState, seconds: float) -> list[dict]:  # fmt: skip
        """Every document's rows; the group's seconds shared by tokens read and generated, so they add up."""
        n_tokens = [sum(len(c.token_ids) for c in cs) for cs in chunks]
        work = sum(n_tokens) + sum(r.generated for r in readings)
        key = group_key([d["doc_id"] for d in docs])
        results = []
        for i, (d, r) in enumerate(zip(docs, readings, strict=True)):
            share = seconds * (n_tokens[i] + r.generated) / max(work, 1)
            doc_facts = dedupe(r.facts)
            source, text, evidence = summaries[i]
            summary = self.summary_row(d, source, text, evidence, len(chunks[i]), n_tokens[i], r, len(doc_facts),
                                       share)  # fmt: skip
            saved = None
            if self.config.save_states:
                saved = self.save_state(d, state.select([i]), text, person_facts(doc_facts))
            result = self.result(d, [summary], doc_facts, [], "ok", n_tokens[i], share, None, saved)
            results.append(result | {"checkpoint": key})
        return results

    def save_state(self, doc: dict, state: MemoryState, summary: str, people: dict[str, list[str]]) -> str:
        """Write a document's final memory under <output>/states/ (atomically; named by its id, so a retry
        replaces it), with what `jobs.ask` needs to load the same model and each person's latest facts
        (`people`); its path for the manifest."""
        info = {
            "doc_id": doc["doc_id"],
            "model": model_name(self.config),
            "options": model_options(self.config),
            "summary": summary,
            "people": people,
        }
        relpath = f"{STATES}/{safe_name(doc['doc_id'])}.safetensors"
        return self.checkpoints.out.write_bytes(relpath, state.to_bytes(info))

    def resume(self, key: str, docs: list[dict]) -> tuple[MemoryState, dict] | None:
        """The group's last checkpoint (state on the model's device, progress), or None to start at chunk 0.

        A checkpoint of another run (other settings) or of other chunking is dropped; a state of another model
        is an error naming both, never silently read."""
        if not self.config.checkpoint_every:
            return None
        found = self.checkpoints.load(key, device=self.model.device)
        if found is None:
            return None
        state, progress = found
        try:
            self.model.check_state(state)
        except ValueError as e:
            raise ValueError(
                f"checkpoint {key} does not fit model {model_name(self.config)!r}: {e}"
            ) from None
        same = "readings" in progress and (
            progress.get("run_id"),
            progress.get("doc_ids"),
            progress.get("text_chunk"),
        ) == (
            self.run_id,
            [d["doc_id"] for d in docs],
            self.text_chunk,
        )
        if not same:
            self.checkpoints.delete(key)
            return None
        return state, progress

    def fact_grammar(
        self, passage: str, reading: Reading, antecedents: dict[int, str] | None = None
    ) -> str | None:
        """The grammar a chunk's fact lines follow (pipeline/grammar.py), or None when unconstrained.

        A subject pronoun's line names the person `antecedents` gives for its offset in the chunk (the entity
        states' choice); one without may name any name said before it: earlier in the chunk, in the chunks before,
        or in the running notes (counted only if the text has said it: the notes may be wrong)."""
        if self.grammar is None:
            return None
        mode, lines, relations = self.grammar_mode, self.config.facts_max_lines, self.config.facts_relations
        noted = [n for n in names_in(reading.notes) if n in reading.seen]
        # names said in the chunks before: a chosen antecedent needs no place here, and one said later in this
        # chunk must not become a choice for an earlier pronoun the states left open
        known = list(dict.fromkeys(reading.names + noted))
        return fact_grammar(mode, lines, passage, known, relations, antecedents, reading.entities.places())

    def prose(self, seen: list[list[str]]) -> LogitsProcessorList | None:
        """For summaries and notes under a grammar: capitalised words only from the names each document has
        said so far (`seen`, gathered chunk by chunk: no rescan of the text read, which would be quadratic)."""
        if self.grammar is None:
            return None
        grammars = [prose_grammar(names) for names in seen]
        return LogitsProcessorList([self.grammar.processor(grammars, max_lines=1 << 30)])

    def prose_without_loops(self, seen: list[list[str]]) -> LogitsProcessorList:
        """The summary's processors: the prose grammar, then, for chat models, the guards against loops (a
        model trained on the task format may rightly repeat itself: "... moved to the garden" for two people)."""
        processors = list(self.prose(seen) or [])
        return LogitsProcessorList(processors + (no_loops() if self.prompts.style == "chat" else []))

    def generate(
        self,
        prompts: list[list[int]],
        state: MemoryState,
        max_new: int,
        grammars: list | None = None,
        processor: LogitsProcessorList | None = None,
    ) -> tuple[list[str], list[int]]:
        """Greedy continuations of `prompts` from `state`: the texts and the number of tokens generated.

        With `grammars` (one per prompt), each row's fact lines follow its grammar; `processor`: any other."""
        constraint = self.facts_constraint(grammars)
        processors = [constraint] if constraint is not None else list(processor or [])
        if grammars and self.lookup:
            rows, _ = lookup_generate(
                self.model, prompts, state, max_new, constraint, self.config.facts_draft_tokens
            )
            return _texts_and_counts(self.model.replies(rows))
        replies = self.model.reply(
            prompts,
            memory=state,
            max_new_tokens=max_new,
            logits_processor=LogitsProcessorList(processors),
        )
        return _texts_and_counts(replies)

    def facts_constraint(self, grammars: list | None):
        """The grammars' processor, which fact lines follow (and lookup decoding drafts under), or None."""
        if grammars and grammars[0] is not None:
            return self.grammar.processor(grammars, self.config.facts_max_lines)
        return None

    def facts_after_reading(
        self, after: ChunkCache, notes: list[str], chunk_ids: list[list[int]], grammars: list
    ) -> tuple[list[str], list[int]]:
        """Each chunk's fact lines, generated from the cache its read left (`after`): the instruction only is
        read, and drafts are looked up in the chunk's tokens."""
        rows, _ = continue_generate(
            self.model, after, [self.prompts.facts_after(n) for n in notes], chunk_ids,
            self.config.max_new_tokens_facts, self.facts_constraint(grammars), self.config.facts_draft_tokens,
        )  # fmt: skip
        return _texts_and_counts(self.model.replies(rows))

    def fact_rows(
        self, doc: dict, chunk: Chunk, generated: str, antecedents: dict[int, str] | None = None
    ) -> tuple[list[dict], int]:
        triples, bad = parse_facts(generated)
        rows = []
        for t in triples:
            start, end, score = ground(t, doc["text"], chunk.char_start, chunk.char_end, antecedents)
            rows.append(
                {
                    "doc_id": doc["doc_id"],
                    "subject": t.subject,
                    "relation": t.relation,
                    "object": t.object,
                    "chunk_index": chunk.index,
                    "char_start": start,
                    "char_end": end,
                    "score": score,
                    "model": model_name(self.config),
                    "run_id": self.run_id,
                }
            )
        return rows, bad

    def summary_row(self, doc, source, summary, evidence, n_chunks, n_tokens, reading: Reading, n_facts,
                    seconds) -> dict:  # fmt: skip
        return {
            "doc_id": doc["doc_id"],
            "source": doc["source"],
            "title": doc["title"],
            "summary": summary,
            "summary_from": source,
            "summary_evidence": evidence,
            "n_chars": len(doc["text"]),
            "n_tokens": n_tokens,
            "n_chunks": n_chunks,
            "tokens_generated": reading.generated,
            "n_facts": n_facts,
            "n_unparsed": reading.unparsed,
            "model": model_name(self.config),
            "memory_kind": self.model.config.memory,
            "memory_size": self.model.config.memory_size,
            "seconds": seconds,
            "device": self.device,
            "run_id": self.run_id,
        }

    def failed(self, doc: dict, e: Exception) -> dict:
        message = f"{doc['source']} (doc_id {doc['doc_id']!r}): {type(e).__name__}: {e}"
        error = error_row(doc["doc_id"], doc["source"], "extract", type(e).__name__, message, self.run_id)
        return self.result(doc, [], [], [error], "error", 0, 0.0, message) | {
            "checkpoint": group_key([doc["doc_id"]])
        }

    def result(self, doc, summaries, facts, errors, status, n_tokens, seconds, error, state=None) -> dict:
        """One document's rows for every table, checked against their schemas."""
        manifest = {
            "doc_id": doc["doc_id"],
            "status": status,
            "attempts": doc["attempt"],
            "n_tokens": n_tokens,
            "seconds": seconds,
            "error": error,
            "run_id": self.run_id,
            "state": state,
        }
        rows = {"summaries": summaries, "facts": facts, "errors": errors, "manifest": [manifest]}
        for name in RESULT_TABLES:
            for row in rows[name]:
                validate_row(row, TABLES[name])
        return {"doc_id": doc["doc_id"], **rows}

    @property
    def pad_id(self) -> int:
        return self.model.tokenizer_pad_id


def summary_source(config: ExtractConfig, grammar: str, notes_every: int) -> str:
    """Where the summaries come from: `summary_from`, or for auto, the running notes when they are on, else the
    facts' states where the facts are copied under the text grammar (words the document has), else the memory."""
    if config.summary_from == "notes" and not notes_every:
        raise ValueError("summary_from 'notes' needs running notes: set notes.every > 0")
    if config.summary_from != "auto":
        return config.summary_from
    if notes_every:
        return "notes"
    return "states" if config.facts and grammar == "text" else "memory"


def _texts_and_counts(replies) -> tuple[list[str], list[int]]:
    """Each reply's text and the number of tokens generated for it."""
    return [r.text for r in replies], [len(r.ids) for r in replies]


def _select(state: MemoryState, rows: list[int]) -> MemoryState:
    return state if rows == list(range(state.batch_size)) else state.select(rows)


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)
