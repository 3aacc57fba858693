"""The GPU paths (bf16 autocast, DDP and FSDP on a CUDA device, evaluation on the GPU).

Skipped where no CUDA device is present (CI, laptops); run them on a GPU node with
``pytest -m "" tests/test_gpu.py``. FSDP2 (``strategy=fsdp``) also runs on the CPU with two
processes: ``tests/test_sharded.py``.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from anyorder.eval.checkpoint import load_trained
from anyorder.eval.rollout import ModelPolicy, run_rollouts
from anyorder.eval.tasks import TaskEvaluator
from anyorder.train import build_module, train

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

SMALL = [
    "data.num_episodes=60",
    "data.shard_size=20",
    "data.num_workers=1",
    "data.window=2",
    "data.batch_size=8",
    "model.backbone.hidden_size=64",
    "model.backbone.num_layers=2",
    "model.backbone.num_heads=2",
    "model.backbone.intermediate_size=128",
    "trainer=gpu",
    "trainer.log_every_n_steps=1",
    "trainer.enable_progress_bar=false",
]


class LogitsRecorder(L.Callback):
    """Records the device and dtype of the backbone's logits in training (inside autocast)."""

    def __init__(self) -> None:
        self.seen: set[tuple[str, torch.dtype]] = set()

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        def record(_module: torch.nn.Module, _inputs: object, output: torch.Tensor) -> None:
            if pl_module.training:
                self.seen.add((output.device.type, output.dtype))

        pl_module.backbone.register_forward_hook(record)


def test_bf16_mixed_training_runs_on_the_gpu(compose_train) -> None:
    recorder = LogitsRecorder()
    cfg = compose_train(*SMALL, "trainer.max_steps=20", "trainer.val_check_interval=10")
    metrics = train(cfg, extra_callbacks=[recorder])
    assert recorder.seen == {("cuda", torch.bfloat16)}
    assert np.isfinite(metrics["train/loss"]) and np.isfinite(metrics["val/world_model_nll"])
    checkpoint = torch.load(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt", weights_only=False)
    assert checkpoint["global_step"] == 20
    assert all(t.dtype == torch.float32 for t in checkpoint["state_dict"].values() if t.is_floating_point())


def test_ddp_on_one_gpu_trains_and_resumes(compose_train) -> None:
    common = [*SMALL, "strategy=ddp", "trainer.val_check_interval=3"]
    first = compose_train(*common, "trainer.max_steps=6")
    train(first)
    run = Path(first.paths.output_dir)
    second = compose_train(*common, "trainer.max_steps=9", f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}")
    train(second)
    resumed = Path(second.paths.output_dir) / "checkpoints" / "last.ckpt"
    assert torch.load(resumed, weights_only=False)["global_step"] == 9


def test_fsdp_on_one_gpu_saves_a_sharded_checkpoint_that_resumes_and_evaluates(compose_train) -> None:
    common = [*SMALL, "strategy=fsdp", "trainer.val_check_interval=3"]
    first = compose_train(*common, "trainer.max_steps=6")
    train(first)
    run = Path(first.paths.output_dir)
    last = run / "checkpoints" / "last.ckpt"
    assert last.is_dir() and (last / "meta.pt").is_file()  # sharded: one directory, no full gather
    assert torch.load(last / "meta.pt", weights_only=False)["global_step"] == 6

    second = compose_train(*common, "trainer.max_steps=9", "ckpt_path=last")  # the same run directory
    train(second)
    assert torch.load(last / "meta.pt", weights_only=False)["global_step"] == 9

    (run / ".hydra").mkdir(exist_ok=True)
    OmegaConf.save(second, run / ".hydra" / "config.yaml")
    loaded = load_trained(last, second.paths.data_dir, device="cuda")
    assert loaded.module.device.type == "cuda"
    tokenizer = instantiate(second.data).tokenizer
    seeds = [9_000_000 + i for i in range(4)]
    # the sharded checkpoint, gathered on the GPU, plays as the same weights copied to the CPU
    on_gpu = run_rollouts(ModelPolicy(loaded.module, "cuda", 0.0), tokenizer, "BabyAI-GoToRedBall-v0", seeds, 4)
    on_cpu = run_rollouts(ModelPolicy(loaded.module.cpu(), "cpu", 0.0), tokenizer, "BabyAI-GoToRedBall-v0", seeds, 4)
    assert on_gpu.lengths == on_cpu.lengths and list(on_gpu.success) == list(on_cpu.success)


def test_gpu_and_cpu_forward_agree(compose_train) -> None:
    """The same weights give the same logits on both devices (fp32), so a model evaluated on the
    GPU is the model that was trained, whichever device trained it."""
    cfg = compose_train(*SMALL)
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    batch = next(iter(datamodule.val_dataloader()))
    torch.manual_seed(0)
    module = build_module(cfg, datamodule).eval()
    with torch.no_grad():
        on_cpu = module.backbone(batch["input_ids"], batch["attention_mask"])
        module.cuda()
        on_gpu = module.backbone(batch["input_ids"].cuda(), batch["attention_mask"].cuda()).cpu()
    torch.testing.assert_close(on_gpu, on_cpu, rtol=1e-3, atol=1e-3)
    assert (on_gpu.argmax(-1) == on_cpu.argmax(-1)).float().mean() > 0.999


def test_task_evaluation_on_the_gpu_matches_the_cpu(compose_train) -> None:
    """anyorder-eval with eval.device=cuda: metrics live beside the model and occlusion draws
    come from a CPU generator, so both devices score the same questions."""
    cfg = compose_train(*SMALL)
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    torch.manual_seed(0)
    module = build_module(cfg, datamodule).eval()
    vocabulary = datamodule.tokenizer.vocabulary
    results = {}
    for device in ("cpu", "cuda"):
        evaluator = TaskEvaluator(module.to(device), vocabulary, decode_steps=2, occlusion_fractions=(0.0, 0.5))
        results[device] = evaluator.run(datamodule.val_dataloader(), max_batches=2)
    cpu, gpu = results["cpu"], results["cuda"]
    assert gpu["world_model"]["nll_per_token"] == pytest.approx(cpu["world_model"]["nll_per_token"], rel=1e-3)
    assert gpu["policy"]["accuracy"] == pytest.approx(cpu["policy"]["accuracy"], abs=0.02)
    for fraction in ("0.0", "0.5"):
        gpu_accuracy = gpu["robustness_action_accuracy"][fraction]
        assert gpu_accuracy == pytest.approx(cpu["robustness_action_accuracy"][fraction], abs=0.02)
