"""Summaries, facts and entities for a corpus of long documents.

    python -m jobs.extract --input corpus/ --output out/ [--model PATH_OR_HUB_ID] [--memory kv|retrieval|archival|slots]
        [--workers N] [--gpus-per-worker G] [--batch-size B] [--config jobs/configs/extract.yaml] [--address ADDR]

Runs on a local in-process Ray by default, on a cluster with --address or RAY_ADDRESS, and unchanged as
`ray job submit --working-dir . -- python -m jobs.extract ...`. Settings come from the YAML config, then flags.
Prints a line per finished document and the run report; Ray's own messages only from warnings up unless
--verbose.
"""

import argparse
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any

import yaml

from jobs.console import DocumentProgress, quiet_ray
from jobs.flags import add_flags, described_yaml, split_flags
from pipeline.config import ExtractConfig
from pipeline.io import ReadConfig
from pipeline.prompts import NotesConfig, PromptConfig

DEFAULT_CONFIG = Path(__file__).parent / "configs" / "extract.yaml"
SECTIONS = {"read": ReadConfig, "prompts": PromptConfig, "notes": NotesConfig}
# flags about the command itself, not settings of the run
CONSOLE_FLAGS = ("config", "traceback", "print_config", "verbose")


class OneLineParser(argparse.ArgumentParser):
    """Argument errors as one line (not usage + error) and exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = OneLineParser(
        prog="jobs.extract", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--config", default=str(DEFAULT_CONFIG), help="YAML file of settings (flags override it)")
    add_flags(p, ExtractConfig)
    add_flags(p, ReadConfig, "read")
    add_flags(p, NotesConfig, "notes", prefix="notes-")
    p.add_argument("--print-config", action="store_true", help="print the settings this run would use, each "
                   "with its description, and exit")  # fmt: skip
    p.add_argument("--traceback", action="store_true", help="show the full traceback of a failure")
    p.add_argument(
        "--verbose", action="store_true", help="Ray's own logging and progress bars as Ray prints them"
    )
    return p.parse_args(argv)


def load_config(args: argparse.Namespace) -> ExtractConfig:
    """The YAML file, overridden by the flags that were given, as one frozen ExtractConfig."""
    path = Path(args.config)
    if not path.is_file():
        raise FileNotFoundError(f"config file {str(path)!r} not found")
    data: dict[str, Any] = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"config file {str(path)!r} must hold a mapping of settings")
    flags, given = split_flags(args, skip=CONSOLE_FLAGS)
    data.update(flags)
    for key in ("input", "output"):
        if args.print_config:
            data.setdefault(key, f"(--{key}: required)")
        elif not data.get(key):
            raise ValueError(f"--{key} is required (or set {key!r} in {path})")
    sections = {name: dict(data.pop(name, None) or {}) | given.get(name, {}) for name in SECTIONS}
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
        if args.print_config:
            print(described_yaml(config), end="")
            return 0
        quiet_ray(args.verbose)  # before ray is imported
        from pipeline.run import run  # imported late: ray and torch take seconds to import

        with DocumentProgress(config.output):
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
