"""Summaries, facts and entities for a corpus of long documents.

    python -m jobs.extract --input corpus/ --output out/ [--model PATH_OR_HUB_ID] [--memory slots|kv]
        [--workers N] [--gpus-per-worker G] [--batch-size B] [--config jobs/configs/extract.yaml] [--address ADDR]

Runs on a local in-process Ray by default, on a cluster with --address or RAY_ADDRESS, and unchanged as
`ray job submit --working-dir . -- python -m jobs.extract ...`. Settings come from the YAML config, then flags.
"""

import argparse
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any

import yaml

from pipeline.config import ExtractConfig
from pipeline.io import ReadConfig
from pipeline.prompts import NotesConfig, PromptConfig

DEFAULT_CONFIG = Path(__file__).parent / "configs" / "extract.yaml"
SECTIONS = {"read": ReadConfig, "prompts": PromptConfig, "notes": NotesConfig}


class OneLineParser(argparse.ArgumentParser):
    """Argument errors as one line (not usage + error) and exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = OneLineParser(
        prog="jobs.extract", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--config", default=str(DEFAULT_CONFIG), help="YAML file of settings (flags override it)")
    p.add_argument(
        "--input", help="folder of .txt/.md, JSONL or Parquet file(s); local path or URI (s3://...)"
    )
    p.add_argument("--output", help="folder for the tables; local path or URI")
    p.add_argument(
        "--model",
        help="MemGPT folder, HF model folder, hub id, 'memgpt-small' (the shipped story model) or 'random' "
        "(default: SmolLM2-135M-Instruct, made ready offline on first use)",
    )
    p.add_argument("--memory", help="a memory registered in memgpt: kv, retrieval, archival, slots, ...")
    p.add_argument("--chunk-size", type=int)
    p.add_argument("--kv-budget", type=int, help="kv entries kept per layer (kv and retrieval memory)")
    p.add_argument("--workers", type=int, help="actors, each holding one model")
    p.add_argument("--gpus-per-worker", type=float)
    p.add_argument("--cpus-per-worker", type=float)
    p.add_argument("--batch-size", type=int, help="documents read in lockstep by one actor")
    p.add_argument("--checkpoint-every", type=int, help="save a group's memory every K chunks (0: off)")
    p.add_argument("--max-new-tokens-facts", type=int)
    p.add_argument("--max-new-tokens-summary", type=int)
    p.add_argument("--no-facts", dest="facts", action="store_const", const=False, help="summaries only")
    p.add_argument("--facts-grammar", choices=["auto", "text", "lines", "none"], help="constrain fact lines")
    p.add_argument("--notes-every", type=int, help="notes.every: update the running notes every K chunks")
    p.add_argument(
        "--save-states", action="store_const", const=True, help="keep each document's memory (jobs.ask)"
    )
    p.add_argument("--seed", type=int)
    p.add_argument("--run-id")
    p.add_argument("--address", help="Ray address (default: RAY_ADDRESS, else a local Ray)")
    p.add_argument(
        "--trust-remote-code", action="store_const", const=True, help="allow model code from the hub"
    )
    p.add_argument(
        "--format", choices=["auto", "text", "jsonl", "parquet"], help="input format (read.format)"
    )
    p.add_argument("--id-column", help="read.id_column")
    p.add_argument("--text-column", help="read.text_column")
    p.add_argument("--max-chars", type=int, help="read.max_chars: longer documents become errors")
    p.add_argument("--traceback", action="store_true", help="show the full traceback of a failure")
    return p.parse_args(argv)


def load_config(args: argparse.Namespace) -> ExtractConfig:
    """The YAML file, overridden by the flags that were given, as one frozen ExtractConfig."""
    path = Path(args.config)
    if not path.is_file():
        raise FileNotFoundError(f"config file {str(path)!r} not found")
    data: dict[str, Any] = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"config file {str(path)!r} must hold a mapping of settings")
    flags = {k: v for k, v in vars(args).items() if v is not None and k not in ("config", "traceback")}
    read = dict(data.pop("read", None) or {})
    if "notes_every" in flags:
        data["notes"] = dict(data.get("notes") or {}) | {"every": flags.pop("notes_every")}
    for flag in ("format", "id_column", "text_column", "max_chars"):
        if flag in flags:
            read[flag] = flags.pop(flag)
    data.update(flags)
    for key in ("input", "output"):
        if not data.get(key):
            raise ValueError(f"--{key} is required (or set {key!r} in {path})")
    sections = {
        "read": read,
        "prompts": data.pop("prompts", None) or {},
        "notes": data.pop("notes", None) or {},
    }
    _check_keys(data, ExtractConfig, path)
    for name, cls in SECTIONS.items():
        _check_keys(sections[name], cls, path, f"{name}.")
        data[name] = cls(**sections[name])
    return ExtractConfig(**data)


def _check_keys(data: dict, cls, path: Path, prefix: str = "") -> None:
    known = {f.name for f in fields(cls)} - set(SECTIONS)
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(
            f"unknown option(s) {[prefix + k for k in unknown]} in {path}; known: {sorted(known)}"
        )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        config = load_config(args)
        from pipeline.run import run  # imported late: ray and torch take seconds to import

        report = run(config)
    except Exception as e:  # one line for the user; --traceback for the details
        if args.traceback:
            raise
        print(f"jobs.extract: error: {_one_line(e)}", file=sys.stderr)
        return 1
    print(report.format())
    return 0


def _one_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"


if __name__ == "__main__":
    sys.exit(main())
