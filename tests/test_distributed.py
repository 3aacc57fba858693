"""Multi-process training on the CPU: DDP with 2 processes (spawn, gloo) through the real config."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import torch

from anyorder.data.episodes import read_meta, read_table
from anyorder.eval.callback import ClosedLoopEvalCallback
from anyorder.masking import MaskingCallback, UniformMasking
from anyorder.train import train


class RankRecorder(L.Callback):
    """Writes, per rank, the episode seeds it owns and the number of batches it trained on."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.batches = 0

    def on_train_batch_end(self, *args: object) -> None:
        self.batches += 1

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        seeds = trainer.datamodule.datasets["train"].table.seeds.tolist()
        record = {"rank": trainer.global_rank, "world": trainer.world_size, "seeds": seeds, "batches": self.batches}
        (Path(self.directory) / f"rank{trainer.global_rank}.json").write_text(json.dumps(record))


class RecordedClosedLoop(ClosedLoopEvalCallback):
    """The closed-loop callback, writing per rank which episodes it played and how they ended."""

    def __init__(self, directory: str) -> None:
        super().__init__(every_n_val_epochs=1, num_episodes=3, num_envs=3)
        self.directory = directory

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_epoch_end(trainer, pl_module)
        if self.last_result is not None:
            result = {"seeds": self.last_result.seeds, "lengths": self.last_result.lengths}
            (Path(self.directory) / f"closed_loop{trainer.global_rank}.json").write_text(json.dumps(result))


def test_ddp_two_processes_train_on_disjoint_episodes(compose_train, small_spec, tiny_run, tmp_path: Path) -> None:
    cfg = compose_train(
        *tiny_run,
        "strategy=ddp_spawn",
        "trainer.devices=2",
        "trainer.max_steps=-1",
        "trainer.max_epochs=1",
        "trainer.val_check_interval=null",
        "trainer.check_val_every_n_epoch=1",
        "trainer.enable_progress_bar=false",
        "callbacks.closed_loop_eval=null",
    )
    train(cfg, extra_callbacks=[RankRecorder(str(tmp_path)), RecordedClosedLoop(str(tmp_path))])
    records = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world"] for r in records] == [2, 2]
    seeds = [set(r["seeds"]) for r in records]
    assert seeds[0] and seeds[1] and not seeds[0] & seeds[1]
    meta = read_meta(small_spec.directory)
    successful = set()
    for name in meta["splits"]["train"]["shards"]:
        table = read_table(small_spec.directory / name, columns=["seed", "success"]).to_pydict()
        successful |= {s for s, ok in zip(table["seed"], table["success"], strict=True) if ok}
    assert seeds[0] | seeds[1] == successful
    assert records[0]["batches"] == records[1]["batches"] > 0
    last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    assert last.is_file()
    # each rank's mask generator is kept, so a resumed rank continues its own stream of masks
    states = next(v for k, v in torch.load(last, weights_only=False)["callbacks"].items() if "MaskingCallback" in k)
    generators = states["generators"]
    assert len(generators) == 2 and not torch.equal(generators[0], generators[1])
    for rank in (0, 1):
        resumed = MaskingCallback(UniformMasking())
        resumed.load_state_dict(states)
        assert torch.equal(resumed.generator_for(torch.device("cpu"), rank).get_state(), generators[rank])
    # the closed-loop evaluation ran on every rank, in lockstep (what FSDP's collective forwards need)
    played = [json.loads((tmp_path / f"closed_loop{r}.json").read_text()) for r in (0, 1)]
    assert played[0] == played[1] and len(played[0]["seeds"]) == 3
