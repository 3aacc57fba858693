"""The model node of the config, completed with what only the data's tokenizer knows."""

from __future__ import annotations

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from anyorder.data.datamodule import TrajectoryDataModule
from anyorder.models.module import AnyOrderModule

# Settings of a model family that several nodes read by interpolation (the backbone, the text
# vocabulary): `model.path=... model.lora.r=16` on the command line; not module arguments.
MODEL_FAMILY_SETTINGS = ("path", "trust_remote_code", "lora")


def build_module(cfg: DictConfig, datamodule: TrajectoryDataModule) -> AnyOrderModule:
    """The model node, completed with what only the tokenizer knows (vocabulary, length)."""
    tokenizer = datamodule.tokenizer
    vocabulary = tokenizer.vocabulary
    settings = OmegaConf.to_container(cfg.model, resolve=True)
    for key in MODEL_FAMILY_SETTINGS:
        settings.pop(key, None)
    node = OmegaConf.create({"model": settings}).model  # keeps its key, so errors name `model.<field>`
    return instantiate(
        node,
        backbone={"vocab_size": vocabulary.size, "max_length": tokenizer.sequence_length},
        mask_token_id=vocabulary.mask_id,
        action_token_ids=[int(i) for i in vocabulary.action_ids],
    )
