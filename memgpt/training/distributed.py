"""The same loop under Ray Train: several workers, gradients averaged by torch.distributed."""

from dataclasses import asdict
from pathlib import Path
from typing import Any

from .loop import train
from .recipe import TrainConfig


def _ray_worker(config: dict[str, Any]) -> None:
    import ray.train

    ctx = ray.train.get_context()
    train(TrainConfig(**config), ctx.get_world_rank(), ctx.get_world_size(), report=ray.train.report)


def train_with_ray(cfg: TrainConfig, num_workers: int, use_gpu: bool = False):
    """Run `train` on `num_workers` Ray Train workers (gloo on CPU, nccl on GPU); returns Ray's Result."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    if cfg.batch_size % num_workers:
        raise ValueError(f"batch_size {cfg.batch_size} is not divisible by num_workers {num_workers}")
    out = Path(cfg.out_dir).resolve()  # workers may run in another directory
    config = {**asdict(cfg), "out_dir": str(out)}
    trainer = TorchTrainer(
        _ray_worker,
        train_loop_config=config,
        scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=use_gpu),
        run_config=RunConfig(name="train", storage_path=str(out / "ray")),
    )
    return trainer.fit()
