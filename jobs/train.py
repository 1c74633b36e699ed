"""Train a MemGPT from a YAML recipe, locally or on Ray Train workers.

python -m jobs.train jobs/configs/train_small.yaml
python -m jobs.train jobs/configs/train_small.yaml --set max_steps=100 --set docs.n_entities=4
python -m jobs.train jobs/configs/train_small.yaml --ray-workers 2          # Ray Train, gloo on CPU
ray job submit --working-dir . -- python -m jobs.train jobs/configs/train_small.yaml --ray-workers 4 --gpu
"""

import argparse
import json
from pathlib import Path

import yaml

from memgpt.training import TrainConfig, planted_accuracy, train, train_with_ray


def parse_overrides(pairs: list[str]) -> dict:
    """`key=value` (value parsed as YAML; `a.b=v` sets a nested key) -> a dict of overrides."""
    out: dict = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--set expects key=value, got {pair!r}")
        *parents, leaf = key.split(".")
        node = out
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = yaml.safe_load(value)
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", help="a YAML recipe (jobs/configs/train_*.yaml)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a recipe option")
    p.add_argument("--ray-workers", type=int, default=0, help="train on this many Ray Train workers")
    p.add_argument("--gpu", action="store_true", help="one GPU per Ray worker")
    args = p.parse_args(argv)

    overrides = parse_overrides(args.set)
    base = yaml.safe_load(open(args.config)) or {}
    for key in ("model", "docs"):  # nested overrides merge into the recipe's dicts
        if key in overrides and isinstance(base.get(key), dict):
            overrides[key] = _merge(base[key], overrides[key])
    cfg = TrainConfig.from_yaml(args.config, **overrides)
    if cfg.init_from and not Path(cfg.init_from).is_dir():
        raise SystemExit(
            f"init_from {cfg.init_from!r} is not a folder: train the model this recipe starts from "
            f"first (see the comment at the top of {args.config})"
        )
    if args.ray_workers:
        result = train_with_ray(cfg, args.ray_workers, use_gpu=args.gpu)
        print(json.dumps({"metrics": result.metrics, "model": f"{cfg.out_dir}/model"}, indent=2))
        return
    model = train(cfg)
    summary = {"model": f"{cfg.out_dir}/model"}
    if cfg.task == "planted" and cfg.eval_docs:
        summary["state_accuracy"] = round(planted_accuracy(model, cfg, cfg.eval_docs), 4)
    print(json.dumps(summary, indent=2))


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


if __name__ == "__main__":
    main()
