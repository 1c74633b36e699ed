"""Knowledge tables from real text: facts planted in book excerpts, extracted by `jobs.extract`'s pipeline.

python -m benchmarks.knowledge            # 4 excerpts of 10k characters, 3 facts each: ~20 min on 2 CPU cores
python -m benchmarks.knowledge --full     # 8 excerpts of 40k characters (about 10k tokens), 4 facts each
python -m benchmarks.knowledge --long     # 2 books' 220k characters (over 50k tokens), 6 facts each, each
                                          # follow-up 40k characters (10k tokens) after its fact: kv against
                                          # recent only, about 50 minutes on 2 CPU cores

Every variant reads the same documents with SmolLM2-135M-Instruct through the real pipeline (local Ray,
Parquet tables) and is scored from its tables:
  parsed       fact lines that parse as subject | relation | object, of all non-blank lines written
  grounded     facts whose subject and object are found in the chunk, or the subject among the names the
               document has said before (a pronoun resolved)
  recall       planted facts found: a fact about the person naming the planted place
  follow-ups   pronoun follow-ups ("Years later, he moved the ledger to ...") found under the person's name
  final state  planted final places in the person's final state (`entities.final_states`: its last fact and
               its latest changes)
  stale        followed-up facts whose first place is still in that final state (it was superseded)
  final        planted final places the summary mentions
  evidenced    summary sentences whose evidence spans hold every content word they say (pipeline/summary.py)
  names ok     proper names of the summaries that occur in their document (100 % - hallucinated)
"""

import json
import re
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd

from .common import command, machine, parser, print_table
from .planted_text import PlantedDocument, place_words, planted_corpus

VARIANTS = {  # name -> ExtractConfig settings over the default model's (summary from the states, no notes)
    "kv": {},
    "kv, facts prompt read apart": {"facts_pass": "separate"},  # the chunk read twice, as before
    "kv, the model's antecedents": {"facts_antecedents": "model"},
    "kv, summary from memory": {"summary_from": "memory"},
    "kv + notes": {"notes": {"every": 2}},  # the summary is the last notes
    "retrieval": {"memory": "retrieval"},
    "recent only": {"kv_budget": 160},  # sinks + the last 128 tokens: almost no memory
}
OUT = Path(__file__).parents[1] / "docs" / "benchmark"


def run_variant(name: str, folder: Path, out: Path, settings: dict, workers: int = 1, batch_size: int = 4):
    from pipeline.config import ExtractConfig
    from pipeline.prompts import NotesConfig
    from pipeline.run import run

    settings = dict(settings)
    notes = NotesConfig(**settings.pop("notes", {}))
    config = ExtractConfig(input=str(folder), output=str(out), batch_size=batch_size, workers=workers,
                           checkpoint_every=0, **settings)  # fmt: skip
    report = run(replace(config, notes=notes))
    tables = {t: pd.read_parquet(out / t) for t in ("summaries", "facts", "entities")}
    return report, tables


def score(
    docs: list[PlantedDocument],
    summaries: pd.DataFrame,
    facts: pd.DataFrame,
    entities: pd.DataFrame | None = None,
) -> dict:
    from pipeline.entities import normalize
    from pipeline.grammar import names_in
    from pipeline.summary import supported

    states = {} if entities is None else dict(zip(entities["entity"], entities["final_states"], strict=True))
    final_state = stale = 0

    texts = {f"{d.doc_id}.txt": d.text for d in docs}
    lines = summaries["n_facts"].sum() + summaries["n_unparsed"].sum()
    grounded = [is_grounded(row, texts[row.doc_id]) for row in facts.itertuples()]
    found = follow = n_follow = final = 0
    for d in docs:
        rows = facts[facts["doc_id"] == f"{d.doc_id}.txt"]
        summary = " ".join(summaries.loc[summaries["doc_id"] == f"{d.doc_id}.txt", "summary"])
        for f in d.facts:
            about = rows[rows["subject"].str.contains(f.name, regex=False)]
            said = " ".join(about["relation"] + " " + about["object"]).casefold()
            found += bool(place_words(f.place) & set(re.findall(r"\w+", said)))
            if f.follow_up_start is not None:
                n_follow += 1
                follow += bool(place_words(f.final_place) & set(re.findall(r"\w+", said)))
            final += bool(place_words(f.final_place) & set(re.findall(r"\w+", summary.casefold())))
            last = [x for x in states.get(normalize(f.person), []) if x["doc_id"] == f"{d.doc_id}.txt"]
            said_last = " ".join(x["relation"] + " " + x["object"] for x in last).casefold()
            final_state += bool(place_words(f.final_place) & set(re.findall(r"\w+", said_last)))
            if f.follow_up_start is not None:
                first = place_words(f.place) - place_words(f.final_place)
                stale += bool(first & set(re.findall(r"\w+", said_last)))
    n_facts = sum(len(d.facts) for d in docs)
    evidenced = [ok for row in summaries.itertuples() for ok in
                 supported(row.summary, row.summary_evidence, texts[row.doc_id])]  # fmt: skip
    names = [(n, d) for d in docs for s in summaries.loc[summaries["doc_id"] == f"{d.doc_id}.txt", "summary"]
             for n in names_in(s)]  # fmt: skip
    present = [n in d.text for n, d in names]
    return {
        "facts": len(facts),
        "parsed": summaries["n_facts"].sum() / max(lines, 1),
        "grounded": sum(grounded) / max(len(grounded), 1),
        "recall": found / n_facts,
        "follow-ups": follow / max(n_follow, 1),
        "final": final / n_facts,
        "final state": final_state / n_facts,
        "stale": stale / max(n_follow, 1),
        "evidenced": sum(evidenced) / max(len(evidenced), 1),
        "names ok": sum(present) / max(len(present), 1),
        "summary names": len(present),
    }


def is_grounded(row, text: str) -> bool:
    """Subject and object found in the text: the subject in the evidence span or said before it."""
    chunk = text[row.char_start : row.char_end]  # the evidence span: both names, or the whole chunk

    def found(name: str, where: str) -> bool:  # noqa: E306
        pattern = r"\s+".join(map(re.escape, name.split()))
        return re.search(rf"(?<!\w){pattern}(?!\w)", where, re.IGNORECASE) is not None

    subject_ok = found(row.subject, chunk) or found(row.subject, text[: row.char_end])
    return subject_ok and found(row.object, text)


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__)
    p.add_argument("--full", action="store_true")
    p.add_argument("--long", action="store_true", help="book-length documents (see above)")
    p.add_argument(
        "--workers", type=int, default=1, help="actors, each holding one CPU (one group each with more)"
    )
    p.add_argument("--docs", type=int, default=None)
    p.add_argument("--chars", type=int, default=None)
    p.add_argument("--facts", type=int, default=None, help="planted facts per document")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--work", default="/tmp/memgpt-knowledge", help="folder for the corpus and the tables")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save", default=str(OUT / "knowledge.json"), help="JSON of the results ('' to skip)")
    args = p.parse_args(argv)
    n_docs = args.docs or (2 if args.long else 8 if args.full else 4)
    chars = args.chars or (220_000 if args.long else 40_000 if args.full else 10_000)
    n_facts = args.facts or (6 if args.long else 4 if args.full else 3)
    gap = 40_000 if args.long else 2500
    if args.long and args.variants == list(VARIANTS):
        args.variants = ["kv", "recent only"]

    import shutil

    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    corpus = work / "corpus"
    corpus.mkdir(parents=True)
    docs = planted_corpus(n_docs, chars, n_facts, seed=args.seed, gap_chars=gap)
    for d in docs:
        (corpus / f"{d.doc_id}.txt").write_text(d.text, encoding="utf-8")
    rows, examples = [], {}
    for name in args.variants:
        start = time.perf_counter()
        report, tables = run_variant(
            name,
            corpus,
            work / name.replace(" ", "-"),
            VARIANTS[name],
            args.workers,
            1 if args.workers > 1 else 4,
        )
        result = score(docs, tables["summaries"], tables["facts"], tables["entities"])
        result |= {"variant": name, "tokens/s": report.tokens_per_second,
                   "seconds": round(time.perf_counter() - start, 1)}  # fmt: skip
        rows.append(result)
        examples[name] = {
            "summary": tables["summaries"]["summary"].iloc[0],
            "facts": tables["facts"].head(12)[["subject", "relation", "object"]].values.tolist(),
        }
        print(json.dumps(result), flush=True)
    columns = [
        "variant",
        "facts",
        "parsed",
        "grounded",
        "recall",
        "follow-ups",
        "final state",
        "stale",
        "final",
        "evidenced",
        "names ok",
        "tokens/s",
    ]
    print_table([{k: r[k] for k in columns} for r in rows], f"knowledge: {n_docs} documents x {chars} chars")
    if args.save:
        setup = {
            "docs": n_docs,
            "chars": chars,
            "facts_per_doc": n_facts,
            "gap_chars": gap,
            "seed": args.seed,
        }
        saved = {"command": command(), "machine": machine(), "setup": setup, "results": rows,
                  "examples": examples}  # fmt: skip
        Path(args.save).write_text(json.dumps(saved, indent=1, default=str))


if __name__ == "__main__":
    main()
