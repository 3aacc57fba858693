"""The token layout contract shared by tokenizer, masking and metrics.

A window of K steps is laid out as::

    [BOS] mission (M tokens, PAD-filled) [SEP]  then per step: 49 cells x (object, color, state),
                                                 1 direction token, 1 action token

Every position carries three layout fields: ``kind`` (:class:`TokenKind`), ``step``
(0..K-1, -1 outside steps) and ``cell`` (0..48 in row-major order of the 7x7 egocentric
view, -1 otherwise). Masking and metrics read only these fields, never offsets.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np

VIEW_SIZE = 7
NUM_CELLS = VIEW_SIZE * VIEW_SIZE
ATTRIBUTES_PER_CELL = 3
STEP_LENGTH = NUM_CELLS * ATTRIBUTES_PER_CELL + 2  # cells, direction, action
AGENT_CELL = (VIEW_SIZE - 1) * VIEW_SIZE + VIEW_SIZE // 2  # view position (x=3, y=6)


class TokenKind(IntEnum):
    """What a position holds; PAD positions are never attended to, masked or scored."""

    PAD = 0
    SPECIAL = 1
    MISSION = 2
    OBJECT = 3
    COLOR = 4
    STATE = 5
    DIRECTION = 6
    ACTION = 7


CELL_KINDS = (TokenKind.OBJECT, TokenKind.COLOR, TokenKind.STATE)


@dataclass(frozen=True)
class Layout:
    """Position-wise layout of a fully populated window (no step padding)."""

    window: int
    mission_length: int
    kind: np.ndarray  # int64 [L]
    step: np.ndarray  # int64 [L]
    cell: np.ndarray  # int64 [L]

    @property
    def length(self) -> int:
        return int(self.kind.shape[0])

    @property
    def prefix_length(self) -> int:
        """Tokens before the first step: BOS, mission, SEP."""
        return self.mission_length + 2

    @classmethod
    def build(cls, window: int, mission_length: int) -> Layout:
        step_kind = np.concatenate(
            [np.tile(np.array(CELL_KINDS, dtype=np.int64), NUM_CELLS), [TokenKind.DIRECTION, TokenKind.ACTION]]
        )
        step_cell = np.concatenate([np.repeat(np.arange(NUM_CELLS), ATTRIBUTES_PER_CELL), [-1, -1]])
        prefix = mission_length + 2
        kind = np.concatenate(
            [
                [TokenKind.SPECIAL],
                np.full(mission_length, TokenKind.MISSION),
                [TokenKind.SPECIAL],
                np.tile(step_kind, window),
            ]
        ).astype(np.int64)
        step = np.concatenate([np.full(prefix, -1), np.repeat(np.arange(window), STEP_LENGTH)]).astype(np.int64)
        cell = np.concatenate([np.full(prefix, -1), np.tile(step_cell, window)]).astype(np.int64)
        return cls(window=window, mission_length=mission_length, kind=kind, step=step, cell=cell)
