"""Episodes on disk: one Parquet row per episode, shards written atomically, read with checks.

A shard only ever appears under its final name once it is complete (written to a hidden
temporary file in the same directory, then renamed), so a killed generator never leaves a
shard that looks whole. Reading a missing, empty or corrupt shard raises one
:class:`~anyorder.errors.DataError` that names the file.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from anyorder.data.layout import VIEW_SIZE
from anyorder.errors import DataError

FORMAT_VERSION = 1
META_FILE = "meta.json"
OBS_SHAPE = (VIEW_SIZE, VIEW_SIZE, 3)

SCHEMA = pa.schema(
    [
        ("env_id", pa.string()),
        ("seed", pa.int64()),
        ("mission", pa.string()),
        ("num_steps", pa.int32()),
        ("observations", pa.binary()),  # uint8 [T, 7, 7, 3], C order
        ("directions", pa.list_(pa.int8())),
        ("actions", pa.list_(pa.int8())),
        ("rewards", pa.list_(pa.float32())),
        ("success", pa.bool_()),
    ]
)


@dataclass(frozen=True)
class Episode:
    """One expert episode: observation t is what the agent saw before taking action t."""

    env_id: str
    seed: int
    mission: str
    observations: np.ndarray  # uint8 [T, 7, 7, 3]
    directions: np.ndarray  # int8 [T]
    actions: np.ndarray  # int8 [T]
    rewards: np.ndarray  # float32 [T]
    success: bool

    @property
    def num_steps(self) -> int:
        return len(self.actions)


def _read_umask() -> int:
    mask = os.umask(0)  # the only way to read it is to set it; done once, at import
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def atomic_write_bytes(path: Path, write: Any) -> None:
    """Call ``write(tmp_path)`` then rename onto ``path``; the temp file is removed on failure.

    The file gets the permissions a plain ``open`` would give it (0666 less the umask), not
    mkstemp's private 0600, so a dataset or checkpoint in a shared directory stays readable.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_shard(path: Path, episodes: Sequence[Episode]) -> None:
    """Write ``episodes`` as one Parquet shard, atomically."""
    if not episodes:
        raise ValueError("a shard needs at least one episode")
    columns: dict[str, list[Any]] = {name: [] for name in SCHEMA.names}
    for episode in episodes:
        columns["env_id"].append(episode.env_id)
        columns["seed"].append(int(episode.seed))
        columns["mission"].append(episode.mission)
        columns["num_steps"].append(episode.num_steps)
        columns["observations"].append(np.ascontiguousarray(episode.observations, dtype=np.uint8).tobytes())
        columns["directions"].append(np.asarray(episode.directions, dtype=np.int8))
        columns["actions"].append(np.asarray(episode.actions, dtype=np.int8))
        columns["rewards"].append(np.asarray(episode.rewards, dtype=np.float32))
        columns["success"].append(bool(episode.success))
    table = pa.table(columns, schema=SCHEMA)
    atomic_write_bytes(path, lambda tmp: pq.write_table(table, tmp))


def read_table(path: Path, columns: Iterable[str] | None = None) -> pa.Table:
    """Read (some columns of) a shard; any failure is one DataError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "shard is missing")
    if path.stat().st_size == 0:
        raise DataError(path, "shard is empty (0 bytes)")
    try:
        table = pq.read_table(path, columns=list(columns) if columns is not None else None)
    except (pa.ArrowException, OSError) as error:
        raise DataError(path, f"corrupt Parquet shard ({error})") from None
    missing = set(columns or SCHEMA.names) - set(table.column_names)
    if missing:
        raise DataError(path, f"shard lacks columns {sorted(missing)}")
    if table.num_rows == 0:
        raise DataError(path, "shard holds no episodes")
    return table


@dataclass(frozen=True)
class StepColumns:
    """The steps of a selection of episodes, concatenated in row order; episode e owns ``lengths[e]`` rows.

    Reading columns whole (one copy per column, no per-episode objects) keeps the length
    checks in one place and lets the data module encode a shard with one call.
    """

    observations: np.ndarray  # uint8 [N, 7, 7, 3]
    directions: np.ndarray  # int8 [N]
    actions: np.ndarray  # int8 [N]
    rewards: np.ndarray  # float32 [N]
    lengths: np.ndarray  # int64 [E]
    seeds: np.ndarray  # int64 [E]
    missions: list[str]


def step_columns(table: pa.Table, path: Path) -> StepColumns:
    """The steps of every row of ``table``; a row whose columns disagree on its length is a DataError."""
    lengths = table.column("num_steps").to_numpy().astype(np.int64)
    frame_bytes = int(np.prod(OBS_SHAPE))
    consistent = pc.binary_length(table.column("observations")).to_numpy() == lengths * frame_bytes
    for name in ("directions", "actions", "rewards"):
        consistent &= pc.list_value_length(table.column(name)).to_numpy() == lengths
    if not consistent.all():
        seed = table.column("seed")[int(np.flatnonzero(~consistent)[0])].as_py()
        raise DataError(path, f"episode of seed {seed} has inconsistent lengths")
    blob = b"".join(table.column("observations").to_pylist())
    return StepColumns(
        observations=np.frombuffer(blob, dtype=np.uint8).reshape(-1, *OBS_SHAPE),
        directions=pc.list_flatten(table.column("directions")).to_numpy().astype(np.int8),
        actions=pc.list_flatten(table.column("actions")).to_numpy().astype(np.int8),
        rewards=pc.list_flatten(table.column("rewards")).to_numpy().astype(np.float32),
        lengths=lengths,
        seeds=table.column("seed").to_numpy().astype(np.int64),
        missions=table.column("mission").to_pylist(),
    )


def episodes_from_table(table: pa.Table, path: Path) -> list[Episode]:
    """The rows of (a selection of) a shard as episodes, observations checked against step counts."""
    columns = step_columns(table, path)
    bounds = np.cumsum(columns.lengths)[:-1]
    per_episode = [
        np.split(array, bounds)
        for array in (columns.observations, columns.directions, columns.actions, columns.rewards)
    ]
    return [
        Episode(
            env_id=env_id,
            seed=int(seed),
            mission=mission,
            observations=observations,
            directions=directions,
            actions=actions,
            rewards=rewards,
            success=success,
        )
        for env_id, seed, mission, observations, directions, actions, rewards, success in zip(
            table.column("env_id").to_pylist(),
            columns.seeds,
            columns.missions,
            *per_episode,
            table.column("success").to_pylist(),
            strict=True,
        )
    ]


def read_shard(path: Path) -> list[Episode]:
    """All episodes of a shard."""
    return episodes_from_table(read_table(path), path)


def write_meta(directory: Path, meta: dict[str, Any]) -> None:
    """Write ``meta.json`` last and atomically: its presence marks a complete dataset."""
    path = Path(directory) / META_FILE
    atomic_write_bytes(path, lambda tmp: Path(tmp).write_text(json.dumps(meta, indent=2) + "\n"))


def read_meta(directory: Path) -> dict[str, Any]:
    path = Path(directory) / META_FILE
    if not path.is_file():
        raise DataError(path, "dataset metadata is missing (the dataset was never generated or is incomplete)")
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DataError(path, f"corrupt metadata ({error})") from None
    if meta.get("format_version") != FORMAT_VERSION:
        raise DataError(path, f"format version {meta.get('format_version')!r}, expected {FORMAT_VERSION}")
    return meta
