"""Shared fixtures: a small generated dataset and the real Hydra config, composed."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

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

SMALL_MODEL = [
    "data.window=2",
    "model.backbone.hidden_size=64",
    "model.backbone.num_layers=2",
    "model.backbone.num_heads=2",
    "model.backbone.intermediate_size=128",
]


@pytest.fixture(scope="session")
def tiny_run() -> list[str]:
    """The smallest job that still trains: 60 episodes, window 2, a 1-layer 32-wide encoder."""
    return [
        "data.num_episodes=60",
        "data.shard_size=20",
        "data.window=2",
        "data.batch_size=8",
        "model.backbone.hidden_size=32",
        "model.backbone.num_layers=1",
        "model.backbone.num_heads=2",
        "model.backbone.intermediate_size=64",
    ]


def compose_config(data_dir: Path, output_dir: Path, *overrides: str, config_name: str = "train") -> DictConfig:
    """``config_name`` composed as the CLI would, with ``paths.output_dir`` set to ``output_dir``."""
    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="anyorder.conf", version_base="1.3"):
        cfg = compose(
            config_name=config_name,
            overrides=[f"paths.data_dir={data_dir}", f"paths.log_dir={output_dir.parent}", *overrides],
            return_hydra_config=True,
        )
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        del cfg.hydra
    GlobalHydra.instance().clear()
    return cfg


@dataclass
class TrainedRun:
    config: DictConfig
    directory: Path
    metrics: dict[str, float]
    spec: DatasetSpec

    @property
    def checkpoint(self) -> Path:
        return self.directory / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="session")
def trained_run(training_spec: DatasetSpec, tmp_path_factory: pytest.TempPathFactory) -> TrainedRun:
    """A small model trained for 400 steps (~30 s), shared by the learning and evaluation tests."""
    from anyorder.train import train

    directory = tmp_path_factory.mktemp("trained") / "run"
    cfg = compose_config(
        training_spec.root,
        directory,
        *SMALL_MODEL,
        "data.num_episodes=400",
        "data.batch_size=16",
        "trainer.max_steps=400",
        "trainer.val_check_interval=200",
        "model.optimizer.lr=3e-3",
        "model.lr_scheduler.num_warmup_steps=10",
    )  # the default masking: the shipped mixture, asking the policy query
    metrics = train(cfg)
    (directory / ".hydra").mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, directory / ".hydra" / "config.yaml")  # what Hydra saves for a CLI run
    return TrainedRun(cfg, directory, metrics, training_spec)


@pytest.fixture
def compose_train(tmp_path: Path, data_root: Path) -> ComposeFn:
    """Compose ``train.yaml`` with overrides, as the CLI would, outputs under ``tmp_path``."""

    def _compose(*overrides: str, config_name: str = "train") -> DictConfig:
        return compose_config(data_root, tmp_path / "run", *overrides, config_name=config_name)

    return _compose


@pytest.fixture
def sweep_jobs(compose_train: ComposeFn) -> Callable[[str], list[tuple[dict[str, str], DictConfig]]]:
    """Every job of an ``experiment/`` sweep, as Hydra's basic sweeper would expand its
    ``hydra.sweeper.params`` (a cartesian product, the last key fastest): each job's overrides and
    its composed config."""
    from importlib.resources import files
    from itertools import product

    def _expand(experiment: str) -> list[tuple[dict[str, str], DictConfig]]:
        sweep = OmegaConf.load(str(files("anyorder.conf").joinpath(f"experiment/{experiment}.yaml")))
        params = {key: str(value).split(",") for key, value in sweep.hydra.sweeper.params.items()}
        jobs = [dict(zip(params, values, strict=True)) for values in product(*params.values())]
        return [(job, compose_train(f"experiment={experiment}", *(f"{k}={v}" for k, v in job.items()))) for job in jobs]

    return _expand
