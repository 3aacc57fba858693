"""Every numeric and path setting is checked up front, with one error naming its full key."""

from __future__ import annotations

import math
import shutil
from fnmatch import fnmatchcase
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf, open_dict

from anyorder.checks import TRAIN_RULES, check_settings, keys
from anyorder.errors import ConfigError, DataError
from anyorder.eval.checkpoint import load_trained
from anyorder.evaluate import check_eval_settings
from anyorder.train import build_trainer

VARIANTS = [
    [],
    ["model=tiny_prenorm"],
    ["model=llada2_mini"],
    ["experiment=cell_masking"],
    ["experiment=scheduled_masking"],
    ["experiment=behaviour_cloning"],
    ["experiment=transfer"],
    ["experiment=autoregressive_grid"],
    ["experiment=demo_counts", "recipe=autoregressive_actions"],
    ["recipe=any_order_world_model"],
    ["strategy=ddp", "trainer.devices=2"],
]


def numeric_keys(cfg) -> list[str]:
    found = []
    for key in keys(cfg):
        value = OmegaConf.select(cfg, key, throw_on_resolution_failure=False)
        if isinstance(value, int | float) and not isinstance(value, bool):
            found.append(key)
    return found


@pytest.mark.parametrize("overrides", VARIANTS, ids=lambda o: " ".join(o) or "default")
def test_every_numeric_setting_has_a_rule_that_refuses_nan(compose_train, overrides: list[str]) -> None:
    cfg = compose_train(*overrides)
    check_settings(cfg, TRAIN_RULES)  # the shipped values pass
    exempt = {"trainer.devices"}  # Lightning's own check names it (an int, a list or "auto")
    for key in numeric_keys(cfg):
        if key in exempt:
            continue
        assert any(fnmatchcase(key, pattern) for pattern in TRAIN_RULES), f"no rule checks {key}"
        broken = cfg.copy()
        with open_dict(broken):
            OmegaConf.update(broken, key, float("nan"), force_add=True)
        with pytest.raises(ConfigError) as error:
            check_settings(broken, TRAIN_RULES)
        # the key itself, the list holding it, or a key that takes its value by interpolation
        field = error.value.field
        named = OmegaConf.select(broken, field)
        assert field == key or key.startswith(f"{field}.") or math.isnan(named), str(error.value)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("model.optimizer.lr", -1e-3, "model.optimizer.lr: must be a number in (0, inf)"),
        ("model.optimizer.betas", [0.9, 1.0], "model.optimizer.betas.1"),
        ("trainer.gradient_clip_val", float("inf"), "trainer.gradient_clip_val"),
        ("trainer.max_steps", 0, "trainer.max_steps: must be an integer in [1, inf) (or -1)"),
        ("masking.strategy.weights", [1.0, -0.5], "masking.strategy.weights.1"),
        ("trainer.val_check_interval", 0, "trainer.val_check_interval"),
        ("trainer.val_check_interval", 1.5, "trainer.val_check_interval"),
    ],
)
def test_out_of_range_numbers_name_the_key(compose_train, key: str, value: object, message: str) -> None:
    cfg = compose_train()
    OmegaConf.update(cfg, key, value)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        check_settings(cfg, TRAIN_RULES)


@pytest.mark.parametrize(
    ("key", "value", "pattern"),
    [
        ("trainer.precision", 17, r"^trainer: Precision 17 is invalid"),
        ("trainer.devices", 0, r"^trainer: .*devices=0"),
        ("trainer.accelerator", "abacus", r"^trainer: .*abacus"),
    ],
)
def test_settings_lightning_refuses_are_one_line_naming_the_trainer(
    compose_train, key: str, value: object, pattern: str
) -> None:
    cfg = compose_train()
    OmegaConf.update(cfg, key, value)
    with pytest.raises(ConfigError, match=pattern):
        build_trainer(cfg.trainer, logger=False)


def test_a_file_where_a_directory_belongs_is_named(compose_train, tmp_path: Path) -> None:
    cfg = compose_train()
    afile = tmp_path / "data.txt"
    afile.write_text("not a directory")
    OmegaConf.update(cfg, "paths.data_dir", str(afile))
    with pytest.raises(ConfigError, match=r"paths\.data_dir: .*data\.txt is a file, not a directory"):
        check_settings(cfg, TRAIN_RULES)


EVAL_CASES = [
    ("eval.num_episodes", 0, r"eval\.num_episodes"),
    ("eval.num_envs", 0, r"eval\.num_envs"),
    ("eval.chunk_size", 0, r"eval\.chunk_size"),
    ("eval.decode_steps", 0, r"eval\.decode_steps"),
    ("eval.occlusion_fractions", [], r"eval\.occlusion_fractions: must be a non-empty list"),
    ("eval.occlusion_fractions", [0.0, 1.5], r"eval\.occlusion_fractions"),
    ("eval.temperature", -1.0, r"eval\.temperature"),
    ("eval.top_p", 0.0, r"eval\.top_p"),
    ("eval.level", "BabyAI-Nowhere-v0", r"eval\.level: unknown environment"),
    ("eval.split", "train", r"eval\.split"),
    ("eval.device", "tpu:9", r"eval\.device"),
]


@pytest.mark.parametrize(("key", "value", "pattern"), EVAL_CASES, ids=[f"{k}={v}" for k, v, _ in EVAL_CASES])
def test_bad_eval_settings_fail_before_any_work(compose_train, key: str, value: object, pattern: str) -> None:
    cfg = compose_train("ckpt_path=none.ckpt", config_name="eval")
    OmegaConf.update(cfg, key, value)
    with pytest.raises(ConfigError, match=pattern):
        check_eval_settings(cfg)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_eval_on_cuda_without_cuda_is_refused(compose_train) -> None:
    cfg = compose_train("ckpt_path=none.ckpt", config_name="eval")
    OmegaConf.update(cfg, "eval.device", "cuda")
    with pytest.raises(ConfigError, match=r"eval\.device: cuda asked for, but this machine has no CUDA device"):
        check_eval_settings(cfg)


def test_a_checkpoint_copied_out_of_its_run_evaluates_on_its_own(trained_run, tmp_path: Path) -> None:
    alone = tmp_path / "elsewhere" / "model.ckpt"
    alone.parent.mkdir()
    shutil.copy(trained_run.checkpoint, alone)
    run = load_trained(alone, str(trained_run.spec.root))
    assert run.config.data.num_episodes == trained_run.config.data.num_episodes
    original = load_trained(trained_run.checkpoint, str(trained_run.spec.root))
    for name, tensor in original.module.state_dict().items():
        assert torch.equal(tensor, run.module.state_dict()[name])
    corrupt = tmp_path / "corrupt.ckpt"
    corrupt.write_bytes(alone.read_bytes()[:1000])
    with pytest.raises(DataError, match="corrupt checkpoint"):
        load_trained(corrupt, str(trained_run.spec.root))


def test_a_directory_that_is_not_a_sharded_checkpoint_is_named(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"not a sharded checkpoint \(no \.metadata or meta\.pt in it\)"):
        load_trained(tmp_path)
