"""Shared fixtures: a small generated dataset and the real Hydra config, composed."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from anyorder.data.generate import DatasetSpec, generate_dataset

LEVEL = "BabyAI-GoToRedBall-v0"


@pytest.fixture(scope="session")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding a 60-episode GoToRedBall dataset, generated once per session."""
    root = tmp_path_factory.mktemp("data")
    generate_dataset(DatasetSpec(LEVEL, 60, seed=0, root=root, shard_size=20), num_workers=1, progress=False)
    return root


@pytest.fixture(scope="session")
def training_spec(tmp_path_factory: pytest.TempPathFactory) -> DatasetSpec:
    """400 episodes: enough for a tiny model to learn a policy in seconds."""
    spec = DatasetSpec(LEVEL, 400, seed=0, root=tmp_path_factory.mktemp("training-data"))
    generate_dataset(spec, num_workers=2, progress=False)
    return spec


@pytest.fixture(scope="session")
def small_spec(data_root: Path) -> DatasetSpec:
    return DatasetSpec(LEVEL, 60, seed=0, root=data_root, shard_size=20)


ComposeFn = Callable[..., DictConfig]


@pytest.fixture
def compose_train(tmp_path: Path, data_root: Path) -> ComposeFn:
    """Compose ``train.yaml`` with overrides, as the CLI would, outputs under ``tmp_path``."""

    def _compose(*overrides: str, config_name: str = "train") -> DictConfig:
        GlobalHydra.instance().clear()
        with initialize_config_module(config_module="anyorder.conf", version_base="1.3"):
            cfg = compose(
                config_name=config_name,
                overrides=[f"paths.data_dir={data_root}", f"paths.log_dir={tmp_path}", *overrides],
                return_hydra_config=True,
            )
        HydraConfig.instance().set_config(cfg)
        with open_dict(cfg):
            cfg.paths.output_dir = str(tmp_path / "run")
            del cfg.hydra
        return cfg

    yield _compose
    GlobalHydra.instance().clear()
