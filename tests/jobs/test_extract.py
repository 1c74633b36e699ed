"""The jobs.extract command line: configuration, clear one-line failures, and a run on the shared Ray."""

import argparse
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from jobs.extract import load_config, main, parse_args
from pipeline.config import ExtractConfig
from pipeline.run import check_model

REPO = Path(__file__).parents[2]
CONFIGS = sorted((REPO / "jobs" / "configs").glob("extract*.yaml"))


def fail(capsys, argv) -> tuple[int, str]:
    """Run main(argv) expecting failure; return (exit status, the message)."""
    try:
        code = main(argv)
    except SystemExit as e:  # argparse exits itself
        code = e.code
    err = capsys.readouterr().err.strip()
    assert code != 0 and err and len(err.splitlines()) == 1, f"expected one line, got {err!r}"
    assert err.startswith("jobs.extract: error: ") and "Traceback" not in err
    return code, err


def assert_no_tables(out: Path) -> None:
    """No partial output: the output folder is absent or holds no table file."""
    assert not (list(out.rglob("*.parquet")) if out.exists() else []), f"tables written under {out}"


def evil_model(folder: Path, marker: Path) -> Path:
    """A model folder whose config.json maps to code of its own, under a model_type transformers does not
    know; importing that code writes `marker`."""
    folder.mkdir(parents=True)
    auto_map = {
        "AutoConfig": "configuration_evil.EvilConfig",
        "AutoModelForCausalLM": "modeling_evil.EvilModel",
    }
    config = {"model_type": "evil-memgpt-test", "architectures": ["EvilModel"], "auto_map": auto_map}
    (folder / "config.json").write_text(json.dumps(config))
    for module in ("configuration_evil", "modeling_evil"):
        (folder / f"{module}.py").write_text(
            f"from pathlib import Path\n\nPath({str(marker)!r}).write_text('ran')\n"
        )
    return folder


def test_unknown_option(capsys, small_corpus, tmp_path):
    out = tmp_path / "out"
    code, err = fail(capsys, ["--input", str(small_corpus), "--output", str(out), "--colour", "blue"])
    assert code == 2 and "unrecognized arguments: --colour blue" in err
    assert not out.exists()


def test_bad_value(capsys, small_corpus, tmp_path):
    out = tmp_path / "out"
    args = ["--input", str(small_corpus), "--output", str(out)]
    assert "memory must be one of" in fail(capsys, [*args, "--memory", "lstm"])[1]
    assert (
        "workers must be >= 1"
        in fail(capsys, ["--input", str(small_corpus), "--output", str(out), "--workers", "0"])[1]
    )
    assert not out.exists()


def test_missing_model_path_leaves_no_output(capsys, small_corpus, tmp_path):
    out = tmp_path / "out"
    model = tmp_path / "nope"
    _, err = fail(capsys, ["--input", str(small_corpus), "--output", str(out), "--model", str(model)])
    assert f"model path {str(model)!r} is not a directory" in err
    assert not out.exists()


def test_traceback_only_when_asked(capsys, small_corpus, tmp_path):
    out = tmp_path / "out"
    argv = ["--input", str(small_corpus), "--output", str(out), "--model", str(tmp_path / "nope")]
    with pytest.raises(FileNotFoundError, match="not a directory"):
        main([*argv, "--traceback"])
    assert not out.exists()


@pytest.mark.slow
def test_remote_code_needs_the_flag(tmp_path):
    """A model that maps to code of its own is refused without --trust-remote-code: the code is never
    imported (nor copied to the modules cache), the job exits 1 with one line naming the model and the flag,
    and no output exists. A real subprocess of `python -m jobs.extract` (about 4 s)."""
    marker, modules = tmp_path / "EXECUTED", tmp_path / "hf_modules"
    model = evil_model(tmp_path / "evil", marker)
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.txt").write_text("Elizabeth walked to the house. She met Mr. Darcy there.")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "jobs.extract", "--input", str(tmp_path / "in"), "--output", str(out)]
    env = os.environ | {"HF_MODULES_CACHE": str(modules), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [*cmd, "--model", str(model)], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    err = proc.stderr.strip()
    assert proc.returncode == 1 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith(f"jobs.extract: error: PermissionError: model {str(model)!r} runs code of its own")
    assert "configuration_evil.EvilConfig" in err and "pass --trust-remote-code" in err
    assert not marker.exists()
    assert not (list(modules.rglob("*evil*")) if modules.exists() else [])
    assert not out.exists() and proc.stdout == ""


def test_remote_code_anywhere_in_the_model_is_found(tmp_path):
    """Custom code is found in a tokenizer_config.json and in a MemGPT's local backbone too; with the flag the
    check passes, and it only reads JSON (the code is not imported)."""
    marker = tmp_path / "EXECUTED"
    tokenizer = tmp_path / "tok"
    tokenizer.mkdir()
    (tokenizer / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (tokenizer / "tokenizer_config.json").write_text(
        json.dumps({"auto_map": {"AutoTokenizer": ["tokenization_evil.EvilTokenizer", None]}})
    )
    memgpt = tmp_path / "memgpt"
    evil_model(memgpt / "backbone", marker)
    (memgpt / "config.json").write_text(json.dumps({"model_type": "memgpt", "backbone": "./backbone"}))
    for model, code in ((tokenizer, "tokenization_evil.EvilTokenizer"), (memgpt, "modeling_evil.EvilModel")):
        config = ExtractConfig(input="-", output=str(tmp_path / "out"), model=str(model))
        with pytest.raises(
            PermissionError, match=rf"model '{model}' runs code of its own .*{code}.*--trust-remote"
        ):
            check_model(config)
        check_model(dataclasses.replace(config, trust_remote_code=True))
    assert not marker.exists()
    assert load_config(parse_args(["--input", "i", "--output", "o", "--trust-remote-code"])).trust_remote_code
    assert not load_config(parse_args(["--input", "i", "--output", "o"])).trust_remote_code


def test_unknown_model_type(capsys, small_corpus, tmp_path):
    model = tmp_path / "odd"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "no-such-architecture", "hidden_size": 8}))
    out = tmp_path / "out"
    _, err = fail(capsys, ["--input", str(small_corpus), "--output", str(out), "--model", str(model)])
    assert f"model {str(model)!r} has model_type 'no-such-architecture', unknown to transformers" in err
    assert not out.exists()


def test_model_folder_without_config(capsys, small_corpus, tmp_path):
    model, out = tmp_path / "empty_model", tmp_path / "o"
    model.mkdir()
    _, err = fail(capsys, ["--input", str(small_corpus), "--output", str(out), "--model", str(model)])
    assert f"model {str(model)!r} has no config.json" in err and not out.exists()


def test_missing_gguf_model(capsys, small_corpus, tmp_path):
    model, out = tmp_path / "model.gguf", tmp_path / "o"
    _, err = fail(capsys, ["--input", str(small_corpus), "--output", str(out), "--model", str(model)])
    assert f"GGUF file {str(model)!r} does not exist" in err and not out.exists()


def test_missing_input_leaves_no_output(capsys, tmp_path):
    _, err = fail(capsys, ["--input", str(tmp_path / "nothing"), "--output", str(tmp_path / "out")])
    assert "does not exist" in err and not (tmp_path / "out").exists()


def test_unwritable_output(capsys, small_corpus, tmp_path):
    """The output's parent is a regular file: not writable even for root (chmod would not stop root)."""
    (tmp_path / "file").write_text("a file, not a folder")
    out = tmp_path / "file" / "out"
    _, err = fail(capsys, ["--input", str(small_corpus), "--output", str(out)])
    assert f"output {str(out)!r} is not writable" in err
    assert_no_tables(tmp_path)
    assert (tmp_path / "file").read_text() == "a file, not a folder"


def test_unknown_yaml_option(capsys, small_corpus, tmp_path):
    cfg, out = tmp_path / "c.yaml", tmp_path / "out"
    cfg.write_text("workers: 2\nbatch_sise: 3\nread:\n  max_char: 5\n")
    _, err = fail(capsys, ["--config", str(cfg), "--input", str(small_corpus), "--output", str(out)])
    assert "unknown option(s) ['batch_sise']" in err and str(cfg) in err
    assert not out.exists()
    cfg.write_text("workers: 2\nread:\n  max_char: 5\n")  # and inside a section
    assert (
        "unknown option(s) ['read.max_char']"
        in fail(capsys, ["--config", str(cfg), "--input", str(small_corpus), "--output", str(out)])[1]
    )
    assert not out.exists()


def test_missing_required_setting(capsys):
    assert "--output is required" in fail(capsys, ["--input", "x"])[1]


def test_yaml_then_flags(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "input: corpus\noutput: out\nworkers: 3\nbatch_size: 5\nread:\n  text_column: body\n"
        "prompts:\n  style: task\n"
    )
    config = load_config(
        parse_args(["--config", str(cfg), "--workers", "2", "--max-chars", "99", "--no-facts"])
    )
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
    flags = "--input --output --model --memory --workers --gpus-per-worker --batch-size --config --address"
    for flag in flags.split():
        assert flag in text
    assert isinstance(parse_args([]), argparse.Namespace)


@pytest.mark.slow
@pytest.mark.usefixtures("ray_session")
def test_runs_end_to_end(capsys, small_corpus, tiny_model, tmp_path):
    out = tmp_path / "out"
    options = "--workers 2 --batch-size 2 --max-new-tokens-facts 4 --max-new-tokens-summary 4".split()
    code = main(["--input", str(small_corpus), "--output", str(out), "--model", str(tiny_model), *options])
    printed = capsys.readouterr().out
    assert code == 0 and "5 documents (5 processed" in printed and str(out / "summaries") in printed
    assert sorted(pd.read_parquet(out / "summaries")["doc_id"]) == [f"play{i}.txt" for i in range(5)]
    assert pd.read_parquet(out / "errors")["error_type"].tolist() == ["EmptyDocument"]


def test_verbose_is_about_the_console_not_a_setting():
    args = parse_args(["--input", "i", "--output", "o", "--verbose"])
    assert args.verbose and load_config(args) == load_config(parse_args(["--input", "i", "--output", "o"]))
