"""cluster.yaml is a launcher config that `ray up` accepts: checked with the launcher's own functions."""

import copy
import re
from pathlib import Path

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.providers import _NODE_PROVIDERS
from ray.autoscaler._private.util import prepare_config, validate_config

ROOT = Path(__file__).parents[1]


@pytest.fixture(scope="module")
def raw() -> dict:
    return yaml.safe_load((ROOT / "cluster.yaml").read_text())


def bootstrap(config: dict) -> dict:
    """What `ray up` does before it talks to the cloud: provider lookup, defaults, schema validation."""
    assert _NODE_PROVIDERS.get(config["provider"]["type"]) is not None
    config = prepare_config(copy.deepcopy(config))
    validate_config(config)
    return config


def test_ray_up_accepts_it(raw):
    config = bootstrap(raw)
    assert config["cluster_name"] == "memgpt"


def test_cpu_head_and_gpu_workers(raw):
    config = bootstrap(raw)
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0 and head["resources"]["CPU"] > 0
    gpu = [
        t
        for name, t in types.items()
        if name != config["head_node_type"] and t["resources"].get("GPU", 0) >= 1
    ]
    assert gpu, "no GPU worker type"
    assert all(0 <= t["min_workers"] <= t["max_workers"] <= config["max_workers"] for t in gpu)


def test_setup_installs_the_project(raw):
    config = bootstrap(raw)
    cmds = config["setup_commands"]
    torch_at = next(i for i, c in enumerate(cmds) if re.search(r"pip install .*torch==\d", c))
    project_at = next(i for i, c in enumerate(cmds) if "pip install -e ." in c)
    assert torch_at < project_at  # torch first, so `-e .` does not pull a different build
    mount = next(iter(config["file_mounts"]))
    assert f"cd {mount}" in cmds[project_at]
    assert config["file_mounts"][mount] == "."  # the repo root, where `ray up` is run


def test_torch_pin_satisfies_pyproject(raw):
    pin = re.search(r"torch==([\d.]+)", " ".join(raw["setup_commands"])).group(1)
    floor = re.search(r'"torch>=([\d.]+)"', (ROOT / "pyproject.toml").read_text()).group(1)
    assert tuple(map(int, pin.split("."))) >= tuple(map(int, floor.split(".")))


@pytest.mark.parametrize(
    "edit",
    [
        lambda c: c.update(bogus_option=1),
        lambda c: c["available_node_types"]["worker.gpu"].update(min_workers="two"),
        lambda c: c.update(head_node_type="no.such.type"),
    ],
    ids=["unknown-key", "bad-type", "missing-head-type"],
)
def test_validation_catches_mistakes(raw, edit):
    bad = copy.deepcopy(raw)
    edit(bad)
    with pytest.raises((jsonschema.ValidationError, ValueError, KeyError)):
        bootstrap(bad)
