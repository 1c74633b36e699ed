"""The entity roll-up's driver memory as the facts grow: the whole table as Python rows vs slice by slice.

    python -m benchmarks.entity_rollup                          # 50,000 and 200,000 facts, 100 a document
    python -m benchmarks.entity_rollup --facts 20000 --per-doc 20

Writes a generated `facts` table (one file per document, as a run does: people named in several forms, things
as noun phrases, each document's facts in reading order) and rolls it up in a fresh process each way:
`whole`, the whole table read and handed to `entity_rows` as Python rows (how the run did it before
`pipeline/rollup.py`), and `slices`, `write_entities` as the run does it now. Each prints its peak RSS above
the process' RSS before the roll-up, and the seconds; both write the same `entities` table (checked).
"""

import argparse
import hashlib
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pipeline.output import Output
from pipeline.schemas import FACTS, to_table

from .common import command, machine, peak_rss_mib, print_table

REPO = Path(__file__).parents[1]
FIRST = "Anna Boris Clara Dmitri Elena Felix Greta Hugo Irene Jonas Kira Lev Mira Nils Olga Pavel Rosa Sven".split()
LAST = (
    "Halvorsen Okonkwo Bennet Lucas Forster Varga Novak Lindqvist Moreau Castell Brandt Petrov Sato".split()
)
TITLES = ["Mr.", "Mrs.", "Miss", "Inspector", "Captain", "Dr."]
ADJECTIVES = "old silver small red quiet long narrow dark broken green heavy cold wooden bright".split()
NOUNS = (
    "ledger compass house garden letter ship lighthouse vault chapel carriage ring key map violin lantern "
    "bridge harbour mill tower door window road river"
).split()
VERBS = [
    "keeps the {n} in",
    "moved the {n} to",
    "walked to",
    "said",
    "was happy with",
    "wrote to",
    "saw",
    "sold",
]


def person(rng: random.Random) -> list[str]:
    """The forms one person is named by."""
    first, last, title = rng.choice(FIRST), rng.choice(LAST), rng.choice(TITLES)
    return [f"{title} {last}", f"{first} {last}", first, last, f"{title} {first} {last}"]


def make_facts(out: Output, n_facts: int, per_doc: int, seed: int = 0) -> None:
    """Write `n_facts` facts in documents of `per_doc` facts, each with its own cast of ten people."""
    rng = random.Random(seed)
    for d in range(n_facts // per_doc):
        cast = [person(rng) for _ in range(10)]
        rows = []
        for k in range(per_doc):
            thing = f"the {rng.choice(ADJECTIVES)} {rng.choice(NOUNS)}"
            obj = rng.choice([thing, f"{thing} of {rng.choice(LAST)}", rng.choice(rng.choice(cast))])
            start = k * 120
            rows.append(
                {
                    "doc_id": f"doc-{d:06d}",
                    "subject": rng.choice(rng.choice(cast)),
                    "relation": rng.choice(VERBS).format(n=rng.choice(NOUNS)),
                    "object": obj,
                    "chunk_index": k // 10,
                    "char_start": start,
                    "char_end": start + 100,
                    "score": 1.0,
                    "model": "m",
                    "run_id": "bench",
                }  # fmt: skip
            )
        out.write("facts", f"doc-{d:06d}", to_table(rows, FACTS))


def roll_up(output: str, way: str) -> dict:
    """Roll the table up one way in this process: peak RSS growth (MiB) and seconds."""
    from pipeline.entities import entity_rows
    from pipeline.rollup import NAME_COLUMNS, READING_ORDER, write_entities
    from pipeline.schemas import ENTITIES, FINAL_STATE

    out = Output(output)
    before, start = _rss_mib(), time.perf_counter()
    if way == "whole":
        facts = out.read("facts", ["doc_id", *NAME_COLUMNS, *FINAL_STATE[1:]]).sort_by(READING_ORDER)
        rows = entity_rows(facts.to_pylist(), "bench")
        out.write("entities", "entities", to_table(rows, ENTITIES))
    else:
        write_entities(out, "bench")
    seconds, growth = time.perf_counter() - start, peak_rss_mib() - before
    table = out.read("entities")  # read back for the check after the peak is taken: its rows are large
    return {"growth_mib": growth, "seconds": seconds, "entities": table.num_rows,
            "rows": hashlib.sha256(str(table.to_pylist()).encode()).hexdigest()}  # fmt: skip


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


def in_subprocess(output: str, way: str) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.entity_rollup", "--child", output, way]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=False)
    if proc.returncode:
        raise RuntimeError(proc.stderr[-2000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--facts", type=int, nargs="+", default=[50_000, 200_000])
    p.add_argument("--per-doc", type=int, default=100)
    p.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(roll_up(*args.child)))
        return
    rows = []
    for n in args.facts:
        with tempfile.TemporaryDirectory() as tmp:
            out = Output(tmp)
            make_facts(out, n, args.per_doc)
            whole, slices = in_subprocess(tmp, "whole"), in_subprocess(tmp, "slices")
            if whole["rows"] != slices["rows"]:
                raise SystemExit(f"{n} facts: the two roll-ups wrote different entities tables")
            for way, r in (("whole table as rows", whole), ("slice by slice", slices)):
                rows.append({"facts": n, "documents": n // args.per_doc, "roll-up": way, "entities": r["entities"],
                             "peak RSS growth MiB": r["growth_mib"], "seconds": r["seconds"]})  # fmt: skip
            rows.append({"facts": n, "documents": n // args.per_doc, "roll-up": "ratio slices/whole",
                         "entities": "", "peak RSS growth MiB": slices["growth_mib"] / whole["growth_mib"],
                         "seconds": slices["seconds"] / whole["seconds"]})  # fmt: skip
    print_table(rows, f"entity roll-up, {machine()}\n{command()}")


if __name__ == "__main__":
    main()
