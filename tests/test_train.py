"""Training through the real composed config: fast_dev_run, learning beats chance, resume."""

from __future__ import annotations

import collections
import json
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Timer
from lightning.pytorch.callbacks import timer as lightning_timer
from omegaconf import open_dict
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from anyorder.data.episodes import read_meta, read_shard
from anyorder.errors import DataError
from anyorder.eval.baselines import BaselineEvaluator, TrainingPriors
from anyorder.masking import MaskingCallback
from anyorder.results import JOB_FILE, record_subdir
from anyorder.train import build_module, finished_job, train

SMALL = [
    "data.num_episodes=60",
    "data.shard_size=20",
    "data.num_workers=1",
    "data.window=2",
    "model.backbone.hidden_size=64",
    "model.backbone.num_layers=2",
    "model.backbone.num_heads=2",
    "model.backbone.intermediate_size=128",
]


@pytest.mark.parametrize(
    "overrides",
    [
        [],
        ["experiment=cell_masking"],
        ["experiment=attribute_masking"],
        ["experiment=scheduled_masking"],
        ["masking=uniform", "masking.prob=0.3"],
        ["masking=step", "schedule@masking.schedule=linear"],
        ["masking=action_inpainting", "strategy=ddp"],
        ["masking=mixture_inverse"],
        ["trainer=gpu"],
        ["model=tiny_prenorm"],
        ["data=minigrid_doorkey8x8"],
        ["experiment=transfer"],
    ],
)
def test_config_composes_and_instantiates(compose_train, overrides: list[str]) -> None:
    cfg = compose_train(*SMALL, *overrides)
    datamodule = instantiate(cfg.data)
    module = build_module(cfg, datamodule)
    assert isinstance(instantiate(cfg.masking), MaskingCallback)
    assert module.backbone.vocab_size == datamodule.tokenizer.vocabulary.size
    for node in cfg.callbacks.values():
        instantiate(node)
    if cfg.trainer.accelerator == "cpu":
        trainer = instantiate(cfg.trainer, logger=False, enable_progress_bar=False)
        assert trainer.max_steps == cfg.trainer.max_steps


def test_the_inverse_mixture_trains_the_inverse_question_far_more_often(compose_train) -> None:
    """masking=mixture_inverse exists because the default hides a_{T-1} (the inverse question's
    answer) in few samples: it must hide it in at least twice as many."""
    from anyorder.masking.queries import inverse_target

    cfg = compose_train(*SMALL)
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    batch = next(iter(datamodule.train_dataloader()))
    batch = {key: value.repeat(64, 1) for key, value in batch.items()}
    target = inverse_target(batch)
    rows = target.any(dim=1)
    share = {}
    for masking in ("mixture", "mixture_inverse"):
        callback = instantiate(compose_train(*SMALL, f"masking={masking}").masking)
        callback.apply(batch, 0, torch.Generator().manual_seed(0))
        share[masking] = float((batch["mask"] & target).any(dim=1)[rows].float().mean())
    assert share["mixture_inverse"] > 2 * share["mixture"] > 0


def test_pre_ln_encoder_ignores_padded_positions() -> None:
    from anyorder.models.backbones import PreNormEncoder

    torch.manual_seed(0)
    encoder = PreNormEncoder(vocab_size=20, max_length=12, hidden_size=16, num_layers=2, num_heads=2).eval()
    ids = torch.randint(0, 20, (3, 12))
    attention = torch.ones_like(ids, dtype=torch.bool)
    attention[:, 9:] = False
    other = ids.clone()
    other[:, 9:] = (ids[:, 9:] + 7) % 20  # what sits in the padding must not matter
    with torch.no_grad():
        first, second = encoder(ids, attention), encoder(other, attention)
    torch.testing.assert_close(first[:, :9], second[:, :9])
    assert first.shape == (3, 12, 20) and not torch.allclose(first[:, 9:], second[:, 9:])


def test_fast_dev_run(compose_train) -> None:
    cfg = compose_train(*SMALL, "+trainer.fast_dev_run=true")
    metrics = train(cfg)
    assert torch.isfinite(torch.tensor(metrics["train/loss"]))


def test_a_callback_set_to_null_is_switched_off(compose_train) -> None:
    cfg = compose_train(*SMALL, "+trainer.fast_dev_run=true", "callbacks.closed_loop_eval=null")
    seen: list[list[str]] = []

    class Spy(L.Callback):
        def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
            seen.append([type(c).__name__ for c in trainer.callbacks])

    train(cfg, extra_callbacks=[Spy()])
    assert seen and "ClosedLoopEvalCallback" not in seen[0] and "MaskingCallback" in seen[0]


def majority_action_share(spec_dir: Path) -> float:
    meta = read_meta(spec_dir)
    actions = collections.Counter()
    for name in meta["splits"]["val"]["shards"]:
        for episode in read_shard(spec_dir / name):
            actions.update(episode.actions.tolist())
    return max(actions.values()) / sum(actions.values())


def test_short_training_beats_the_majority_action_baseline(trained_run) -> None:
    metrics = trained_run.metrics
    baseline = majority_action_share(trained_run.spec.directory)
    assert metrics["val/action_acc"] > baseline + 0.05, (metrics["val/action_acc"], baseline)
    # the any-order part of the objective teaches the world too: below a per-kind unigram model
    datamodule = instantiate(trained_run.config.data)
    datamodule.setup("fit")
    baselines = BaselineEvaluator(
        TrainingPriors.from_table(datamodule.datasets["train"].table, datamodule.tokenizer.vocabulary),
        datamodule.tokenizer.vocabulary,
    )
    for batch in datamodule.val_dataloader():
        baselines.update(batch)
    unigram = baselines.compute()["world_model.nll_per_token"]["unigram"]
    assert metrics["val/world_model_nll"] < unigram - 0.02, (metrics["val/world_model_nll"], unigram)
    run = trained_run.directory
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert list((run / "checkpoints").glob("best-step*.ckpt"))
    tags = set(EventAccumulator(str(run / "tensorboard")).Reload().Tags()["scalars"])
    for tag in (
        "train/loss",
        "train/nll/action",
        "train/nll/object",
        "train/mask_rate",
        "val/loss",
        "val/nll/all",
        "val/action_acc",
        "val/world_model_nll",
        "eval/success_rate",
    ):
        assert tag in tags, tag
    assert any(tag.startswith("lr-") for tag in tags)


def scalar_steps(run: Path, tag: str) -> list[list[int]]:
    """Steps of ``tag`` per event file, oldest file first."""
    files = sorted((run / "tensorboard").glob("events.out.tfevents.*"), key=lambda p: p.stat().st_mtime_ns)
    steps = []
    for path in files:
        accumulator = EventAccumulator(str(path)).Reload()
        steps.append([e.step for e in accumulator.Scalars(tag)] if tag in accumulator.Tags()["scalars"] else [])
    return steps


def trained_seconds(checkpoint: dict) -> float:
    return checkpoint["callbacks"][Timer().state_key]["time_elapsed"]["train"]


def test_resume_continues_from_the_last_checkpoint(compose_train, monkeypatch) -> None:
    common = [*SMALL, "trainer.log_every_n_steps=1", "trainer.val_check_interval=3"]
    first = compose_train(*common, "trainer.max_steps=6")
    train(first)
    run = Path(first.paths.output_dir)
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert checkpoint["global_step"] == 6
    first_seconds = trained_seconds(checkpoint)
    assert first_seconds > 0
    record = json.loads((run / JOB_FILE).read_text())  # written without an evaluation too
    assert record["train_seconds"] == round(first_seconds, 1) and record["seed"] == first.seed

    second = compose_train(*common, "trainer.max_steps=10", "ckpt_path=last")
    with open_dict(second):
        second.paths.output_dir = str(run)
    monkeypatch.setattr(lightning_timer, "time", SimpleNamespace(monotonic=lambda: 7.0))  # a segment of 0 s
    train(second)
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert checkpoint["global_step"] == 10
    assert trained_seconds(checkpoint) == first_seconds  # the first segment's time carried over, nothing lost
    assert json.loads((run / JOB_FILE).read_text())["train_seconds"] == round(first_seconds, 1)
    adam_steps = {float(state["step"]) for state in checkpoint["optimizer_states"][0]["state"].values()}
    assert adam_steps == {10.0}  # optimizer state carried over: 6 + 4 updates
    before, after = scalar_steps(run, "train/loss")
    assert max(before) <= 6 and min(after) >= 6  # the resumed run logged only steps 7..10


class BatchRecorder(L.Callback):
    """A fingerprint of every training batch, in the order trained on."""

    def __init__(self) -> None:
        self.seen: list[int] = []
        self.epoch_length = 0

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.epoch_length = int(trainer.num_training_batches)

    def on_train_batch_start(self, trainer: L.Trainer, module: L.LightningModule, batch, batch_idx: int) -> None:
        self.seen.append(hash(tuple(batch["input_ids"].flatten().tolist())))


class CrashAtStep(L.Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer: L.Trainer, module: L.LightningModule, batch, batch_idx: int) -> None:
        if trainer.global_step == self.step:
            raise RuntimeError("killed")


def test_run_killed_mid_epoch_resumes_on_the_batches_an_uninterrupted_run_trains_on(compose_train) -> None:
    common = [*SMALL, "trainer.max_steps=14", "callbacks.last_checkpoint.every_n_train_steps=4"]
    common.append("callbacks.closed_loop_eval=null")
    whole, uninterrupted = BatchRecorder(), compose_train(*common)
    with open_dict(uninterrupted):
        uninterrupted.paths.output_dir = str(Path(uninterrupted.paths.output_dir).with_name("uninterrupted"))
    train(uninterrupted, extra_callbacks=[whole])

    killed, resumed = BatchRecorder(), BatchRecorder()
    cfg = compose_train(*common)
    with pytest.raises(RuntimeError, match="killed"):
        train(cfg, extra_callbacks=[killed, CrashAtStep(6)])  # last.ckpt is the one of step 4
    again = compose_train(*common, "ckpt_path=last")
    with open_dict(again):
        again.paths.output_dir = cfg.paths.output_dir
    train(again, extra_callbacks=[resumed])

    assert 4 < whole.epoch_length < 14, "the checkpoint should fall inside the first epoch, the run cross into the next"
    assert killed.seen[:4] + resumed.seen == whole.seen  # no batch of the epoch repeated, none skipped


def test_a_sweep_skips_a_job_only_once_it_has_trained_and_evaluated_itself(tmp_path: Path) -> None:
    assert finished_job(tmp_path) is None and record_subdir(str(tmp_path)) == ".hydra"
    (tmp_path / JOB_FILE).write_text("{}")  # trained, killed during its evaluation: resume and evaluate
    assert finished_job(tmp_path) is None and record_subdir(str(tmp_path)) == ".hydra"
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "metrics.json").write_text("{}")
    assert finished_job(tmp_path) == {"finished": 1.0}
    assert record_subdir(str(tmp_path)) is None  # Hydra keeps the record of the settings that trained it


def test_resume_without_checkpoint_is_an_error_naming_the_file(compose_train) -> None:
    cfg = compose_train(*SMALL, "ckpt_path=last")
    with pytest.raises(DataError, match=r"last\.ckpt"):
        train(cfg)


def test_global_batch_size_is_per_device_times_devices_times_accumulation(compose_train) -> None:
    from anyorder.train import global_batch_size

    cfg = compose_train("strategy=ddp_spawn", "trainer.devices=2", "+trainer.accumulate_grad_batches=3")
    trainer = instantiate(cfg.trainer, logger=False, enable_progress_bar=False)
    assert global_batch_size(32, trainer) == 32 * 2 * 3


def test_the_training_time_adds_each_resumed_segment_to_the_time_saved_before_it(monkeypatch) -> None:
    now = [100.0]
    monkeypatch.setattr(lightning_timer, "time", SimpleNamespace(monotonic=lambda: now[0]))
    first = Timer()
    first.on_train_start(None, None)
    now[0] = 160.0
    saved = first.state_dict()  # a checkpoint 60 s in; the run is then killed
    assert saved["time_elapsed"]["train"] == 60.0

    resumed = Timer()
    resumed.load_state_dict(saved)
    now[0] = 500.0
    resumed.on_train_start(None, None)
    now[0] = 530.0
    resumed.on_train_end(None, None)
    now[0] = 900.0  # reading it later does not count the time after fit
    assert resumed.time_elapsed("train") == 90.0


def test_a_sharded_save_killed_between_its_renames_resumes_from_the_previous_checkpoint(tmp_path: Path) -> None:
    from anyorder.train import resolve_ckpt_path

    checkpoints = tmp_path / "checkpoints"
    (checkpoints / "last.ckpt.previous").mkdir(parents=True)  # renamed away, the new one not yet in place
    assert resolve_ckpt_path("last", tmp_path) == str(checkpoints / "last.ckpt.previous")
    (checkpoints / "last.ckpt").mkdir()
    assert resolve_ckpt_path("auto", tmp_path) == str(checkpoints / "last.ckpt")
