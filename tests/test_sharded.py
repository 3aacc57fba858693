"""Sharded LLaDA2 training (``strategy=fsdp``, FSDP2) with two processes on the CPU (gloo).

Each run is the real command line, launched as a user launches it: Lightning starts the
second process itself. The tiny LLaDA2.0-MoE fixture stands in for LLaDA2.0-mini.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from safetensors.torch import load_file

from anyorder.eval.checkpoint import load_trained, read_weights
from anyorder.export import export
from anyorder.models.build import build_module
from anyorder.models.llada2 import from_pretrained
from anyorder.models.lora import load_adapters

REPO = Path(__file__).resolve().parents[1]
PROBES = Path(__file__).resolve().parent / "probes"
FIXTURE = REPO.parent / "shared" / "fixtures" / "llada2_tiny"
pytestmark = pytest.mark.skipif(
    not (FIXTURE / "model.safetensors").is_file(),
    reason=f"the LLaDA2 fixture is not at {FIXTURE} (it comes with ../shared beside the checkout)",
)
TINY_DATA = ["data.num_episodes=60", "data.shard_size=20", "data.window=1", "data.batch_size=4"]
SHARDED = [
    *TINY_DATA,
    "model=llada2_mini",
    f"model.path={FIXTURE}",
    "strategy=fsdp",
    "trainer.devices=2",
    "trainer.limit_val_batches=1",
    "trainer.enable_progress_bar=false",
    "callbacks.closed_loop_eval=null",
    "+trainer.enable_model_summary=false",
]


def launch(run: Path, data_root: Path, *overrides: str) -> str:
    """``anyorder-train`` with two processes in ``run``; returns its output."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(PROBES), os.environ.get("PYTHONPATH")]))}
    command = [
        sys.executable, "-m", "anyorder.train", *SHARDED, f"paths.data_dir={data_root}", f"hydra.run.dir={run}",
        *overrides,
    ]  # fmt: skip
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout + result.stderr


def logits(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(ids)


def test_full_fine_tuning_on_two_processes(compose_train, data_root: Path, tmp_path: Path) -> None:
    """Rank 1 never reads the checkpoint, the first step's loss is the unsharded model's, a
    sharded checkpoint resumes to the weights of an uninterrupted run, and the evaluation and
    the export read the sharded directory."""
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    probe = [
        "+callbacks.probe._target_=sharded_probe.StepProbe", f"+callbacks.probe.directory={tmp_path}",
        "+callbacks.probe.copy_after=2", "callbacks.last_checkpoint.every_n_train_steps=2",
    ]  # fmt: skip
    launch(whole, data_root, "trainer.max_steps=4", "trainer.val_check_interval=4", *probe)

    rank0, rank1 = (whole / "train.log").read_text(), (whole / "train_ddp_process_1.log").read_text()
    assert "rank 0 reads" in rank0 and "rank 1 builds LLaDA2 on the meta device" in rank1
    assert "reads" not in rank1.replace("rank 1 builds", "")

    cfg = compose_train(*TINY_DATA, "model=llada2_mini", f"model.path={FIXTURE}")
    unsharded = build_module(cfg, instantiate(cfg.data))
    for rank in (0, 1):
        record = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        with torch.no_grad():
            expected = unsharded._objective(record["batch"]).loss
        torch.testing.assert_close(record["loss"], expected, rtol=1e-5, atol=1e-6)

    midway = tmp_path / "after_step2.ckpt"
    assert midway.is_dir() and {p.name for p in midway.iterdir()} >= {"__0_0.distcp", "__1_0.distcp", "meta.pt"}
    launch(resumed, data_root, "trainer.max_steps=4", "trainer.val_check_interval=4", f"ckpt_path={midway}")
    last = resumed / "checkpoints" / "last.ckpt"
    assert not [p.name for p in last.parent.iterdir() if p.suffix in (".partial", ".previous")]  # swapped in whole
    continued, uninterrupted = read_weights(last), read_weights(whole / "checkpoints" / "last.ckpt")
    assert continued.keys() == uninterrupted.keys() == unsharded.state_dict().keys()
    moved = 0
    for key, value in uninterrupted.items():
        torch.testing.assert_close(continued[key], value, rtol=0, atol=1e-7, msg=key)
        moved += not torch.equal(value, unsharded.state_dict()[key])
    assert moved > len(uninterrupted) // 2  # it trained: most tensors left the pretrained weights

    trained = load_trained(last)
    assert trained.config.model.backbone.pretrained_weights is False  # a skeleton, filled from the run
    ids = torch.randint(7, 120, (2, 16))
    exported = export(last, tmp_path / "exported", dtype="float32")
    torch.testing.assert_close(logits(from_pretrained(exported), ids), logits(trained.module.backbone, ids))
    assert "model.layers.2.mlp.experts.0.up_proj.weight" in load_file(exported / "model.safetensors")


def test_lora_on_two_processes_checkpoints_its_adapters_alone(data_root: Path, tmp_path: Path) -> None:
    run = tmp_path / "lora"
    launch(run, data_root, "model.lora.r=4", "trainer.max_steps=2", "trainer.val_check_interval=2")
    last = run / "checkpoints" / "last.ckpt"
    assert last.is_file()  # the adapters, gathered into one file
    checkpoint = torch.load(last, weights_only=True)
    adapters = {
        f"backbone.model.layers.{layer}.attention.{projection}.lora_{matrix}"
        for layer in range(3)
        for projection in ("query_key_value", "dense")
        for matrix in "AB"
    }
    assert set(checkpoint["state_dict"]) == adapters
    assert any(checkpoint["state_dict"][key].abs().sum() > 0 for key in adapters if key.endswith("lora_B"))

    launch(run, data_root, "model.lora.r=4", "trainer.max_steps=3", "trainer.val_check_interval=3", "ckpt_path=last")
    assert torch.load(last, weights_only=True)["global_step"] == 3
    trained = load_trained(last)
    ids = torch.randint(7, 120, (2, 16))
    expected = logits(trained.module.backbone.float(), ids)  # bf16 base made float32, exactly: the same function
    merged = from_pretrained(export(last, tmp_path / "exported", dtype="float32"))  # merged in float32
    torch.testing.assert_close(logits(merged, ids), expected, rtol=1e-5, atol=1e-5)
    adapters = export(last, tmp_path / "adapters", adapters_only=True)  # or the adapters alone, onto the base
    rebuilt = load_adapters(from_pretrained(FIXTURE, dtype="bfloat16"), adapters)
    torch.testing.assert_close(logits(rebuilt.float(), ids), expected, rtol=1e-6, atol=1e-6)
