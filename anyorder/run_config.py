"""The composed training config, stored inside every checkpoint so that a checkpoint is self-contained."""

from __future__ import annotations

import lightning as L
from omegaconf import DictConfig, OmegaConf

CONFIG_KEY = "anyorder_config"  # the composed training config (YAML) inside a checkpoint


class StoreConfig(L.Callback):
    """Writes the run's composed config into every checkpoint, so that it evaluates on its own."""

    def __init__(self, config: DictConfig) -> None:
        self.config_yaml = OmegaConf.to_yaml(config)

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        checkpoint[CONFIG_KEY] = self.config_yaml
