"""Fine-tuning a pretrained backbone (frozen, LoRA or full) beside the memory, and saving what was learned."""

import json
from pathlib import Path

import pytest
import torch
from tiny import random_doc, tiny

from memgpt import MemGPT
from memgpt.training import TrainConfig, train
from memgpt.training.recipe import FINAL

ROOT = Path(__file__).parents[3]
CI_RECIPE = ROOT / "jobs" / "configs" / "train_ci.yaml"


@pytest.fixture(scope="module")
def hub_folder(tmp_path_factory) -> Path:
    """A tiny Llama saved as a Hugging Face model folder: it stands in for a pretrained model from the hub."""
    base = tiny("llama")
    folder = tmp_path_factory.mktemp("hub") / "tiny-llama"
    base.backbone.save_pretrained(folder)
    base.tokenizer.save_pretrained(folder)
    return folder


def recipe(out: Path, hub_folder: Path, mode: str, **overrides) -> TrainConfig:
    model = {"backbone": str(hub_folder), "memory": "slots", "chunk_size": 32, "num_slots": 4}
    options = dict(out_dir=str(out), model=model, train_backbone=mode, max_steps=3, batch_size=4, ckpt_every=2,
                   log_every=1, eval_docs=0, lr=5e-3, min_lr=5e-3)  # fmt: skip
    return TrainConfig.from_yaml(CI_RECIPE, **{**options, **overrides})


def backbone_weights(model: MemGPT) -> dict[str, torch.Tensor]:
    return {n.replace(".base_layer", ""): p.detach().clone() for n, p in model.backbone.named_parameters()
            if "lora_" not in n}  # fmt: skip


def same_outputs(a: MemGPT, b: MemGPT) -> bool:
    doc = random_doc(70)
    with torch.no_grad():
        return torch.allclose(a.eval()(doc[None]).logits, b.eval()(doc[None]).logits, atol=1e-5)


def test_frozen_backbone_stays_bit_identical_and_is_saved_by_name(tmp_path, hub_folder):
    base = backbone_weights(MemGPT.from_pretrained(hub_folder, device="cpu"))
    model = train(recipe(tmp_path, hub_folder, "none"))
    assert all(torch.equal(base[n], p) for n, p in backbone_weights(model).items())
    saved = tmp_path / FINAL
    assert not (saved / "backbone").exists() and json.loads((saved / "config.json").read_text())[
        "backbone"
    ] == str(hub_folder)
    assert same_outputs(model, MemGPT.from_pretrained(saved, device="cpu"))


def test_lora_learns_an_adapter_that_is_saved_alone_and_reloaded_onto_its_base(tmp_path, hub_folder):
    pytest.importorskip("peft")
    base = backbone_weights(MemGPT.from_pretrained(hub_folder, device="cpu"))
    model = train(recipe(tmp_path, hub_folder, "lora"))
    assert all(torch.equal(base[n], p) for n, p in backbone_weights(model).items())  # the base is untouched
    lora_b = [p for n, p in model.backbone.named_parameters() if "lora_B" in n]
    assert lora_b and any(p.abs().sum() > 0 for p in lora_b)  # B starts at zero: the adapter learned
    saved = tmp_path / FINAL
    config = json.loads((saved / "config.json").read_text())
    assert config["backbone"] == str(hub_folder) and config["adapter"]["r"] == 8
    assert not (saved / "backbone").exists() and (saved / "adapter.safetensors").stat().st_size < 1_000_000
    reloaded = MemGPT.from_pretrained(saved, device="cpu")
    assert same_outputs(model, reloaded)
    assert not same_outputs(MemGPT.from_pretrained(hub_folder, device="cpu", memory="slots", chunk_size=32,
                                                   num_slots=4), reloaded)  # fmt: skip


def test_backbone_lr_sets_the_adapters_step_apart_from_the_memorys(tmp_path, hub_folder):
    """Adam's first step moves each weight by about its rate: the adapter's by backbone_lr, the memory's by lr."""
    pytest.importorskip("peft")
    before = MemGPT.from_pretrained(hub_folder, device="cpu", memory="slots", chunk_size=32, num_slots=4)
    model = train(recipe(tmp_path, hub_folder, "lora", max_steps=1, warmup_steps=1, backbone_lr=1e-4))
    adapter_step = max(float(p.abs().max()) for n, p in model.backbone.named_parameters() if "lora_B" in n)
    memory_step = float((model.memory.proj.bias - before.memory.proj.bias).abs().max())
    assert 0.5e-4 < adapter_step <= 1.01e-4  # lora_B starts at zero
    assert 2.5e-3 < memory_step <= 5.05e-3


def test_full_fine_tuning_saves_the_trained_backbone_not_the_base(tmp_path, hub_folder):
    base = backbone_weights(MemGPT.from_pretrained(hub_folder, device="cpu"))
    model = train(recipe(tmp_path, hub_folder, "full"))
    trained = backbone_weights(model)
    assert any(not torch.equal(base[n], trained[n]) for n in base)
    saved = tmp_path / FINAL
    config = json.loads((saved / "config.json").read_text())
    assert (saved / "backbone").is_dir() and config["base_model"] == str(hub_folder)
    reloaded = MemGPT.from_pretrained(saved, device="cpu")
    assert all(torch.equal(trained[n], p) for n, p in backbone_weights(reloaded).items())


def test_a_changed_named_backbone_is_never_saved_as_its_base(tmp_path, hub_folder):
    """A user who changes the weights of a model loaded by name and saves it with the defaults gets the
    changed weights back, not the base's."""
    model = MemGPT.from_pretrained(hub_folder, device="cpu", memory="kv")
    with torch.no_grad():
        for p in model.backbone.parameters():
            p.add_(0.01)
    model.save_pretrained(tmp_path / "m")
    reloaded = MemGPT.from_pretrained(tmp_path / "m", device="cpu")
    assert same_outputs(model, reloaded)
    assert json.loads((tmp_path / "m" / "config.json").read_text())["base_model"] == str(hub_folder)


def test_lora_training_resumes_on_the_same_curve(tmp_path, hub_folder):
    pytest.importorskip("peft")
    whole = train(recipe(tmp_path / "a", hub_folder, "lora", max_steps=4))
    train(recipe(tmp_path / "b", hub_folder, "lora", max_steps=2))  # stops at step 2, its checkpoint there
    resumed = train(recipe(tmp_path / "b", hub_folder, "lora", max_steps=4))
    assert same_outputs(whole, resumed)


def test_slots_on_a_pretrained_backbone_write_at_a_token_size_through_a_shut_gate(hub_folder):
    """A loaded backbone's last hidden states are not its embeddings' size: the first writes are scaled to a
    token's size and mostly gated out, so M_0 keeps working; a backbone built from its config starts plain."""
    fresh = tiny("llama", memory="slots", num_slots=4)
    assert torch.equal(fresh.memory.proj.weight, torch.eye(fresh.hidden_size))
    assert torch.equal(fresh.memory.gate.bias, torch.zeros_like(fresh.memory.gate.bias))

    loaded = MemGPT.from_pretrained(hub_folder, memory="slots", chunk_size=32, num_slots=4, device="cpu")
    ids = random_doc(32)[None]
    hidden = loaded.backbone(ids, output_hidden_states=True).hidden_states[-1]  # (1, T, D)
    embed = loaded.backbone.get_input_embeddings().weight
    rms = lambda t: float(t.detach().pow(2).mean().sqrt())  # noqa: E731
    assert rms(hidden) > 5 * rms(embed)  # what the scale is for
    assert 0.5 < rms(loaded.memory.proj(hidden)) / rms(embed) < 2.0
    gate = torch.sigmoid(loaded.memory.gate.bias)
    assert float(gate.max()) < 0.2
