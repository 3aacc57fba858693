"""``anyorder-export``: a fine-tuned LLaDA2.0 run back as a LLaDA2.0 checkpoint directory.

This is the inverse of loading: the run's checkpoint (a file, or a sharded run's directory)
fills a skeleton of the model (full fine-tuning: the base is never read) or the base it was
trained from (LoRA: the adapters are then merged, in float32), and the model is written
with the original key names (experts split again) so that the upstream inference code
loads it as it loads the released weights.

anyorder-export ckpt_path=outputs/train/<run>/checkpoints/last.ckpt out=exports/llada2-babyai
"""

from __future__ import annotations

import itertools
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from anyorder.data.datamodule import TrajectoryDataModule
from anyorder.errors import ConfigError, DataError, describe, report_errors
from anyorder.eval.checkpoint import load_trained
from anyorder.masking.queries import world_model_query
from anyorder.models.llada2 import LLaDA2MoE, from_pretrained
from anyorder.models.llada2_checkpoint import save_pretrained
from anyorder.models.lora import DEFAULT_TARGETS, merge_lora, save_adapters
from anyorder.models.module import AnyOrderModule
from anyorder.models.objective import token_nll
from anyorder.naming import register_resolvers


def export(
    ckpt_path: str | Path,
    out: str | Path,
    dtype: str = "bfloat16",
    max_shard_gb: float = 5.0,
    check_batches: int = 2,
    adapters_only: bool = False,
) -> Path:
    """Write the run of ``ckpt_path`` to ``out``; returns ``out``.

    LoRA adapters are folded into the weights in float32 and rounded once to ``dtype``; with
    ``adapters_only`` they are written alone instead (float32, with the settings that put them
    back on the base: :func:`anyorder.models.lora.load_adapters`). With
    ``check_batches`` the written directory is loaded back and scored against the trained model
    on that many validation batches (the world-model query's NLL): an export that does not
    compute what was trained is an error, not a file.
    """
    run = load_trained(ckpt_path)
    backbone = run.module.backbone
    if not isinstance(backbone, LLaDA2MoE):
        raise ConfigError(
            "ckpt_path", f"export writes LLaDA2.0 checkpoints; this run's backbone is a {type(backbone).__name__}"
        )
    if getattr(backbone, "causal", False):
        raise ConfigError(
            "ckpt_path", "an autoregressive run (causal attention): a LLaDA2.0 directory would be read bidirectionally"
        )
    if adapters_only:
        lora = OmegaConf.to_container(run.config.model.lora, resolve=True) if "lora" in run.config.model else {}
        r = lora.get("r", 0)
        settings = {
            "r": r, "alpha": lora.get("alpha") or 2 * r, "dropout": lora.get("dropout", 0.0),
            "targets": list(lora.get("targets") or DEFAULT_TARGETS), "base": run.config.model.get("path"),
        }  # fmt: skip
        return save_adapters(backbone, Path(out), settings)
    trained = None
    if check_batches:
        try:
            trained = query_nll(run.module, run.datamodule, check_batches)
        except DataError as error:  # the run's data is not on this host: write, unchecked, and say so
            print(f"warning: the export is not checked against the trained model ({describe(error) or error})")
    # bf16 (the trained model's or the export's) allows its relative precision, 2^-8; float32 far less
    bf16 = dtype == "bfloat16" or any(p.dtype == torch.bfloat16 for p in backbone.parameters())
    tolerance = 1e-2 if bf16 else 1e-4
    merge_lora(backbone, dtype=torch.float32)
    source = run.config.model.get("path")
    written = save_pretrained(
        backbone, out, source=source, dtype=getattr(torch, dtype), max_shard_bytes=int(max_shard_gb * 2**30)
    )
    if trained is not None:
        del backbone
        run.module.backbone = from_pretrained(written, dtype=dtype)
        loaded = query_nll(run.module, run.datamodule, check_batches)
        print(f"world-model NLL on {check_batches} val batches: trained {trained:.5f}, exported {loaded:.5f}")
        if abs(loaded - trained) > tolerance * max(1.0, abs(trained)):
            raise DataError(written, f"the export computes another function (NLL {loaded:.5f}, trained {trained:.5f})")
    return written


@torch.no_grad()
def query_nll(module: AnyOrderModule, datamodule: TrajectoryDataModule, batches: int) -> float:
    """Mean NLL of the hidden last step given the rest (a deterministic query) over ``batches`` val batches."""
    module.eval()
    total, count = 0.0, 0
    for batch in itertools.islice(datamodule.val_dataloader(), batches):
        query = world_model_query(batch)
        nll = token_nll(module(batch, query).float(), batch["input_ids"], query)
        total, count = total + float(nll.sum()), count + nll.numel()
    return total / max(count, 1)


register_resolvers()


@hydra.main(version_base="1.3", config_path="conf", config_name="export")
def main(cfg: DictConfig) -> None:
    with report_errors():
        out = export(cfg.ckpt_path, cfg.out, cfg.dtype, cfg.max_shard_gb, cfg.check_batches, cfg.adapters_only)
    print(f"exported to {out}")


if __name__ == "__main__":
    main()
