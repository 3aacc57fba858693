"""Training throughput of the full pipeline vs the bare backbone, and their ratio.

Full pipeline: Parquet shards -> TrajectoryDataModule -> MaskingCallback -> AnyOrderModule
forward/backward/AdamW step, run by a Lightning Trainer. Bare backbone: the same model and
optimizer on one pre-made, pre-masked batch of the same shape. Target: ratio >= 0.9.

    python benchmarks/pipeline.py [--steps 30] [--window 4] [--batch-size 32]
    python benchmarks/pipeline.py --device cuda --batch-size 256      # bf16 autocast on a GPU
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
from hydra import compose, initialize_config_module
from hydra.utils import instantiate

from anyorder.data.datamodule import TrajectoryDataModule
from anyorder.models.build import build_module
from anyorder.models.module import AnyOrderModule


class StepTimer(L.Callback):
    """Wall time of the optimizer steps after ``warmup`` steps."""

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.start: float | None = None
        self.end: float | None = None
        self.steps = 0

    def on_train_batch_start(self, trainer: L.Trainer, *args: object) -> None:
        if trainer.global_step == self.warmup:
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, *args: object) -> None:
        if self.start is not None:
            self.steps += 1
            self.end = time.perf_counter()


def build(args: argparse.Namespace, data_dir: Path) -> tuple[TrajectoryDataModule, AnyOrderModule, object]:
    overrides = [
        f"paths.data_dir={data_dir}",
        f"data.window={args.window}",
        f"data.batch_size={args.batch_size}",
        f"data.num_episodes={args.episodes}",
        f"data.loader_workers={args.loader_workers}",
    ]
    with initialize_config_module(config_module="anyorder.conf", version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    L.seed_everything(0, verbose=False)
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    return datamodule, build_module(cfg, datamodule), instantiate(cfg.masking)


def pipeline_tokens_per_second(args: argparse.Namespace, data_dir: Path) -> tuple[float, int]:
    datamodule, module, masking = build(args, data_dir)
    timer = StepTimer(args.warmup)
    trainer = L.Trainer(
        accelerator=args.device,
        devices=1,
        precision="bf16-mixed" if args.device == "cuda" else "32-true",
        max_steps=args.warmup + args.steps,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[masking, timer],
        gradient_clip_val=1.0,
        use_distributed_sampler=False,
    )
    trainer.fit(module, datamodule=datamodule)
    length = datamodule.tokenizer.sequence_length
    return timer.steps * args.batch_size * length / (timer.end - timer.start), length


def bare_tokens_per_second(args: argparse.Namespace, data_dir: Path) -> float:
    datamodule, module, masking = build(args, data_dir)
    datamodule.setup("fit")
    batch = next(iter(datamodule.train_dataloader()))
    masking.apply(batch, step=0, generator=torch.Generator().manual_seed(0))
    device = torch.device(args.device)
    batch = {key: value.to(device) for key, value in batch.items()}
    inputs = batch["input_ids"].masked_fill(batch["mask"], module.hparams.mask_token_id)
    targets = batch["input_ids"][batch["mask"]]
    backbone = module.backbone.to(device).train()
    optimizer = torch.optim.AdamW(backbone.parameters(), lr=1e-3)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    for step in range(args.warmup + args.steps):
        if step == args.warmup:
            synchronize(device)
            start = time.perf_counter()
        with autocast:
            logits = backbone(inputs, batch["attention_mask"])
        loss = torch.nn.functional.cross_entropy(logits[batch["mask"]].float(), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(backbone.parameters(), 1.0)
        optimizer.step()
    synchronize(device)
    return args.steps * inputs.numel() / (time.perf_counter() - start)


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so that wall-clock intervals measure it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30, help="timed optimizer steps per measurement")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--window", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--episodes", type=int, default=300)
    parser.add_argument("--loader-workers", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=2, help="alternating measurements of each; best kept")
    parser.add_argument("--data-dir", type=Path, default=None, help="default: a temporary directory")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="cuda: bf16 autocast for both")
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())

    with tempfile.TemporaryDirectory() as tmp:
        data_dir = args.data_dir or Path(tmp)
        pipeline, bare = [], []
        for _ in range(args.repeats):  # alternate, so drift on a shared machine hits both
            tokens, length = pipeline_tokens_per_second(args, data_dir)
            pipeline.append(tokens)
            bare.append(bare_tokens_per_second(args, data_dir))
    best_pipeline, best_bare = max(pipeline), max(bare)
    threads = torch.get_num_threads()
    print(f"device={args.device} threads={threads} window={args.window} batch={args.batch_size} seq_len={length}")
    print(f"full pipeline : {best_pipeline:10.0f} tokens/s   (runs: {', '.join(f'{t:.0f}' for t in pipeline)})")
    print(f"bare backbone : {best_bare:10.0f} tokens/s   (runs: {', '.join(f'{t:.0f}' for t in bare)})")
    print(f"ratio         : {best_pipeline / best_bare:10.3f}   (target >= 0.9)")


if __name__ == "__main__":
    main()
