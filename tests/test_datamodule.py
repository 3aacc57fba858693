"""TrajectoryDataModule: batch shapes, rank partition, epoch shuffles, loader workers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from anyorder.data.datamodule import TrajectoryDataModule, WindowBatchSampler, load_episode_table
from anyorder.data.episodes import read_meta, read_shard
from anyorder.data.layout import TokenKind
from anyorder.data.mixing import MixedBatchSampler
from anyorder.errors import ConfigError, DataError


def make_datamodule(root: Path, **overrides) -> TrajectoryDataModule:
    settings = dict(num_episodes=60, root=root, shard_size=20, window=3, batch_size=8, num_workers=1)
    return TrajectoryDataModule(**{**settings, **overrides})


def test_batches_are_dicts_of_b_by_l_tensors(data_root: Path) -> None:
    dm = make_datamodule(data_root)
    dm.prepare_data()
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    length = dm.tokenizer.sequence_length
    assert set(batch) == {"input_ids", "kind", "step", "cell", "attention_mask", "episode"}
    assert all(t.shape == (8, length) for key, t in batch.items() if key != "episode")
    assert batch["episode"].shape == (8,)  # each window's episode: evaluation intervals cluster by it
    assert ((batch["kind"] == TokenKind.PAD) == ~batch["attention_mask"]).all()


def test_every_window_once_per_epoch_and_left_padding(data_root: Path) -> None:
    dm = make_datamodule(data_root, batch_size=5)
    dm.setup("fit")
    dataset = dm.datasets["val"]
    ids = np.concatenate(list(dm.val_dataloader().sampler))
    assert sorted(ids.tolist()) == list(range(len(dataset)))
    # windows ending at an episode's first step are 2/3 padding; later ones less
    batch = dataset[np.arange(len(dataset))]
    real_steps = [len(set(s[s >= 0].tolist())) for s in batch["step"]]
    ends = dataset.window_end
    assert real_steps == [min(int(e) + 1, 3) for e in ends]


def test_ranks_own_disjoint_episodes_and_equal_batch_counts(small_spec) -> None:
    dm = make_datamodule(small_spec.root)
    meta = read_meta(small_spec.directory)
    shards = meta["splits"]["train"]["shards"]
    tables = [load_episode_table(small_spec.directory, shards, dm.tokenizer, rank, 2, seed=3) for rank in (0, 1)]
    seeds = [set(table.seeds.tolist()) for table, _ in tables]
    assert not seeds[0] & seeds[1]
    assert seeds[0] | seeds[1] == set(range(*meta["splits"]["train"]["seed_range"]))
    budget = tables[0][1]
    assert tables[1][1] == budget  # every rank agrees on the shared window budget
    assert budget == min(table.num_windows for table, _ in tables)
    samplers = [WindowBatchSampler(table.num_windows, budget, 4, True, 0, True) for table, _ in tables]
    assert len(samplers[0]) == len(samplers[1]) > 0


def test_episode_table_holds_each_episode_as_the_tokenizer_encodes_it(small_spec) -> None:
    """The table is built from whole columns; it must equal encoding the episodes one by one."""
    dm = make_datamodule(small_spec.root)
    shards = read_meta(small_spec.directory)["splits"]["val"]["shards"]
    table, _ = load_episode_table(small_spec.directory, shards, dm.tokenizer)
    episodes = [e for name in shards for e in read_shard(small_spec.directory / name) if e.success]
    assert table.seeds.tolist() == [e.seed for e in episodes]
    for index, episode in enumerate(episodes):
        rows = table.steps[table.offsets[index] : table.offsets[index] + table.lengths[index]]
        expected = dm.tokenizer.encode_steps(episode.observations, episode.directions, episode.actions)
        np.testing.assert_array_equal(rows, expected)
        np.testing.assert_array_equal(table.missions[index], dm.tokenizer.encode_mission(episode.mission))


def test_epochs_reshuffle_reproducibly() -> None:
    sampler = WindowBatchSampler(100, 100, 10, shuffle=True, seed=7, drop_last=True)
    first = np.concatenate(list(sampler))
    sampler.set_epoch(1)
    second = np.concatenate(list(sampler))
    sampler.set_epoch(0)
    assert np.array_equal(first, np.concatenate(list(sampler)))
    assert not np.array_equal(first, second)
    assert sorted(first.tolist()) == sorted(second.tolist()) == list(range(100))


@pytest.mark.parametrize("sampler_for", ["window", "mixed"])
def test_a_resumed_sampler_continues_its_epoch_and_starts_a_new_one_whole(sampler_for: str) -> None:
    def make():
        if sampler_for == "window":
            return WindowBatchSampler(100, 100, 10, shuffle=True, seed=7, drop_last=True)
        return MixedBatchSampler([(0, 60), (60, 40)], np.array([6, 4]), seed=7)

    full = make()
    full.set_epoch(2)
    epoch = [b.tolist() for b in full]
    resumed = make()
    resumed.resume_after(epoch=2, batches=3)
    resumed.set_epoch(2)  # Lightning sets the epoch after it has created the iterator
    assert [b.tolist() for b in resumed] == epoch[3:]
    assert [b.tolist() for b in resumed] == epoch  # the skip applies to one pass only
    other = make()
    other.resume_after(epoch=2, batches=3)
    other.set_epoch(3)  # the saved epoch was counted as finished: the next one starts whole
    full.set_epoch(3)
    assert [b.tolist() for b in other] == [b.tolist() for b in full]


def test_loader_workers_yield_the_same_batches(data_root: Path) -> None:
    plain, parallel = make_datamodule(data_root), make_datamodule(data_root, loader_workers=2)
    for dm in (plain, parallel):
        dm.setup("fit")
    a = torch.cat([b["input_ids"] for b in plain.train_dataloader()])
    b = torch.cat([b["input_ids"] for b in parallel.train_dataloader()])
    assert torch.equal(a, b)


def test_a_window_longer_than_any_episode_is_refused_before_the_model_is_sized(tmp_path: Path) -> None:
    make_datamodule(tmp_path, window=64)  # GoToRedBall's step limit: a window may span a whole episode
    with pytest.raises(ConfigError, match=r"data\.window: 65 steps is longer than any episode: .*at most 64"):
        make_datamodule(tmp_path, window=65)
    with pytest.raises(ConfigError, match=r"data\.window: .*at most 640"):  # the longest level of a mixture
        make_datamodule(tmp_path, window=641, levels=["BabyAI-GoToRedBall-v0", "MiniGrid-DoorKey-8x8-v0"])
    make_datamodule(tmp_path, window=640, levels=["BabyAI-GoToRedBall-v0", "MiniGrid-DoorKey-8x8-v0"])


def test_missing_dataset_without_generation_names_the_directory(tmp_path: Path) -> None:
    dm = make_datamodule(tmp_path, generate_if_missing=False)
    with pytest.raises(DataError, match="generate_if_missing") as error:
        dm.prepare_data()
    assert error.value.path == dm.directory


def test_corrupt_shard_fails_setup_naming_it(tmp_path: Path, small_spec) -> None:
    import shutil

    copy = tmp_path / small_spec.directory.name
    shutil.copytree(small_spec.directory, copy)
    (copy / "val-00000.parquet").write_bytes(b"garbage")
    dm = make_datamodule(tmp_path)
    with pytest.raises(DataError, match=r"val-00000\.parquet"):
        dm.setup("fit")


def test_the_dataset_directory_is_keyed_by_the_split_fractions(tmp_path: Path, small_spec, capsys) -> None:
    """Changing data.val_fraction must not silently reuse a dataset split the old way; a dataset
    cached under the legacy name (no fractions in it) is reused when its splits are the same."""
    import dataclasses
    import shutil

    other = dataclasses.replace(small_spec, root=tmp_path, val_fraction=0.2)
    assert other.directory != dataclasses.replace(small_spec, root=tmp_path).directory
    legacy = tmp_path / f"{small_spec.level}-n{small_spec.num_episodes}-s{small_spec.seed}"
    shutil.copytree(small_spec.directory, legacy)
    same = dataclasses.replace(small_spec, root=tmp_path)
    assert same.directory == legacy  # found and reused
    assert other.directory.name.endswith("-val0.2-test0.1") and not other.directory.exists()
    dm = make_datamodule(tmp_path, val_fraction=0.2, generate_if_missing=False)
    with pytest.raises(DataError):
        dm.prepare_data()
    assert f"not reusing {legacy}" in capsys.readouterr().out


def test_jobs_that_start_together_generate_a_missing_dataset_once(tmp_path: Path) -> None:
    """Packed sweep jobs share a dataset: the first to take the lock generates it, the others wait."""
    import json
    import threading
    import time

    from anyorder.data.episodes import FORMAT_VERSION

    calls = []

    class Counting(TrajectoryDataModule):
        def generate_level(self, spec) -> Path:
            calls.append(threading.get_ident())
            time.sleep(0.5)  # long enough for the other job to arrive while this one works
            (spec.directory / "meta.json").parent.mkdir(parents=True, exist_ok=True)
            (spec.directory / "meta.json").write_text(json.dumps({"format_version": FORMAT_VERSION}))
            return spec.directory

    errors = []

    def prepare(module: TrajectoryDataModule) -> None:
        try:
            module.prepare_data()
        except Exception as error:  # a thread's exception would otherwise only be printed
            errors.append(error)

    modules = [Counting(num_episodes=60, root=tmp_path, shard_size=20) for _ in range(3)]
    threads = [threading.Thread(target=prepare, args=(m,)) for m in modules]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1 and not errors


def test_a_bot_dataset_cached_before_the_key_named_the_expert_is_reused(tmp_path: Path, small_spec) -> None:
    import dataclasses
    import shutil

    spec = dataclasses.replace(small_spec, root=tmp_path)
    assert "-bot-" in spec.key
    before_expert = tmp_path / spec.key.replace("-bot-", "-")
    shutil.copytree(small_spec.directory, before_expert)
    assert spec.directory == before_expert
    planner = dataclasses.replace(spec, level="MiniGrid-DoorKey-5x5-v0", expert="auto")
    assert planner.legacy_directories == []  # only the bot made datasets before
