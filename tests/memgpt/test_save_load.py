import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file
from tiny import TINY_BACKBONES, random_doc, tiny

from memgpt import MemGPT, MemoryState


@pytest.mark.parametrize("memory", ["slots", "kv"])
def test_save_and_load_give_identical_outputs(tmp_path, memory):
    model = tiny("qwen2", memory=memory, kv_budget=64, kv_recent=16)
    model.save_pretrained(tmp_path / "m")
    loaded = MemGPT.from_pretrained(tmp_path / "m", device="cpu").eval()
    doc = random_doc(150)
    with torch.no_grad():
        a, b = model.read([doc]), loaded.read([doc])
        for name in a.tensors:
            assert torch.equal(a.tensors[name], b.tensors[name]), name
        ga = model.generate(doc[None], max_new_tokens=8)
        gb = loaded.generate(doc[None], max_new_tokens=8)
    assert torch.equal(ga, gb)
    assert loaded.config == model.config.replace(backbone="./backbone")
    saved = {p.name for p in (tmp_path / "m").iterdir()}
    assert {"config.json", "memory.safetensors", "backbone", "tokenizer.json"} <= saved
    assert not any(p.suffix in (".bin", ".pt", ".pth", ".pkl") for p in (tmp_path / "m").rglob("*"))


def test_a_pretrained_backbone_is_referenced_and_only_memory_weights_saved(tmp_path):
    base = tiny("llama")
    base.backbone.save_pretrained(tmp_path / "hf")  # stands in for a hub model
    base.tokenizer.save_pretrained(tmp_path / "hf")
    wrapped = MemGPT.from_pretrained(str(tmp_path / "hf"), device="cpu", memory="slots", chunk_size=32)
    assert wrapped.config.backbone == str(tmp_path / "hf")
    wrapped.save_pretrained(tmp_path / "mem")
    assert not (tmp_path / "mem" / "backbone").exists()
    again = MemGPT.from_pretrained(tmp_path / "mem", device="cpu")
    doc = random_doc(100)
    with torch.no_grad():
        assert torch.equal(wrapped.read([doc]).tensors["memory"], again.read([doc]).tensors["memory"])


def test_a_plain_hf_model_is_wrapped_with_kv_memory_by_default(tmp_path):
    base = tiny("gpt2")
    base.backbone.save_pretrained(tmp_path / "hf")
    base.tokenizer.save_pretrained(tmp_path / "hf")
    model = MemGPT.from_pretrained(tmp_path / "hf", device="cpu")
    assert model.config.memory == "kv"
    assert model.generate(random_doc(10)[None], max_new_tokens=3).shape[1] <= 13


def test_a_state_from_another_model_fails_naming_both(tmp_path):
    small = tiny("llama", num_slots=8)
    big = tiny("llama", num_slots=16)
    with torch.no_grad():
        small.read([random_doc(50)]).save(tmp_path / "state.safetensors")
    state = MemoryState.load(tmp_path / "state.safetensors")
    with pytest.raises(ValueError, match=r"num_slots': 8.*num_slots': 16"):
        big.read([random_doc(50)], memory=state)
    with torch.no_grad():  # and the right model continues from it exactly
        direct = small.read([random_doc(50, seed=1)], memory=small.read([random_doc(50)]))
        resumed = small.read([random_doc(50, seed=1)], memory=state)
    torch.testing.assert_close(direct.tensors["memory"], resumed.tensors["memory"], atol=0, rtol=0)


def test_memory_state_load_rejects_files_that_are_not_states(tmp_path):
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="not a valid safetensors memory state"):
        MemoryState.load(tmp_path / "junk.safetensors")
    save_file({"x": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="not a MemGPT memory state"):
        MemoryState.load(tmp_path / "other.safetensors")
    with pytest.raises(FileNotFoundError):
        MemoryState.load(tmp_path / "missing.safetensors")


def test_a_checkpoint_that_does_not_fit_fails_naming_both_shapes(tmp_path):
    tiny("llama", num_slots=8).save_pretrained(tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    config["num_slots"] = 4
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"initial is \(8, 64\) in the file, \(4, 64\) in the model"):
        MemGPT.from_pretrained(tmp_path / "m", device="cpu")


def test_pickle_weights_are_never_loaded(tmp_path):
    base = tiny("llama")
    base.backbone.save_pretrained(tmp_path / "hf")
    (tmp_path / "hf" / "model.safetensors").unlink()
    torch.save(base.backbone.state_dict(), tmp_path / "hf" / "pytorch_model.bin")
    with pytest.raises(OSError, match="safetensors"):
        MemGPT.from_pretrained(tmp_path / "hf", device="cpu")


def test_custom_code_is_never_imported_without_trust_remote_code(tmp_path):
    marker = tmp_path / "EXECUTED"
    hf = tmp_path / "hf"
    hf.mkdir()
    auto_map = {
        "AutoConfig": "configuration_evil.EvilConfig",
        "AutoModelForCausalLM": "modeling_evil.EvilModel",
    }
    (hf / "config.json").write_text(json.dumps({"model_type": "evil-memgpt-test", "auto_map": auto_map}))
    for module in ("configuration_evil", "modeling_evil"):
        (hf / f"{module}.py").write_text(f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n")
    with pytest.raises(
        ValueError, match=r"needs custom code \(configuration_evil.EvilConfig, .*trust_remote_code=True"
    ):
        MemGPT.from_pretrained(hf, device="cpu")
    assert not marker.exists()


def test_unknown_options_and_missing_paths_are_clear_errors(tmp_path):
    tiny("llama").save_pretrained(tmp_path / "m")
    with pytest.raises(TypeError, match="unknown MemGPTConfig option"):
        MemGPT.from_pretrained(tmp_path / "m", device="cpu", not_an_option=1)
    with pytest.raises(FileNotFoundError, match="not a directory"):
        MemGPT.from_pretrained(str(tmp_path / "nowhere"))


@pytest.mark.slow
def test_a_hub_id_that_is_not_cached_fails_clearly_when_the_hub_is_unreachable(tmp_path):
    code = "from memgpt import MemGPT\nMemGPT.from_pretrained('some-org/some-model')"
    env = {"HF_ENDPOINT": "http://127.0.0.1:9", "HF_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("OSError: could not load model 'some-org/some-model'")
    assert "127.0.0.1:9" in last


SEED_EXAMPLE = """
from memgpt import MemGPT, load_tokenizer
tokenizer = load_tokenizer()
model = MemGPT()                                   # a small default config, random weights
input_ids = tokenizer.encode("The history of NLP is", return_tensors="pt")
output = model.generate(input_ids, max_length=50)  # long inputs are read chunk by chunk into memory first
print(output.shape[0], output.shape[1] <= 50, tokenizer.decode(output[0]).startswith("The history of NLP is"))
"""


@pytest.mark.slow
def test_the_seed_example_runs_offline(tmp_path):
    env = {
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(tmp_path),
        "HF_ENDPOINT": "http://127.0.0.1:9",
        "PATH": "/usr/bin",
    }
    proc = subprocess.run(
        [sys.executable, "-c", SEED_EXAMPLE], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["1", "True", "True"]


def test_every_tiny_backbone_builds(arch):
    assert TINY_BACKBONES[arch]["model_type"] == tiny(arch).backbone.config.model_type
