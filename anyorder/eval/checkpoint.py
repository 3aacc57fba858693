"""Rebuild a trained run (data module, model) from its checkpoint alone.

Training stores the composed config in every checkpoint (:mod:`anyorder.run_config`), so a
checkpoint copied out of its run directory still evaluates; checkpoints written before
that fall back on the run's ``.hydra/config.yaml``.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

from anyorder.data.datamodule import TrajectoryDataModule
from anyorder.errors import DataError
from anyorder.models.build import build_module
from anyorder.models.module import AnyOrderModule
from anyorder.run_config import CONFIG_KEY


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """The module's state dict from a Lightning checkpoint file, or from the directory that
    FSDP's sharded state dict writes (a torch.distributed.checkpoint of ``model`` and optimizer
    states beside ``meta.pt``), gathered into one process so that a sharded run is evaluated
    on one device with no process group."""
    if not path.is_dir():
        return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    with tempfile.TemporaryDirectory() as tmp:
        gathered = Path(tmp) / "gathered.pt"
        dcp_to_torch_save(path, gathered)
        return torch.load(gathered, map_location="cpu", weights_only=True)["model"]


def read_config(path: Path) -> DictConfig:
    """The config stored in the checkpoint, else the run directory's ``.hydra/config.yaml``."""
    metadata = path / "meta.pt" if path.is_dir() else path  # a sharded checkpoint keeps it in meta.pt
    if path.is_dir() and not (metadata.is_file() or (path / ".metadata").is_file()):
        raise DataError(path, "a directory, but not a sharded checkpoint (no .metadata or meta.pt in it)")
    stored = None
    if metadata.is_file():
        try:
            stored = torch.load(metadata, map_location="cpu", weights_only=True).get(CONFIG_KEY)
        except Exception as error:
            raise DataError(metadata, f"corrupt checkpoint: cannot be read ({type(error).__name__})") from None
    if stored is not None:
        return OmegaConf.create(stored)
    config_file = path.resolve().parent.parent / ".hydra" / "config.yaml"
    if not config_file.is_file():
        raise DataError(path, f"the checkpoint holds no config and its run directory has none ({config_file})")
    return OmegaConf.load(config_file)


@dataclass
class TrainedRun:
    config: DictConfig
    datamodule: TrajectoryDataModule
    module: AnyOrderModule
    checkpoint: Path


def load_trained(ckpt_path: str | Path, data_dir: str | None = None, device: str = "cpu") -> TrainedRun:
    """The run's own config (stored in the checkpoint) defines data and model; weights from the checkpoint."""
    path = Path(ckpt_path)
    if not path.exists():
        raise DataError(path, "checkpoint not found")
    config = read_config(path)
    if data_dir is not None:
        config.paths.data_dir = data_dir
    datamodule = instantiate(config.data)
    module = build_module(config, datamodule)
    try:
        state = read_weights(path)
    except Exception as error:
        raise DataError(path, f"corrupt checkpoint: cannot read its weights ({type(error).__name__})") from None
    try:
        module.load_weights(state)
    except RuntimeError as error:
        raise DataError(path, f"does not fit the run's model ({str(error).splitlines()[0]})") from None
    return TrainedRun(config=config, datamodule=datamodule, module=module.to(device).eval(), checkpoint=path)
