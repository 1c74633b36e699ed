"""jobs.extract's flags and --print-config come from the one description each setting has."""

from dataclasses import fields

import yaml

from jobs.extract import SECTIONS, load_config, main, parse_args
from pipeline.config import ExtractConfig


def test_every_described_setting_has_a_flag_that_sets_it():
    args = parse_args(["--input", "in", "--output", "out", "--kv-budget", "64", "--no-facts", "--notes-every", "3",
                       "--format", "jsonl", "--facts-relations", "keeps", "moved to", "--save-states"])  # fmt: skip
    config = load_config(args)
    assert (config.kv_budget, config.facts, config.notes.every, config.read.format) == (64, False, 3, "jsonl")
    assert config.facts_relations == ("keeps", "moved to") and config.save_states is True
    described = [f for f in fields(ExtractConfig) if "help" in f.metadata]
    assert len(described) == len(fields(ExtractConfig)) - len(SECTIONS)  # every setting but the sections


def test_print_config_is_yaml_that_loads_back_as_the_same_settings(tmp_path, capsys):
    assert main(["--input", "in", "--output", "out", "--chunk-size", "256", "--print-config"]) == 0
    printed = capsys.readouterr().out
    assert "# tokens per chunk" in printed  # each setting with its description
    saved = tmp_path / "settings.yaml"
    saved.write_text(printed)
    again = load_config(parse_args(["--config", str(saved)]))
    assert again == load_config(parse_args(["--input", "in", "--output", "out", "--chunk-size", "256"]))
    assert yaml.safe_load(printed)["prompts"]["facts_marker"] == "\nFacts:\n"
