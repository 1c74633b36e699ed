"""The knowledge-extraction flow on one screen: read -> MemGPT actors -> write -> entities -> run report."""

import math
import os
import posixpath
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import ray
import transformers
from transformers.utils import logging as hf_logging

from memgpt.hub import custom_code, find_gguf, resolve, unknown_model_type
from memgpt.names import RANDOM_MODEL
from pipeline.actor import Extractor, load_model, model_name, model_options, model_path, model_reason
from pipeline.checkpoints import FOLDER, Checkpoints
from pipeline.config import ExtractConfig
from pipeline.heap import heap_trimmed
from pipeline.io import list_inputs
from pipeline.output import Output
from pipeline.rollup import write_entities
from pipeline.schemas import RESULT_TABLES
from pipeline.sink import ResultSink
from pipeline.stream import (
    READ_CPUS,
    TALLY,
    CorpusSource,
    Stream,
    clear_read_state,
    duplicate_winners,
    needs_id_pass,
    read_tally,
    read_units,
)

# Writes are small and need no CPU reservation: with one reserved, actors holding every CPU would hold back all
# commits (Ray Data's resource budget) until the last document is read, and a killed run would lose them all.
WRITE_CPUS = 0
# Blocks queued between the stages, per actor. The driver holds each small block (a group of short documents, under
# Ray's 100 KB inline limit) until an actor takes it: without a budget, reads ran ahead of the actors by the whole
# corpus (docs/performance.md 5b). Ray Data still runs one task when a single group is larger than the budget.
QUEUED_BYTES_PER_WORKER = 64 << 20


def run(config: ExtractConfig) -> "Report":
    """Extract summaries, facts and entities from `config.input` into `config.output`; resumes a killed run."""
    model_path(config, progress=lambda message: print(f"model: {message}", file=sys.stderr, flush=True))
    check_model(config)
    _, root, files = list_inputs(config.input, config.read)  # a missing input fails here, before any write
    out = Output(config.output)
    out.check_writable()
    run_id, start = config.derived_run_id(), time.perf_counter()
    checkpoints = Checkpoints(config.output)
    if config.checkpoint_every:
        check_checkpoints(config, checkpoints)  # a state from another model fails here, before any write

    out.remove_temp_files()  # half-written files of a killed run (hidden from readers all along)
    for table in RESULT_TABLES:  # each table the report names can be read, even where no document wrote one
        out.fs.create_dir(out.path(table), recursive=True)
    sink = ResultSink(config.output)
    connect(config.address, actor_cpus(config))
    tally = extract(config, root, files, run_id, sink)
    checkpoints.delete_all()  # every group is committed now: no read is left to resume

    n_entities = write_entities(out, run_id)
    return make_report(
        out,
        config,
        run_id,
        tally["documents"],
        tally["skipped"],
        tally["read_errors"],
        n_entities,
        sink.stats,
        time.perf_counter() - start,
    )


def extract(config: ExtractConfig, root: str, files: list, run_id: str, sink: ResultSink) -> Counter:
    """Stream the corpus from storage through the Extractor actors into `sink`; the read stage's counts.

    Read tasks on the cluster read, check and group the documents (pipeline/stream.py); the driver holds the
    file listing only, and each group is committed as soon as an actor has read it."""
    out = Output(config.output)
    stream = Stream(config.input, root, config.output, config.read, config.batch_size, run_id)
    units = read_units(files)
    clear_read_state(out, units)
    if not units:
        return read_tally(out)
    with data_context(config):
        winners = duplicate_winners(stream, units) if needs_id_pass(files, config.read) else {}
        ds = ray.data.read_datasource(
            CorpusSource(stream, units, winners),
            num_cpus=READ_CPUS,
            concurrency=max(2, config.workers),
        )
        # one group per block: Ray Data merges a read task's small outputs into one block (up to 128 MiB), and an
        # actor call on a merged block would commit nothing until every group in it is read
        ds = ds.repartition(target_num_rows_per_block=1)
        ds = ds.map_batches(
            Extractor,
            fn_constructor_args=(config, run_id),
            batch_size=1,  # one lockstep group per call
            batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=config.workers),
            num_gpus=config.gpus_per_worker or None,
            num_cpus=config.cpus_per_worker,
        )
        with heap_trimmed():
            ds.write_datasink(sink, ray_remote_args={"num_cpus": WRITE_CPUS})
    tally = read_tally(out)
    out.delete_dir(TALLY)  # counted: nothing of the read stage is left in the output
    return tally


@contextmanager
def data_context(config: ExtractConfig) -> Iterator[None]:
    """Ray Data's settings for one run, put back after it."""
    context = ray.data.DataContext.get_current()
    timeout, limits = context.execution_no_progress_timeout_s, context.execution_options.resource_limits
    # one actor call reads a whole lockstep group: books on a CPU take hours, and Ray Data's default (fail the
    # run after 30 minutes without an output) failed a group of two novels
    context.execution_no_progress_timeout_s = -1
    queued = min(limits.object_store_memory, QUEUED_BYTES_PER_WORKER * config.workers)
    context.execution_options.resource_limits = limits.copy(object_store_memory=queued)
    try:
        yield
    finally:
        context.execution_no_progress_timeout_s = timeout
        context.execution_options.resource_limits = limits


def check_model(config: ExtractConfig) -> None:
    """Fail early, before any output exists, when the model cannot be found, would run code of its own without
    --trust-remote-code, or is of a type transformers does not know. Reads the model's JSON files only."""
    if config.model == RANDOM_MODEL:
        return
    name = model_name(config)
    if find_gguf(model_path(config)) is not None:  # a GGUF file that exists; it holds weights, never code
        return
    path = resolve(model_path(config), config.trust_remote_code)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"model {name!r} has no config.json: not a MemGPT or Hugging Face model")
    code = custom_code(path)
    if code and not config.trust_remote_code:
        raise PermissionError(
            f"model {name!r} runs code of its own ({', '.join(code)}); pass "
            "--trust-remote-code to allow it, only if you trust its source"
        )
    model_type = None if code else unknown_model_type(path)
    if model_type:
        raise ValueError(
            f"model {name!r} has model_type {model_type!r}, unknown to transformers "
            f"{transformers.__version__}"
        )


def check_checkpoints(config: ExtractConfig, checkpoints: Checkpoints) -> None:
    """Fail early, naming both, when a checkpoint left in the output holds a memory state of another model.

    Loads the model on the driver's CPU, so it costs a model load, and only when checkpoints exist."""
    keys = checkpoints.keys()
    if not keys:
        return
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # a failed check prints one line: no "Loading weights" bar before it
    try:
        model = load_model(config, device="cpu")
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    for key in keys:
        found = checkpoints.load(key)
        if found is None:
            continue
        try:
            model.check_state(found[0])
        except ValueError as e:
            folder = posixpath.join(checkpoints.out.root, FOLDER)
            raise ValueError(
                f"checkpoint {folder}/{key} does not fit model {model_name(config)!r}: {e}; remove "
                f"{folder} or run with the model that wrote it"
            ) from None


def actor_cpus(config: ExtractConfig) -> float:
    """The CPUs the actors hold together."""
    return config.workers * config.cpus_per_worker


def connect(address: str | None, actors: float = 0.0) -> None:
    """Join the Ray cluster at `address` (or RAY_ADDRESS); without either, start Ray in this process.

    The in-process Ray runs without the dashboard (it starts faster, with fewer processes to outlive a killed
    driver); for the dashboard, `ray start --head` and pass `--address`. It counts at least one CPU more than
    the `actors` hold: Ray Data's step that hands each actor one group at a time needs a CPU of its own, and
    with actors holding every CPU (`--workers 2` on 2 cores) the run would wait forever. On a cluster, that case
    is said on stderr."""
    if not ray.is_initialized():
        local = address is None and not os.environ.get("RAY_ADDRESS")
        extra = {"include_dashboard": False, "num_cpus": local_cpus(actors)} if local else {}
        ray.init(address=address, log_to_driver=False, **extra)
    free = ray.cluster_resources().get("CPU", 0) - actors
    if free < 1:
        print(f"warning: the actors hold {actors:g} of the cluster's {actors + free:g} CPUs; Ray Data needs one "
              "more to hand them documents, so the run waits until a node joins (or use fewer --workers or "
              "--cpus-per-worker)", file=sys.stderr)  # fmt: skip


def local_cpus(actors: float, cores: int | None = None) -> int:
    """The CPUs an in-process Ray counts: the machine's cores, and at least one more than the actors hold."""
    cores = cores or os.cpu_count() or 1
    return max(cores, math.ceil(actors) + 1)


@dataclass(frozen=True)
class Report:
    """What a run did and cost; tokens and seconds count this run's work only."""

    run_id: str
    model: str
    model_reason: str  # why the run uses this model
    memory: str  # the memory settings the run asked for (the model's own for those not given)
    documents: int  # good input documents
    skipped: int  # already finished by an earlier run
    processed: int
    failed: int
    read_errors: int  # `errors` rows of the read stage (including repaired, still processed documents)
    facts: int  # rows in the facts table
    entities: int
    tokens_read: int
    tokens_generated: int
    seconds: float
    tokens_per_second: float
    tables: dict[str, str]

    def format(self) -> str:
        lines = [
            f"model {self.model} ({self.memory}): {self.model_reason}",
            f"run {self.run_id}: {self.documents} documents ({self.processed} processed, {self.skipped} "
            f"already done, {self.failed} failed), {self.read_errors} read problems",
            f"tokens read {self.tokens_read:,}, generated {self.tokens_generated:,} in {self.seconds:.1f}s "
            f"({self.tokens_per_second:,.0f} tokens/s); {self.facts} facts, {self.entities} entities",
        ]
        lines += [f"  {name:<9} {path}" for name, path in self.tables.items()]
        return "\n".join(lines)


def make_report(out, config, run_id, n_docs, skipped, read_errors, n_entities, stats, seconds) -> Report:
    """The run report (also written to <output>/report.json); tokens/s counts tokens read and generated."""
    read, generated = stats.get("tokens_read", 0), stats.get("tokens_generated", 0)
    options = model_options(config)
    report = Report(
        run_id=run_id,
        model=model_name(config),
        model_reason=model_reason(config),
        memory=", ".join(f"{k} {v}" for k, v in options.items()) or "the model's own settings",
        documents=n_docs,
        skipped=skipped,
        processed=stats.get("documents", 0),
        failed=stats.get("failed", 0),
        read_errors=read_errors,
        facts=out.num_rows("facts"),
        entities=n_entities,
        tokens_read=read,
        tokens_generated=generated,
        seconds=round(seconds, 3),
        tokens_per_second=round((read + generated) / max(seconds, 1e-9), 1),
        tables={name: out.path(name) for name in (*RESULT_TABLES, "entities")},
    )
    out.write_json("report", asdict(report))
    return report
