"""The jobs.extract command line: configuration, clear one-line failures, and a run on the shared Ray."""

import argparse
import dataclasses
from pathlib import Path

import pandas as pd
import pytest

from jobs.extract import load_config, main, parse_args
from pipeline.config import ExtractConfig

CONFIGS = sorted((Path(__file__).parents[2] / "jobs" / "configs").glob("extract*.yaml"))


def fail(capsys, argv) -> tuple[int, str]:
    """Run main(argv) expecting failure; return (exit status, the message)."""
    try:
        code = main(argv)
    except SystemExit as e:  # argparse exits itself
        code = e.code
    err = capsys.readouterr().err.strip()
    assert code != 0 and err and "\n" not in err, f"expected one line, got {err!r}"
    return code, err


def test_unknown_option(capsys):
    code, err = fail(capsys, ["--input", "x", "--output", "y", "--colour", "blue"])
    assert code == 2 and "unrecognized arguments: --colour blue" in err


def test_bad_value(capsys):
    assert "invalid choice: 'lstm'" in fail(capsys, ["--memory", "lstm"])[1]
    assert "workers must be >= 1" in fail(capsys, ["--input", "x", "--output", "y", "--workers", "0"])[1]


def test_missing_model_path_leaves_no_output(capsys, small_corpus, tmp_path):
    out = tmp_path / "out"
    _, err = fail(capsys, ["--input", str(small_corpus), "--output", str(out), "--model", str(tmp_path / "nope")])
    assert "nope" in err and "not a directory" in err
    assert not out.exists()


def test_model_folder_without_config(capsys, small_corpus, tmp_path):
    (tmp_path / "empty_model").mkdir()
    _, err = fail(capsys, ["--input", str(small_corpus), "--output", str(tmp_path / "o"),
                           "--model", str(tmp_path / "empty_model")])
    assert "config.json" in err and not (tmp_path / "o").exists()


def test_missing_input_leaves_no_output(capsys, tmp_path):
    _, err = fail(capsys, ["--input", str(tmp_path / "nothing"), "--output", str(tmp_path / "out")])
    assert "does not exist" in err and not (tmp_path / "out").exists()


def test_unwritable_output(capsys, small_corpus, tmp_path):
    (tmp_path / "file").write_text("a file, not a folder")
    _, err = fail(capsys, ["--input", str(small_corpus), "--output", str(tmp_path / "file" / "out")])
    assert "not writable" in err


def test_unknown_yaml_option(capsys, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("workers: 2\nbatch_sise: 3\nread:\n  max_char: 5\n")
    _, err = fail(capsys, ["--config", str(cfg), "--input", "x", "--output", "y"])
    assert "batch_sise" in err and str(cfg) in err


def test_missing_required_setting(capsys):
    assert "--output is required" in fail(capsys, ["--input", "x"])[1]


def test_yaml_then_flags(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("input: corpus\noutput: out\nworkers: 3\nbatch_size: 5\nread:\n  text_column: body\n"
                   "prompts:\n  style: task\n")
    config = load_config(parse_args(["--config", str(cfg), "--workers", "2", "--max-chars", "99", "--no-facts"]))
    assert isinstance(config, ExtractConfig)
    assert (config.input, config.workers, config.batch_size, config.facts) == ("corpus", 2, 5, False)
    assert (config.read.text_column, config.read.max_chars, config.prompts.style) == ("body", 99, "task")
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.workers = 4  # type: ignore[misc]


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_configs_load(path):
    config = load_config(parse_args(["--config", str(path), "--input", "in", "--output", "out"]))
    assert config.input == "in" and config.batch_size >= 1


def test_help_lists_the_main_flags(capsys):
    with pytest.raises(SystemExit):
        parse_args(["--help"])
    text = capsys.readouterr().out
    for flag in ("--input", "--output", "--model", "--memory", "--workers", "--gpus-per-worker", "--batch-size",
                 "--config", "--address"):
        assert flag in text
    assert isinstance(parse_args([]), argparse.Namespace)


@pytest.mark.usefixtures("ray_session")
def test_runs_end_to_end(capsys, small_corpus, tiny_model, tmp_path):
    out = tmp_path / "out"
    code = main(["--input", str(small_corpus), "--output", str(out), "--model", str(tiny_model), "--workers", "2",
                 "--batch-size", "2", "--max-new-tokens-facts", "4", "--max-new-tokens-summary", "4"])
    printed = capsys.readouterr().out
    assert code == 0 and "5 documents (5 processed" in printed and str(out / "summaries") in printed
    assert sorted(pd.read_parquet(out / "summaries")["doc_id"]) == [f"play{i}.txt" for i in range(5)]
    assert pd.read_parquet(out / "errors")["error_type"].tolist() == ["EmptyDocument"]
