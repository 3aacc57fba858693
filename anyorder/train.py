"""``anyorder-train``: compose the config, build data, model, masking and trainer, fit.

anyorder-train                                   # the embedded default (tiny model, CPU)
anyorder-train experiment=cell_masking masking.prob=0.3
anyorder-train -m masking=cell,attribute masking.prob=0.15,0.5
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import hydra
import lightning as L
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import Timer
from omegaconf import DictConfig, OmegaConf

from anyorder.checks import TRAIN_RULES, check_settings
from anyorder.data.datamodule import TrajectoryDataModule
from anyorder.errors import ConfigError, DataError, describe, report_errors
from anyorder.evaluate import check_eval_settings, eval_config, evaluate_after_fit, hparam_metrics
from anyorder.models.build import build_module
from anyorder.naming import job_overrides, register_resolvers
from anyorder.results import JOB_FILE, evaluated_job, write_job_record
from anyorder.run_config import StoreConfig
from anyorder.sweep_failures import failure_recorder

LOGGED_GROUPS = ("data", "model", "masking", "seed")

# Lightning 2.6 still builds torch's deprecated ``LeafSpec`` on every step's output; the warning is
# about Lightning's internals, not about this run, and would otherwise open every training log.
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)", category=FutureWarning)


def resolve_ckpt_path(ckpt_path: str | None, output_dir: str | Path) -> str | None:
    """``last`` means this run directory's last.ckpt; ``auto`` the same when it exists (a sweep job
    that resumes if it was killed, else starts); a missing checkpoint is an error, not a fresh start.

    A checkpoint is a file, or a directory where FSDP saved a sharded state dict.
    """
    if ckpt_path is None:
        return None
    last = Path(output_dir) / "checkpoints" / "last.ckpt"
    swapped_out = last.with_name("last.ckpt.previous")  # a sharded save killed between its two renames
    if not last.exists() and swapped_out.exists():
        last = swapped_out
    if ckpt_path == "auto":
        return str(last) if last.exists() else None
    path = last if ckpt_path == "last" else Path(ckpt_path)
    if not path.exists():
        hint = " (resume needs the killed run's directory: hydra.run.dir=<that dir>)" if ckpt_path == "last" else ""
        raise DataError(path, f"checkpoint not found{hint}")
    return str(path)


def finished_job(output_dir: str | Path) -> dict[str, float] | None:
    """The metrics of a self-evaluating job that has finished already (trained and evaluated)."""
    if not evaluated_job(output_dir):
        return None
    print(f"finished already (resuming a sweep): {Path(output_dir) / JOB_FILE}")
    return {"finished": 1.0}


def global_batch_size(per_device: int, trainer: L.Trainer) -> int:
    """Windows per optimizer step, derived once: per-device batch x devices (all nodes) x accumulation."""
    return per_device * trainer.world_size * trainer.accumulate_grad_batches


def build_trainer(node: DictConfig, **parts: object) -> L.Trainer:
    """The Trainer of the ``trainer`` node. Lightning checks its own arguments (precision,
    devices, accelerator, strategy); its refusal becomes one line naming the node, not a
    four-line Hydra report."""
    try:
        return instantiate(node, **parts)
    except InstantiationException as error:
        cause = error.__cause__
        refused = (ValueError, TypeError, ImportError, MisconfigurationException)
        if not isinstance(cause, refused) or describe(error) is not None:  # a bug, or already one line
            raise
        raise ConfigError("trainer", str(cause)) from error


def train(cfg: DictConfig, extra_callbacks: Sequence[L.Callback] = ()) -> dict[str, float]:
    """Run one training job described by ``cfg``; returns the final logged metrics."""
    check_settings(cfg, TRAIN_RULES)
    if cfg.get("eval_after_fit"):
        check_eval_settings(eval_config(cfg))  # a bad eval.* setting fails now, not after training
        done = finished_job(cfg.paths.output_dir)
        if done is not None:
            return done
    L.seed_everything(cfg.seed, workers=True)
    datamodule: TrajectoryDataModule = instantiate(cfg.data)
    module = build_module(cfg, datamodule)
    # `callbacks.<name>=null` on the command line switches one callback off
    callbacks = [instantiate(node) for node in cfg.callbacks.values() if node is not None]
    callbacks.append(instantiate(cfg.masking))
    timer = Timer()  # its training time is saved in every checkpoint, so it adds up over resumes
    callbacks.extend([StoreConfig(cfg), timer])
    callbacks.extend(extra_callbacks)
    logger = instantiate(cfg.logger)
    trainer = build_trainer(cfg.trainer, callbacks=callbacks, logger=logger)
    ckpt_path = resolve_ckpt_path(cfg.ckpt_path, cfg.paths.output_dir)
    batch = global_batch_size(datamodule.batch_size, trainer)
    if trainer.is_global_zero:
        print(
            f"global batch: {batch} windows = {datamodule.batch_size} per device x {trainer.world_size} devices"
            f" x {trainer.accumulate_grad_batches} accumulation steps"
        )
    if logger is not None and not cfg.get("eval_after_fit"):  # else the HParams come with the final metrics
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
        write_job_record(cfg.paths.output_dir, cfg, job_overrides(), timer.time_elapsed("train"))
        if cfg.get("eval_after_fit"):
            evaluated = evaluate_after_fit(cfg, logger)
            metrics |= hparam_metrics(evaluated)
    return metrics


register_resolvers()


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    metrics: dict[str, float] = {}
    with report_errors(keep_going=failure_recorder(cfg.paths.output_dir)):
        metrics = train(cfg)
    return metrics.get("val/loss")


if __name__ == "__main__":
    main()
