"""Training: deterministic resumable checkpoints without pickle, the Ray Train path, and memory that helps."""

import json
import re
from pathlib import Path

import pytest
import torch

from memgpt import MemGPT
from memgpt.training import TrainConfig, planted_accuracy, read_chunks, summarize, train, train_with_ray
from memgpt.training import planted as pk
from memgpt.training.batches import TaskPrompts
from memgpt.training.checkpoints import OPTIMIZER, TRAINER_STATE
from memgpt.training.loop import build_model
from memgpt.training.recipe import CHECKPOINT, FINAL, TRAIN_CONFIG
from memgpt.training.scoring import state_accuracy

ROOT = Path(__file__).parents[3]
CI_RECIPE = ROOT / "jobs" / "configs" / "train_ci.yaml"


def tiny_recipe(out: Path, **overrides) -> TrainConfig:
    """The CI recipe, shrunk to a few seconds of training."""
    options = dict(out_dir=str(out), max_steps=6, batch_size=4, ckpt_every=3, log_every=1, eval_docs=0)
    return TrainConfig.from_yaml(CI_RECIPE, **{**options, **overrides})


def weights(model: MemGPT) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_every_recipe_loads():
    recipes = sorted((ROOT / "jobs" / "configs").glob("train_*.yaml"))
    assert recipes
    for path in recipes:
        cfg = TrainConfig.from_yaml(path)
        assert cfg.max_chunks >= 1 and cfg.n_chunks(0) >= 1


def test_unknown_recipe_option_fails(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("max_step: 3\n")
    with pytest.raises(ValueError, match="max_step"):
        TrainConfig.from_yaml(path)


def test_same_seed_same_weights_and_resume_continues_exactly(tmp_path):
    full = weights(train(tiny_recipe(tmp_path / "a")))
    again = weights(train(tiny_recipe(tmp_path / "b")))
    assert all(torch.equal(full[k], again[k]) for k in full)

    train(tiny_recipe(tmp_path / "c", max_steps=3))  # stops at step 3 with a checkpoint
    state = json.loads((tmp_path / "c" / CHECKPOINT / TRAINER_STATE).read_text())
    assert state["step"] == 3
    resumed = weights(train(tiny_recipe(tmp_path / "c")))  # picks up at step 3
    assert all(torch.allclose(full[k], resumed[k], atol=1e-6) for k in full)
    # the history of the resumed run still holds the steps before its checkpoint, each once, the same losses
    losses = {h["step"]: h["loss"] for h in history(tmp_path / "a")}
    assert [h["step"] for h in history(tmp_path / "c")] == list(range(1, 7))
    assert all(abs(h["loss"] - losses[h["step"]]) < 1e-4 for h in history(tmp_path / "c"))


def test_checkpoints_are_safetensors_and_json_only(tmp_path):
    train(tiny_recipe(tmp_path, max_steps=3))
    files = {p.name for p in (tmp_path / CHECKPOINT).rglob("*") if p.is_file()}
    assert OPTIMIZER in files and TRAINER_STATE in files
    assert not {f for f in files if f.endswith((".pt", ".pth", ".bin", ".pkl"))}
    saved = json.loads((tmp_path / FINAL / TRAIN_CONFIG).read_text())
    assert saved["steps"] == 3 and saved["docs"]["n_entities"] == 1
    MemGPT.from_pretrained(tmp_path / FINAL)  # the final model reloads


def test_memory_lm_on_text(tmp_path):
    text = tmp_path / "t.txt"
    text.write_text(" ".join(pk.Filler.synthetic(400).words))
    model = train(tiny_recipe(tmp_path / "run", task="text", text_files=[str(text)], max_steps=2)).eval()
    assert [h["step"] for h in history(tmp_path / "run")] == [1, 2]
    reloaded = MemGPT.from_pretrained(tmp_path / "run" / FINAL).eval()
    ids = torch.tensor([model.tokenizer.encode(" ".join(pk.Filler.synthetic(40).words[:60]))])
    with torch.no_grad():  # the saved model is the trained one: the same logits
        assert torch.allclose(model(ids).logits, reloaded(ids).logits, atol=1e-5)


def history(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]


@pytest.mark.long  # ~40 s, mostly Ray Train starting its workers
def test_ray_train_two_cpu_workers_follow_the_single_worker_curve(tmp_path):
    ray = pytest.importorskip("ray")
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    recipe = dict(max_steps=8, ckpt_every=100, warmup_steps=1)
    result = train_with_ray(tiny_recipe(tmp_path / "ray", **recipe), num_workers=2)
    assert result.error is None
    start = weights(build_model(tiny_recipe(tmp_path / "ray", **recipe), torch.device("cpu")))
    saved = weights(MemGPT.from_pretrained(tmp_path / "ray" / FINAL))
    assert any(not torch.equal(start[k], saved[k]) for k in start)  # what the workers learned was saved
    train(tiny_recipe(tmp_path / "one", **recipe))
    # the two workers split the single worker's batch: the same documents, gradients averaged
    two, one = [h["loss"] for h in history(tmp_path / "ray")], [h["loss"] for h in history(tmp_path / "one")]
    assert len(two) == len(one) == 8
    assert two[-1] < 0.9 * two[0] and one[-1] < 0.9 * one[0]
    assert abs(two[-1] - one[-1]) < 0.25 * one[-1]


@pytest.mark.slow
@pytest.mark.long
def test_trained_memory_beats_no_memory(tmp_path):
    """The CI recipe, 2,500 steps (~6 min): after reading two chunks, the summary written from memory beats the
    same model whose memory was reset before the last chunk (the fact is in the first chunk half the time, so
    without memory at best ~half the places are right; chance is 1/8).

    Learning is a phase transition, and where it falls moves with the seed and the torch build: at the recipe's
    1,500 steps, seeds 0, 1 and 2 scored 0.72, 0.75 and 1.00 (torch 2.13 CPU); at 2,500, seeds 0 and 1 scored
    1.00 and 0.97."""
    cfg = TrainConfig.from_yaml(CI_RECIPE, out_dir=str(tmp_path), max_steps=2500)
    model = train(cfg).eval()
    prompts = TaskPrompts(model.tokenizer)
    docs = [pk.generate(cfg.planted_config(cfg.max_chunks), 50_000 + i, prompts.tokenizer) for i in range(64)]

    def accuracy(last: int | None) -> float:

        outs = summarize(model, read_chunks(model, docs, last), prompts, max_new_tokens=16)
        return sum(state_accuracy(o, d.state) for o, d in zip(outs, docs, strict=True)) / len(docs)

    with_memory, last_chunk_only = accuracy(None), accuracy(1)
    assert with_memory >= 0.8 and with_memory >= last_chunk_only + 0.25, (with_memory, last_chunk_only)


@pytest.mark.slow
def test_longdoc_benchmark_runs_on_a_trained_folder(tmp_path):
    import subprocess
    import sys

    pytest.importorskip("matplotlib")  # the `bench` extra draws the plot
    train(tiny_recipe(tmp_path / "run", max_steps=2))
    out = tmp_path / "bench"
    cmd = [sys.executable, "-m", "benchmarks.longdoc", "--model", str(tmp_path / "run" / FINAL), "--docs", "2",
           "--multiples", "1", "2", "--long-docs", "0", "--fact-tokens", "8", "--kv-budget", "64",
           "--kv-recent", "16", "--threads", "1", "--out", str(out)]  # fmt: skip
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, timeout=300)
    rows = json.loads((out / "longdoc.json").read_text())
    assert {r["method"] for r in rows} == {"slots", "kv", "no-memory", "truncated"}
    assert {r["n_chunks"] for r in rows} == {2, 4}
    assert (out / "longdoc.png").stat().st_size > 1000 and "| chunks |" in (out / "longdoc.md").read_text()


def test_shipped_model_reloads_offline_and_reproduces_its_card():
    """memgpt-small loads from its folder and, on documents it has never seen (a fresh seed), scores the state
    accuracy its model card states, within noise."""
    folder = ROOT / "memgpt" / "pretrained" / "memgpt-small"
    card = (folder / "README.md").read_text()
    stated = float(re.search(r"state accuracy at the trained length: \*\*([0-9.]+)\*\*", card).group(1))
    model = MemGPT.from_pretrained(folder, device="cpu", dtype=torch.float32).eval()
    cfg = TrainConfig(
        **{k: v for k, v in json.loads((folder / TRAIN_CONFIG).read_text()).items() if k != "steps"}
    )
    measured = planted_accuracy(model, cfg, n_docs=128, seed=777_000)  # 256 entities: std ~0.03
    assert abs(measured - stated) <= 0.1, (measured, stated)
    assert measured >= 0.5  # four times chance (1/8 per entity), whatever the card says
