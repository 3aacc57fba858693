"""Episodes on disk: round trip, atomic writes, and one clear error per bad shard."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from anyorder.data import episodes as episodes_module
from anyorder.data.episodes import Episode, read_meta, read_shard, write_shard
from anyorder.errors import DataError


def make_episode(seed: int, steps: int = 3) -> Episode:
    rng = np.random.default_rng(seed)
    return Episode(
        env_id="BabyAI-GoToRedBall-v0",
        seed=seed,
        mission="go to the red ball",
        observations=rng.integers(0, 6, size=(steps, 7, 7, 3), dtype=np.uint8),
        directions=rng.integers(0, 4, size=steps).astype(np.int8),
        actions=rng.integers(0, 7, size=steps).astype(np.int8),
        rewards=np.linspace(0, 1, steps, dtype=np.float32),
        success=True,
    )


def test_round_trip(tmp_path: Path) -> None:
    written = [make_episode(s, steps=s + 1) for s in range(4)]
    write_shard(tmp_path / "train-00000.parquet", written)
    read = read_shard(tmp_path / "train-00000.parquet")
    assert len(read) == 4
    for a, b in zip(written, read, strict=True):
        assert (a.env_id, a.seed, a.mission, a.success) == (b.env_id, b.seed, b.mission, b.success)
        np.testing.assert_array_equal(a.observations, b.observations)
        np.testing.assert_array_equal(a.actions, b.actions)
        np.testing.assert_array_equal(a.directions, b.directions)
        np.testing.assert_allclose(a.rewards, b.rewards)


def test_episode_whose_columns_disagree_is_one_error(tmp_path: Path) -> None:
    bad = make_episode(7, steps=3)
    bad = Episode(**{**bad.__dict__, "observations": np.zeros((4, 7, 7, 3), dtype=np.uint8)})
    path = tmp_path / "train-00000.parquet"
    write_shard(path, [make_episode(0), bad])
    with pytest.raises(DataError, match="seed 7 has inconsistent lengths") as error:
        read_shard(path)
    assert error.value.path == path


def test_failed_write_leaves_no_shard(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def crash(table, where) -> None:  # a write that dies half-way
        Path(where).write_bytes(b"PAR1 half a shard")
        raise KeyboardInterrupt

    monkeypatch.setattr(episodes_module.pq, "write_table", crash)
    with pytest.raises(KeyboardInterrupt):
        write_shard(tmp_path / "train-00000.parquet", [make_episode(0)])
    assert list(tmp_path.iterdir()) == []


def test_written_shard_has_the_umask_permissions_not_mkstemps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A dataset in a shared directory must be readable by the group, as ``open`` would make it."""
    monkeypatch.setattr(episodes_module, "_UMASK", 0o022)
    path = tmp_path / "train-00000.parquet"
    write_shard(path, [make_episode(0)])
    assert path.stat().st_mode & 0o777 == 0o644  # mkstemp alone leaves 0o600


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "missing"), (b"", "empty"), (b"this is not parquet at all", "corrupt")],
)
def test_bad_shard_is_one_error_naming_the_file(tmp_path: Path, content: bytes | None, message: str) -> None:
    path = tmp_path / "train-00000.parquet"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(DataError, match=message) as error:
        read_shard(path)
    assert error.value.path == path


def test_truncated_shard_is_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "train-00000.parquet"
    write_shard(path, [make_episode(0), make_episode(1)])
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(DataError, match="corrupt"):
        read_shard(path)


def test_missing_or_corrupt_meta(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"meta\.json"):
        read_meta(tmp_path)
    (tmp_path / "meta.json").write_text("{not json")
    with pytest.raises(DataError, match="corrupt"):
        read_meta(tmp_path)
