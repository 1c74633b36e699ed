"""The model actor: one MemGPT per actor reads a group of documents in lockstep, chunk by chunk.

For each chunk it first extracts facts from the chunk, conditioned on the memory of the chunks before it (so a
pronoun can resolve to a name read chapters ago), then writes the chunk into memory. After the last chunk it
generates the summary from the memory. A document's memory lives only inside the call that reads it, so an
actor that Ray restarts (re-running __init__) loses nothing but the call in flight, which Ray retries.
"""

import time
from collections import defaultdict
from itertools import groupby

import pyarrow as pa
import torch

from memgpt import DEFAULT_MODEL, MemGPT, MemGPTConfig, MemoryState
from pipeline.checkpoints import Checkpoints, group_key
from pipeline.chunking import Chunk, chunk_text
from pipeline.config import RANDOM_MODEL, ExtractConfig
from pipeline.facts import dedupe, ground, parse_facts
from pipeline.io import error_row
from pipeline.prompts import Prompts
from pipeline.schemas import RESULT_TABLES, RESULTS, TABLES, validate_row

MIN_TEXT_CHUNK = 8  # tokens of document text per chunk, at least, once the facts prompt is added


def load_model(config: ExtractConfig, device: str | None = None) -> MemGPT:
    """The run's MemGPT on `device` (CUDA when this process has a GPU); the seed fixes random weights."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(config.seed)
    options = {
        k: v for k, v in (("memory", config.memory), ("chunk_size", config.chunk_size)) if v is not None
    }
    if config.model == RANDOM_MODEL:
        return MemGPT(MemGPTConfig(**options), device=device).eval()
    model = MemGPT.from_pretrained(
        model_path(config), device=device, trust_remote_code=config.trust_remote_code, **options
    )
    return model.eval()


def model_path(config: ExtractConfig) -> str:
    """Where the run's model loads from: `config.model`, or the shipped memgpt-small when it is None."""
    return str(DEFAULT_MODEL) if config.model is None else config.model


def model_name(config: ExtractConfig) -> str:
    """The model as the tables name it (the same on every machine, so the tables are too)."""
    if config.model == RANDOM_MODEL:
        return f"random-init(seed={config.seed})"
    return DEFAULT_MODEL.name if config.model is None else config.model


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
        overhead = self.prompts.facts_overhead if config.facts else 0
        self.text_chunk = self.model.config.chunk_size - overhead  # chunk + facts prompt fit one chunk
        if self.text_chunk < MIN_TEXT_CHUNK:
            raise ValueError(
                f"chunk_size {self.model.config.chunk_size} leaves {self.text_chunk} tokens of text "
                f"next to the {overhead}-token facts prompt; use a larger chunk_size"
            )
        self.device = _device_name(self.model.device)
        self.checkpoints = Checkpoints(config.output)
        self.resumed_from: dict[
            str, int
        ] = {}  # group key -> first chunk read by the last call (0: from the start)

    def __call__(self, batch: pa.Table) -> pa.Table:
        results = []
        for _, group in groupby(batch.to_pylist(), key=lambda d: d["group"]):
            results.extend(self.extract_or_record(list(group)))
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

        With `checkpoint_every` K > 0 the group's memory state and progress are saved every K chunks, and a
        retried read of the same group starts from its last checkpoint instead of chunk 0."""
        start = time.perf_counter()
        chunks = [chunk_text(d["text"], self.tokenizer, self.text_chunk) for d in docs]
        n_steps = max(len(c) for c in chunks)
        key = group_key([d["doc_id"] for d in docs])
        resumed = self.resume(key, docs)
        if resumed is None:
            state, first, before = self.model.init_state(len(docs)), 0, 0.0
            facts, unparsed, generated = defaultdict(list), [0] * len(docs), [0] * len(docs)
        else:
            state, progress = resumed
            first, before = progress["next_chunk"], progress["seconds"]
            facts = defaultdict(list, enumerate(progress["facts"]))
            unparsed, generated = progress["unparsed"], progress["generated"]
        self.resumed_from[key] = first
        for t in range(first, n_steps):
            active = [i for i, c in enumerate(chunks) if t < len(c)]
            if self.config.facts:
                prompts = [self.prompts.facts(chunks[i][t].token_ids) for i in active]
                texts, counts = self.generate(
                    prompts, _select(state, active), self.config.max_new_tokens_facts
                )
                for i, text, n in zip(active, texts, counts, strict=True):
                    rows, bad = self.fact_rows(docs[i], chunks[i][t], text)
                    facts[i] += rows
                    unparsed[i], generated[i] = unparsed[i] + bad, generated[i] + n
            ids, mask = _right_pad([c[t].token_ids if t < len(c) else [] for c in chunks], self.pad_id)
            state = self.model.step(state, ids, mask)
            every = self.config.checkpoint_every
            if every and (t + 1) % every == 0 and t + 1 < n_steps:
                progress = {
                    "run_id": self.run_id,
                    "doc_ids": [d["doc_id"] for d in docs],
                    "text_chunk": self.text_chunk,
                    "facts": [facts[i] for i in range(len(docs))],
                    "unparsed": unparsed,
                    "generated": generated,
                    "seconds": before + time.perf_counter() - start,
                }
                self.checkpoints.save(key, t + 1, state, progress)
        summaries, counts = self.generate(
            [self.prompts.summary()] * len(docs), state, self.config.max_new_tokens_summary
        )
        seconds = before + time.perf_counter() - start
        n_tokens = [sum(len(c.token_ids) for c in cs) for cs in chunks]
        generated = [g + n for g, n in zip(generated, counts, strict=True)]
        work = sum(n_tokens) + sum(generated)
        results = []
        for i, d in enumerate(docs):
            share = seconds * (n_tokens[i] + generated[i]) / max(work, 1)  # per-document seconds add up
            doc_facts = dedupe(facts[i])
            summary = self.summary_row(
                d, summaries[i], len(chunks[i]), n_tokens[i], generated[i], len(doc_facts), unparsed[i], share
            )
            results.append(
                self.result(d, [summary], doc_facts, [], "ok", n_tokens[i], share, None) | {"checkpoint": key}
            )
        return results

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
        same = (progress.get("run_id"), progress.get("doc_ids"), progress.get("text_chunk")) == (
            self.run_id,
            [d["doc_id"] for d in docs],
            self.text_chunk,
        )
        if not same:
            self.checkpoints.delete(key)
            return None
        return state, progress

    def generate(
        self, prompts: list[list[int]], state: MemoryState, max_new: int
    ) -> tuple[list[str], list[int]]:
        """Greedy continuations of `prompts` from `state`: the texts and the number of tokens generated."""
        ids, mask = _left_pad(prompts, self.pad_id)
        out = self.model.generate(
            ids, attention_mask=mask, memory=state, max_new_tokens=max_new, do_sample=False
        )
        texts, counts = [], []
        for row in out[:, ids.shape[1] :].tolist():
            n = row.index(self.eos_id) if self.eos_id in row else len(row)
            texts.append(self.tokenizer.decode(row[:n], skip_special_tokens=True))
            counts.append(n)
        return texts, counts

    def fact_rows(self, doc: dict, chunk: Chunk, generated: str) -> tuple[list[dict], int]:
        triples, bad = parse_facts(generated)
        rows = []
        for t in triples:
            start, end, score = ground(t, doc["text"], chunk.char_start, chunk.char_end)
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

    def summary_row(self, doc, summary, n_chunks, n_tokens, generated, n_facts, unparsed, seconds) -> dict:
        return {
            "doc_id": doc["doc_id"],
            "source": doc["source"],
            "title": doc["title"],
            "summary": summary.strip(),
            "n_chars": len(doc["text"]),
            "n_tokens": n_tokens,
            "n_chunks": n_chunks,
            "tokens_generated": generated,
            "n_facts": n_facts,
            "n_unparsed": unparsed,
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

    def result(self, doc, summaries, facts, errors, status, n_tokens, seconds, error) -> dict:
        """One document's rows for every table, checked against their schemas."""
        manifest = {
            "doc_id": doc["doc_id"],
            "status": status,
            "attempts": doc["attempt"],
            "n_tokens": n_tokens,
            "seconds": seconds,
            "error": error,
            "run_id": self.run_id,
        }
        rows = {"summaries": summaries, "facts": facts, "errors": errors, "manifest": [manifest]}
        for name in RESULT_TABLES:
            for row in rows[name]:
                validate_row(row, TABLES[name])
        return {"doc_id": doc["doc_id"], **rows}

    @property
    def pad_id(self) -> int:
        return self.model.tokenizer_pad_id

    @property
    def eos_id(self) -> int | None:
        return self.tokenizer.eos_token_id


def _select(state: MemoryState, rows: list[int]) -> MemoryState:
    return state if rows == list(range(state.batch_size)) else state.select(rows)


def _right_pad(rows: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T) ids and mask, right-padded; empty rows are all padding (their memory is left unchanged)."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)], mask[i, : len(r)] = torch.tensor(r, dtype=torch.long), 1
    return ids, mask


def _left_pad(rows: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r) :], mask[i, width - len(r) :] = torch.tensor(r, dtype=torch.long), 1
    return ids, mask


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)
