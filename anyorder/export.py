"""``anyorder-export``: a fine-tuned LLaDA2.0 run back as a LLaDA2.0 checkpoint directory.

This is the inverse of loading: the run's checkpoint (a file, or FSDP's sharded directory)
is applied to the base model it was trained from, LoRA adapters are merged, and the model
is written with the original key names (experts split again) so that the upstream
inference code loads it as it loads the released weights.

anyorder-export ckpt_path=outputs/train/<run>/checkpoints/last.ckpt out=exports/llada2-babyai
"""

from __future__ import annotations

from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig

from anyorder.errors import ConfigError, report_errors
from anyorder.eval.checkpoint import load_trained
from anyorder.models.llada2 import LLaDA2MoE
from anyorder.models.llada2_checkpoint import save_pretrained
from anyorder.models.lora import merge_lora
from anyorder.naming import register_resolvers


def export(ckpt_path: str | Path, out: str | Path, dtype: str = "bfloat16", max_shard_gb: float = 5.0) -> Path:
    """Write the run of ``ckpt_path`` to ``out``; returns ``out``."""
    run = load_trained(ckpt_path)
    backbone = run.module.backbone
    if not isinstance(backbone, LLaDA2MoE):
        raise ConfigError(
            "ckpt_path", f"export writes LLaDA2.0 checkpoints; this run's backbone is a {type(backbone).__name__}"
        )
    merge_lora(backbone)
    source = run.config.model.get("path")
    return save_pretrained(
        backbone, out, source=source, dtype=getattr(torch, dtype), max_shard_bytes=int(max_shard_gb * 2**30)
    )


register_resolvers()


@hydra.main(version_base="1.3", config_path="conf", config_name="export")
def main(cfg: DictConfig) -> None:
    with report_errors():
        out = export(cfg.ckpt_path, cfg.out, cfg.dtype, cfg.max_shard_gb)
    print(f"exported to {out}")


if __name__ == "__main__":
    main()
