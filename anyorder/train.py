"""``anyorder-train``: compose the config, build data, model, masking and trainer, fit.

anyorder-train                                   # the embedded default (tiny model, CPU)
anyorder-train experiment=cell_masking masking.prob=0.3
anyorder-train -m masking=cell,attribute masking.prob=0.15,0.5
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import hydra
import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from anyorder.checks import TRAIN_RULES, check_settings
from anyorder.data.datamodule import TrajectoryDataModule
from anyorder.errors import DataError, report_errors
from anyorder.models.module import AnyOrderModule
from anyorder.naming import register_resolvers
from anyorder.run_config import StoreConfig

LOGGED_GROUPS = ("data", "model", "masking", "seed")


# Settings of a model family that several nodes read by interpolation (the backbone, the text
# vocabulary): `model.path=... model.lora.r=16` on the command line; not module arguments.
MODEL_FAMILY_SETTINGS = ("path", "trust_remote_code", "lora")


def build_module(cfg: DictConfig, datamodule: TrajectoryDataModule) -> AnyOrderModule:
    """The model node, completed with what only the tokenizer knows (vocabulary, length)."""
    tokenizer = datamodule.tokenizer
    vocabulary = tokenizer.vocabulary
    node = OmegaConf.to_container(cfg.model, resolve=True)
    for key in MODEL_FAMILY_SETTINGS:
        node.pop(key, None)
    return instantiate(
        node,
        backbone={"vocab_size": vocabulary.size, "max_length": tokenizer.sequence_length},
        mask_token_id=vocabulary.mask_id,
        action_token_ids=[int(i) for i in vocabulary.action_ids],
    )


def resolve_ckpt_path(ckpt_path: str | None, output_dir: str | Path) -> str | None:
    """``last`` means this run directory's last.ckpt; a missing checkpoint is an error, not a fresh start.

    A checkpoint is a file, or a directory where FSDP saved a sharded state dict.
    """
    if ckpt_path is None:
        return None
    path = Path(output_dir) / "checkpoints" / "last.ckpt" if ckpt_path == "last" else Path(ckpt_path)
    if not path.exists():
        hint = " (resume needs the killed run's directory: hydra.run.dir=<that dir>)" if ckpt_path == "last" else ""
        raise DataError(path, f"checkpoint not found{hint}")
    return str(path)


def global_batch_size(per_device: int, trainer: L.Trainer) -> int:
    """Windows per optimizer step, derived once: per-device batch x devices (all nodes) x accumulation."""
    return per_device * trainer.world_size * trainer.accumulate_grad_batches


def train(cfg: DictConfig, extra_callbacks: Sequence[L.Callback] = ()) -> dict[str, float]:
    """Run one training job described by ``cfg``; returns the final logged metrics."""
    check_settings(cfg, TRAIN_RULES)
    L.seed_everything(cfg.seed, workers=True)
    datamodule: TrajectoryDataModule = instantiate(cfg.data)
    module = build_module(cfg, datamodule)
    # `callbacks.<name>=null` on the command line switches one callback off
    callbacks = [instantiate(node) for node in cfg.callbacks.values() if node is not None]
    callbacks.append(instantiate(cfg.masking))
    callbacks.append(StoreConfig(cfg))
    callbacks.extend(extra_callbacks)
    logger = instantiate(cfg.logger)
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=logger)
    ckpt_path = resolve_ckpt_path(cfg.ckpt_path, cfg.paths.output_dir)
    batch = global_batch_size(datamodule.batch_size, trainer)
    if trainer.is_global_zero:
        print(
            f"global batch: {batch} windows = {datamodule.batch_size} per device x {trainer.world_size} devices"
            f" x {trainer.accumulate_grad_batches} accumulation steps"
        )
    if logger is not None:
        hyperparameters = {
            key: OmegaConf.to_container(cfg[key], resolve=True) if OmegaConf.is_config(cfg[key]) else cfg[key]
            for key in LOGGED_GROUPS
        }
        logger.log_hyperparams({**hyperparameters, "global_batch_size": batch})
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    metrics = {key: float(value) for key, value in trainer.callback_metrics.items()}
    if trainer.is_global_zero:
        print(f"run directory: {cfg.paths.output_dir}")
        for key in sorted(k for k in metrics if k.startswith("val/")):
            print(f"  {key:<28} {metrics[key]:.4f}")
    return metrics


register_resolvers()


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    with report_errors():
        metrics = train(cfg)
    return metrics.get("val/loss")


if __name__ == "__main__":
    main()
