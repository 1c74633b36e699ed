"""Command-line flags made from config dataclasses: each option's one description is its field's `help`."""

import argparse
import json
import types
import typing
from dataclasses import MISSING, Field, fields, is_dataclass
from typing import Any

import yaml


def add_flags(
    parser: argparse.ArgumentParser, cls: type, section: str | None = None, prefix: str = ""
) -> None:
    """A flag `--<prefix><name>` per described field of `cls`; its value lands in dest `<section>.<name>`."""
    for f in fields(cls):
        if "help" not in f.metadata:
            continue
        kind, many = value_type(f)
        flag = "--" + prefix + f.name.replace("_", "-")
        dest = f"{section}.{f.name}" if section else f.name
        help_ = f.metadata["help"] + default_note(f)
        if kind is bool:
            parser.add_argument(flag, dest=dest, action=argparse.BooleanOptionalAction, help=help_)
        else:
            parser.add_argument(flag, dest=dest, type=kind, nargs="+" if many else None, help=help_,
                                choices=f.metadata.get("choices"), metavar=f.name.upper())  # fmt: skip


def value_type(f: Field) -> tuple[type, bool]:
    """The type a flag parses (Optional removed) and whether it takes several values (a tuple)."""
    t = f.type
    if isinstance(t, types.UnionType) or typing.get_origin(t) is typing.Union:
        t = next(a for a in typing.get_args(t) if a is not type(None))
    if typing.get_origin(t) is tuple:
        return typing.get_args(t)[0], True
    return t, False


def default_note(f: Field) -> str:
    if f.default is MISSING or f.default is None:
        return ""
    return f" (default: {f.default})" if f.default != "" else ""


def split_flags(args: argparse.Namespace, skip: tuple[str, ...] = ()) -> tuple[dict, dict[str, dict]]:
    """The flags given (not None): top-level settings, and those of each section (`section.name` dests)."""
    top: dict[str, Any] = {}
    sections: dict[str, dict] = {}
    for dest, value in vars(args).items():
        if value is None or dest in skip:
            continue
        section, _, name = dest.rpartition(".")
        (sections.setdefault(section, {}) if section else top)[name] = value
    return top, sections


def described_yaml(config: Any, indent: str = "") -> str:
    """`config` as YAML, every described setting followed by its description as a comment."""
    lines = []
    for f in fields(config):
        value = getattr(config, f.name)
        if is_dataclass(value):
            lines += [f"{indent}{f.name}:", described_yaml(value, indent + "  ").rstrip("\n")]
            continue
        if isinstance(value, tuple):
            value = list(value)
        if isinstance(value, str) and "\n" in value:  # a JSON string is YAML too, and stays on one line
            text = f"{f.name}: {json.dumps(value)}"
        else:
            text = yaml.safe_dump({f.name: value}, default_flow_style=True, width=10_000).strip()[1:-1]
        note = f.metadata.get("help")
        lines.append(f"{indent}{text}" + (f"  # {note}" if note else ""))
    return "\n".join(lines) + "\n"
