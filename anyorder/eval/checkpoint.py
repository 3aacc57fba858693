"""Rebuild a trained run (data module, model) from its checkpoint alone.

Training stores the composed config in every checkpoint (:mod:`anyorder.run_config`), so a
checkpoint copied out of its run directory still evaluates; checkpoints written before
that fall back on the run's ``.hydra/config.yaml``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed.checkpoint as dcp
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch.distributed.checkpoint import FileSystemReader
from torch.distributed.checkpoint.metadata import TensorStorageMetadata

from anyorder.data.datamodule import TrajectoryDataModule
from anyorder.errors import DataError
from anyorder.models.build import build_module
from anyorder.models.module import AnyOrderModule
from anyorder.run_config import CONFIG_KEY

# the key under which a sharded checkpoint holds the module's tensors: Lightning's FSDP2
# strategy (ModelParallelStrategy) writes "state_dict", its FSDP1 strategy wrote "model"
SHARDED_MODEL_KEYS = ("state_dict", "model")


def sharded_model_tensors(path: Path) -> tuple[str, dict[str, TensorStorageMetadata]]:
    """The prefix and the module's tensors (name -> shape and dtype) of a sharded checkpoint
    directory, from its metadata alone: the optimizer's states are never read."""
    metadata = FileSystemReader(str(path)).read_metadata().state_dict_metadata
    for prefix in SHARDED_MODEL_KEYS:
        tensors = {
            key.removeprefix(f"{prefix}."): entry
            for key, entry in metadata.items()
            if key.startswith(f"{prefix}.") and isinstance(entry, TensorStorageMetadata)
        }
        if tensors:
            return prefix, tensors
    raise DataError(path, f"a sharded checkpoint without the module's tensors (no {' or '.join(SHARDED_MODEL_KEYS)})")


def read_weights(path: Path, into: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """The module's tensors from a Lightning checkpoint file, or from the directory that a
    sharded run writes (a torch.distributed.checkpoint), in one process with no process group.

    Only the module's tensors are read: a file is memory-mapped (its optimizer states stay on
    disk) and a directory is read key by key. ``into`` (tensors of a model skeleton, by name)
    receives a directory's tensors in place, so the host holds the weights once.
    """
    if not path.is_dir():
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)["state_dict"]
    prefix, stored = sharded_model_tensors(path)
    into = into or {}
    state = {
        key: into[key] if key in into else torch.empty(entry.size, dtype=entry.properties.dtype)
        for key, entry in stored.items()
    }
    dcp.load({prefix: state}, storage_reader=FileSystemReader(str(path)), no_dist=True)
    return state


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
    """The run's own config (stored in the checkpoint) defines data and model; weights from the checkpoint.

    A run that trained every weight of a pretrained backbone (full fine-tuning) is rebuilt as
    a skeleton and filled from its checkpoint: the base checkpoint is not read first.
    """
    path = Path(ckpt_path)
    if not path.exists():
        raise DataError(path, "checkpoint not found")
    config = read_config(path)
    if data_dir is not None:
        config.paths.data_dir = data_dir
    skeleton = OmegaConf.select(config, "model.backbone.pretrained_weights") is not None and not OmegaConf.select(
        config, "model.lora.r", default=0
    )
    if skeleton:
        config.model.backbone.pretrained_weights = False
    datamodule = instantiate(config.data)
    module = build_module(config, datamodule)
    if skeleton:
        module.backbone.to_empty(device="cpu")
    try:
        state = read_weights(path, into=module.state_dict() if skeleton else None)
    except DataError:
        raise
    except Exception as error:
        raise DataError(path, f"corrupt checkpoint: cannot read its weights ({type(error).__name__})") from None
    try:
        module.load_weights(state)
    except RuntimeError as error:
        raise DataError(path, f"does not fit the run's model ({str(error).splitlines()[0]})") from None
    return TrainedRun(config=config, datamodule=datamodule, module=module.to(device).eval(), checkpoint=path)
