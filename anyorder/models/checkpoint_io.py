"""Checkpoint files that are either the old version or the new one, never half of one.

Lightning writes a checkpoint straight onto its final name, so a run killed while saving
``last.ckpt`` leaves a truncated file and nothing to resume from. This CheckpointIO writes to
a temporary file beside it and renames it into place (atomic on POSIX file systems).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightning.pytorch.plugins.io import TorchCheckpointIO

from anyorder.data.episodes import atomic_write_bytes


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        parent = super()
        atomic_write_bytes(Path(path), lambda tmp: parent.save_checkpoint(checkpoint, tmp, storage_options))
