"""The write stage: a Ray Data Datasink that commits each finished document's rows, one file per table.

Every document's rows go to `<table>/<safe doc id>.parquet` (errors: `errors/extract-<safe doc id>.parquet`),
each written to a hidden temp file and renamed, the manifest last. File names depend only on the doc id, so a
document processed twice (a retry, a resumed run) replaces its files instead of duplicating its rows.
"""

from collections import Counter
from collections.abc import Iterable

from ray.data.block import Block, BlockAccessor
from ray.data.datasource import Datasink, WriteResult

from pipeline.checkpoints import Checkpoints
from pipeline.io import safe_name
from pipeline.output import Output
from pipeline.schemas import TABLES, to_table


def commit(out: Output, result: dict) -> None:
    """Write one document's rows; the manifest row, written last, marks the document finished."""
    name = safe_name(result["doc_id"])
    out.write("facts", name, to_table(result["facts"], TABLES["facts"]))
    if result["summaries"]:
        out.write("summaries", name, to_table(result["summaries"], TABLES["summaries"]))
    if result["errors"]:
        out.write("errors", f"extract-{name}", to_table(result["errors"], TABLES["errors"]))
    else:
        out.delete("errors", f"extract-{name}")  # an earlier failed attempt's errors no longer apply
    out.write("manifest", name, to_table(result["manifest"], TABLES["manifest"]))


class ResultSink(Datasink[dict]):
    """Commits actor results under `output`; `stats` totals what this run wrote."""

    def __init__(self, output: str):
        self.output = output
        self.stats: Counter = Counter()

    def write(self, blocks: Iterable[Block], ctx) -> dict:
        out, stats, done = Output(self.output), Counter(), set()
        for block in blocks:
            for result in BlockAccessor.for_block(block).to_arrow().to_pylist():
                commit(out, result)
                done.add(result.get("checkpoint"))
                stats["documents"] += 1
                stats["failed"] += result["manifest"][0]["status"] != "ok"
                stats["facts"] += len(result["facts"])
                stats["tokens_read"] += sum(s["n_tokens"] for s in result["summaries"])
                stats["tokens_generated"] += sum(s["tokens_generated"] for s in result["summaries"])
        checkpoints = Checkpoints(self.output)
        for key in done - {None}:  # the group's documents are committed: its read will not be resumed
            checkpoints.delete(key)
        return dict(stats)

    def on_write_complete(self, write_result: WriteResult[dict]) -> None:
        for stats in write_result.write_returns:
            self.stats.update(stats)
