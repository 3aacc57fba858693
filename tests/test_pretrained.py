"""Pretrained backbones through the exact hf_local / llada2_mini code paths, on tiny saved checkpoints."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hf_checkpoints import save_bert, save_remote_code_model, save_tokenizer
from hydra.utils import instantiate

from anyorder.data.tokenizer import TrajectoryTokenizer
from anyorder.data.vocabulary import text_vocabulary
from anyorder.errors import ConfigError, DataError, describe
from anyorder.train import build_module, train

TINY_DATA = ["data.num_episodes=60", "data.shard_size=20", "data.window=1", "data.batch_size=4"]


def test_text_vocabulary_uses_the_models_own_ids_and_mask(tmp_path: Path, small_spec) -> None:
    save_bert(tmp_path)
    tokenizer = save_tokenizer(tmp_path)
    vocab = text_vocabulary(tmp_path)
    assert vocab.mask_id == tokenizer.convert_tokens_to_ids("<|mask|>")
    assert vocab.object_ids[6] == tokenizer.convert_tokens_to_ids("ball")
    assert vocab.action_ids[2] == tokenizer.convert_tokens_to_ids("forward")
    assert vocab.color_none_id == vocab.state_none_id == tokenizer.convert_tokens_to_ids("none")
    from anyorder.data.episodes import read_shard

    episode = read_shard(small_spec.shard_path("train", 0))[0]
    text = TrajectoryTokenizer(vocab, window=2, mission_length=12)
    batch = text.encode_window(episode.mission, episode.observations[:2], episode.directions[:2], episode.actions[:2])
    decoded = text.decode_window(batch)
    assert decoded.mission == episode.mission
    np.testing.assert_array_equal(decoded.observations, episode.observations[:2])
    np.testing.assert_array_equal(decoded.actions, episode.actions[:2])


def test_words_that_are_not_one_token_are_named(tmp_path: Path) -> None:
    save_bert(tmp_path, drop=("lava", "toggle"))
    with pytest.raises(ConfigError, match="'lava'") as error:
        text_vocabulary(tmp_path)
    assert "'toggle'" in str(error.value)


def test_a_missing_model_directory_says_what_it_must_contain(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"config\.json") as error:
        text_vocabulary(tmp_path / "LLaDA2.0-mini-preview")
    assert error.value.path == tmp_path / "LLaDA2.0-mini-preview"
    save_tokenizer(tmp_path)  # tokenizer but no weights
    with pytest.raises(DataError, match="weights"):
        text_vocabulary(tmp_path)


def test_llada2_without_weights_fails_at_once_with_one_line(tmp_path: Path, data_root: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "anyorder.train", "model=llada2_mini", f"model.path={tmp_path / 'missing'}",
         f"paths.data_dir={data_root}", *TINY_DATA],
        capture_output=True, text=True, cwd=tmp_path, env={**os.environ, "HYDRA_FULL_ERROR": "0"}, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr
    [line] = [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]
    assert str(tmp_path / "missing") in line and "config.json" in line


def test_hf_local_trains_with_the_text_vocabulary(compose_train, tmp_path: Path) -> None:
    checkpoint = save_bert(tmp_path / "bert")
    cfg = compose_train(*TINY_DATA, "model=hf_local", f"model.path={checkpoint}", "+trainer.fast_dev_run=true")
    metrics = train(cfg)
    assert np.isfinite(metrics["train/loss"])
    datamodule = instantiate(cfg.data)
    assert datamodule.tokenizer.vocabulary.mask_id == 4  # "<|mask|>", the model's own
    module = build_module(cfg, datamodule)
    assert module.backbone.vocab_size == datamodule.tokenizer.vocabulary.size + 3


def test_lora_trains_only_the_adapters(compose_train, tmp_path: Path) -> None:
    checkpoint = save_bert(tmp_path / "bert")
    cfg = compose_train(*TINY_DATA, "model=hf_local", f"model.path={checkpoint}", "model.lora.r=4")
    module = build_module(cfg, instantiate(cfg.data))
    trainable = {name for name, p in module.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in name for name in trainable)
    frozen = sum(p.numel() for p in module.parameters() if not p.requires_grad)
    assert frozen > 10 * sum(p.numel() for p in module.parameters() if p.requires_grad)


def test_hf_local_loads_checkpoint_code_only_when_trusted(compose_train, tmp_path: Path) -> None:
    checkpoint = save_remote_code_model(tmp_path / "remote")
    causal = [
        "model=hf_local",
        f"model.path={checkpoint}",
        "model.backbone.model_class.path=transformers.AutoModelForCausalLM",
    ]
    untrusted = compose_train(*TINY_DATA, *causal)
    with pytest.raises(Exception) as error:
        build_module(untrusted, instantiate(untrusted.data))
    assert "model.trust_remote_code=true" in describe(error.value)
    cfg = compose_train(
        *TINY_DATA,
        *causal,
        "model.trust_remote_code=true",
        "model.backbone.dtype=bfloat16",
        "+trainer.fast_dev_run=true",
    )
    module = build_module(cfg, instantiate(cfg.data))
    assert type(module.backbone.model).__name__ == "TinyDiffModel"
    assert next(module.backbone.parameters()).dtype == torch.bfloat16
    metrics = train(cfg)
    assert np.isfinite(metrics["train/loss"])


def test_fsdp_config_composes_and_instantiates(compose_train) -> None:
    from lightning.pytorch.strategies import ModelParallelStrategy

    cfg = compose_train("strategy=fsdp", "trainer=gpu")
    strategy = instantiate(cfg.trainer.strategy)
    assert isinstance(strategy, ModelParallelStrategy) and strategy.broadcast_from_rank0
    assert cfg.trainer.strategy.save_distributed_checkpoint  # every weight trains: each rank writes its shard
