"""A kill while saving never truncates the checkpoint that a resume would read."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lightning.fabric.plugins.io import torch_io

from anyorder.models.checkpoint_io import AtomicCheckpointIO


def test_interrupted_save_keeps_the_previous_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    io = AtomicCheckpointIO()
    path = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"global_step": 50, "weights": torch.ones(3)}, path)

    def die_half_way(checkpoint: dict, target: str) -> None:
        Path(target).write_bytes(b"PK\x03\x04 half a checkpoint")
        raise KeyboardInterrupt  # SIGINT / SIGTERM mid-write

    monkeypatch.setattr(torch_io, "_atomic_save", die_half_way)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"global_step": 100, "weights": torch.zeros(3)}, path)
    assert io.load_checkpoint(path)["global_step"] == 50
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]
