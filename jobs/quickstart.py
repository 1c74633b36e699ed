"""The README's main command: make a small corpus of long documents, run the extraction job on local Ray with
the shipped story model (memgpt-small), and show where the tables are and a few rows of each.

    python -m jobs.quickstart [--output outputs/quickstart] [--documents 6] [--workers 2]

The corpus is generated (planted-knowledge stories in the project's own synthetic filler), so nothing is
downloaded. Run it again with the same output and it resumes: finished documents are not redone.
"""

import argparse
import sys
from pathlib import Path

import pandas as pd

from memgpt.training.planted import PlantedConfig, generate

# stories in the form the default model was trained on (2 people, moves with pronouns), 16x its trained length
STORY = PlantedConfig(n_chunks=128, chunk_size=16, n_entities=2, n_moves=6, badges=False, n_distractors=0)


def make_corpus(folder: Path, n_documents: int) -> Path:
    """`n_documents` long text files (~8k characters each) with known people and their moves."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n_documents):
        path = folder / f"story-{i:02d}.txt"
        if not path.exists():
            path.write_text(generate(STORY, seed=i).text)
    return folder


def show(tables: dict[str, str], rows: int = 3) -> None:
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        for name, path in tables.items():
            df = pd.read_parquet(path) if Path(path).exists() else pd.DataFrame()
            print(f"\n== {name}: {len(df)} rows in {path}")
            if len(df):
                print(df.head(rows).to_string(index=False, max_colwidth=40))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="jobs.quickstart", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--output", default="outputs/quickstart")
    p.add_argument("--documents", type=int, default=6)
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args(argv)

    from memgpt.names import STORY_MODEL
    from pipeline.config import ExtractConfig
    from pipeline.run import run

    out = Path(args.output)
    corpus = make_corpus(out / "corpus", args.documents)
    print(f"corpus: {args.documents} documents in {corpus}")
    report = run(
        ExtractConfig(
            input=str(corpus),
            output=str(out / "tables"),
            model=STORY_MODEL,  # the corpus is the synthetic stories it was trained on
            workers=args.workers,
            batch_size=3,
        )
    )
    print(report.format())
    show(report.tables)
    return 0


if __name__ == "__main__":
    sys.exit(main())
