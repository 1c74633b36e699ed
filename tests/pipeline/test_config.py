import pytest

from jobs.extract import main
from memgpt import memory_names
from pipeline.config import ExtractConfig


def test_the_job_takes_every_registered_memory_and_names_them_for_another():
    for name in memory_names():
        assert ExtractConfig(input="in", output="out", memory=name).memory == name
    with pytest.raises(ValueError, match=r"memory must be one of \(.*'archival'.*\), got 'nope'"):
        ExtractConfig(input="in", output="out", memory="nope")


def test_an_unknown_memory_is_one_line_before_any_work(tmp_path, capsys):
    assert main(["--input", str(tmp_path), "--output", str(tmp_path / "out"), "--memory", "nope"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "memory must be one of" in err and not (tmp_path / "out").exists()
