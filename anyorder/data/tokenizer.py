"""TrajectoryTokenizer: episodes <-> token windows with the layout of :mod:`anyorder.data.layout`.

Tokenization is vectorised in two stages so that it never dominates training time: each
episode's steps are encoded once (``encode_steps``, a ``[T, STEP_LENGTH]`` table), and a
batch of windows is gathered from those tables (``assemble``), with left padding where a
window starts before the episode does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from minigrid.core.constants import OBJECT_TO_IDX

from anyorder.data.layout import ATTRIBUTES_PER_CELL, NUM_CELLS, STEP_LENGTH, VIEW_SIZE, Layout, TokenKind
from anyorder.data.vocabulary import Vocabulary, join_mission, split_mission
from anyorder.errors import ConfigError, DataError, require_at_least

_UNSEEN = OBJECT_TO_IDX["unseen"]
_EMPTY = OBJECT_TO_IDX["empty"]
_DOOR = OBJECT_TO_IDX["door"]

TokenBatch = dict[str, torch.Tensor]
"""``input_ids``, ``kind``, ``step``, ``cell`` (int64) and ``attention_mask`` (bool), all ``[B, L]``;
the data module's batches also carry ``episode`` (int64 ``[B]``: each window's episode)."""


@dataclass(frozen=True)
class DecodedWindow:
    """What a window says, in minigrid's own encoding; ``None`` entries were left padding."""

    mission: str
    observations: np.ndarray  # uint8 [K', 7, 7, 3] for the K' real steps
    directions: np.ndarray  # int64 [K']
    actions: np.ndarray  # int64 [K']
    num_padding_steps: int


class TrajectoryTokenizer:
    """Turns (mission, observations, directions, actions) into windows of ``window`` steps."""

    def __init__(self, vocabulary: Vocabulary, window: int, mission_length: int) -> None:
        require_at_least("window", window, 1)
        require_at_least("mission_length", mission_length, 1)
        self.vocabulary = vocabulary
        self.window = window
        self.mission_length = mission_length
        self.layout = Layout.build(window, mission_length)
        self._inverse = self._inverse_tables(vocabulary)

    @property
    def sequence_length(self) -> int:
        return self.layout.length

    # -- encoding ---------------------------------------------------------------------------
    def encode_mission(self, mission: str) -> np.ndarray:
        """``[M]`` ids, PAD-filled; a mission longer than M, or with a word the vocabulary does
        not hold (a model never saw it), is an error, not a silent cut or an unknown token."""
        words = split_mission(mission)
        if len(words) > self.mission_length:
            raise ConfigError(
                "data.mission_length", f"mission {mission!r} has {len(words)} words, more than {self.mission_length}"
            )
        vocab = self.vocabulary
        unknown = [word for word in dict.fromkeys(words) if word not in vocab.word_ids]
        if unknown:
            raise ConfigError(
                "vocabulary.words",
                f"mission {mission!r} has words the vocabulary does not hold: {', '.join(unknown)}"
                f" (it has {len(vocab.word_ids)} mission words)",
            )
        ids = np.full(self.mission_length, vocab.pad_id, dtype=np.int64)
        ids[: len(words)] = [vocab.word_ids[word] for word in words]
        return ids

    def encode_steps(
        self,
        observations: np.ndarray,
        directions: np.ndarray,
        actions: np.ndarray,
        hidden_cells: np.ndarray | None = None,
    ) -> np.ndarray:
        """``[T, STEP_LENGTH]`` ids for an episode's steps (observations uint8 ``[T, 7, 7, 3]``).

        ``hidden_cells`` (bool ``[T, 7, 7]``, indexed like the image) are occluded: their three
        attribute tokens become MASK, never "unseen", which would be a false statement.
        """
        vocab = self.vocabulary
        # minigrid images are indexed [x, y]; cells are numbered row-major (y, x).
        cells = np.asarray(observations).transpose(0, 2, 1, 3).reshape(-1, NUM_CELLS, ATTRIBUTES_PER_CELL)
        hidden = None
        if hidden_cells is not None:
            hidden = np.asarray(hidden_cells, dtype=bool).transpose(0, 2, 1).reshape(-1, NUM_CELLS)
            cells = np.where(hidden[..., None], 0, cells)  # whatever the image says there is not read
        objects = cells[..., 0].astype(np.int64)
        colorless = (objects == _UNSEEN) | (objects == _EMPTY)
        ids = np.empty((*objects.shape, ATTRIBUTES_PER_CELL), dtype=np.int64)
        ids[..., 0] = vocab.object_ids[objects]
        ids[..., 1] = np.where(colorless, vocab.color_none_id, vocab.color_ids[cells[..., 1]])
        ids[..., 2] = np.where(objects == _DOOR, vocab.state_ids[cells[..., 2]], vocab.state_none_id)
        if hidden is not None:
            ids[hidden] = vocab.mask_id
        steps = np.empty((objects.shape[0], STEP_LENGTH), dtype=np.int64)
        steps[:, :-2] = ids.reshape(objects.shape[0], -1)
        steps[:, -2] = vocab.direction_ids[np.asarray(directions, dtype=np.int64)]
        steps[:, -1] = vocab.action_ids[np.asarray(actions, dtype=np.int64)]
        return steps

    def assemble(self, missions: np.ndarray, steps: np.ndarray, valid: np.ndarray) -> TokenBatch:
        """Build a batch from ``missions [B, M]``, ``steps [B, K, STEP_LENGTH]``, ``valid [B, K]``."""
        vocab, layout = self.vocabulary, self.layout
        batch = missions.shape[0]
        ids = np.empty((batch, layout.length), dtype=np.int64)
        ids[:, 0] = vocab.bos_id
        ids[:, 1 : layout.prefix_length - 1] = missions
        ids[:, layout.prefix_length - 1] = vocab.sep_id
        step_valid = np.repeat(valid, STEP_LENGTH, axis=1)
        ids[:, layout.prefix_length :] = np.where(step_valid, steps.reshape(batch, -1), vocab.pad_id)

        real = np.ones((batch, layout.length), dtype=bool)
        real[:, layout.prefix_length :] = step_valid
        real[:, 1 : layout.prefix_length - 1] = missions != vocab.pad_id
        kind = np.where(real, layout.kind, TokenKind.PAD)
        step = np.where(real, layout.step, -1)
        cell = np.where(real, layout.cell, -1)
        return {
            "input_ids": torch.from_numpy(ids),
            "kind": torch.from_numpy(kind),
            "step": torch.from_numpy(step),
            "cell": torch.from_numpy(cell),
            "attention_mask": torch.from_numpy(real),
        }

    def encode_window(
        self, mission: str, observations: np.ndarray, directions: np.ndarray, actions: np.ndarray
    ) -> TokenBatch:
        """One window (batch of 1) from at most K steps; fewer steps are left-padded."""
        count = len(actions)
        if count > self.window:
            raise ConfigError("window", f"got {count} steps for a window of {self.window}")
        steps = np.zeros((1, self.window, STEP_LENGTH), dtype=np.int64)
        steps[0, self.window - count :] = self.encode_steps(observations, directions, actions)
        valid = np.arange(self.window)[None, :] >= self.window - count
        return self.assemble(self.encode_mission(mission)[None], steps, valid)

    # -- decoding ---------------------------------------------------------------------------
    def decode_window(self, batch: TokenBatch, index: int = 0) -> DecodedWindow:
        """Invert ``assemble`` for sample ``index``: exact for every token the window holds."""
        ids = batch["input_ids"][index].cpu().numpy()
        kind = batch["kind"][index].cpu().numpy()
        step = batch["step"][index].cpu().numpy()
        words = [self.vocabulary.tokens[i].split(":", 1)[-1] for i in ids[kind == TokenKind.MISSION]]
        real_steps = np.unique(step[step >= 0])
        num_steps = len(real_steps)

        def values(token_kind: TokenKind) -> np.ndarray:
            decoded = self._inverse[token_kind][ids[kind == token_kind]]
            if (decoded < 0).any():
                raise DataError("<batch>", f"token of kind {token_kind.name} outside its vocabulary")
            return decoded

        cells = np.stack([values(k) for k in (TokenKind.OBJECT, TokenKind.COLOR, TokenKind.STATE)], axis=-1)
        cells[..., 1] = np.where(cells[..., 1] == _NONE, 0, cells[..., 1])
        cells[..., 2] = np.where(cells[..., 2] == _NONE, 0, cells[..., 2])
        observations = cells.reshape(num_steps, VIEW_SIZE, VIEW_SIZE, 3).transpose(0, 2, 1, 3).astype(np.uint8)
        return DecodedWindow(
            mission=join_mission(words),
            observations=observations,
            directions=values(TokenKind.DIRECTION),
            actions=values(TokenKind.ACTION),
            num_padding_steps=self.window - num_steps,
        )

    @staticmethod
    def _inverse_tables(vocab: Vocabulary) -> dict[TokenKind, np.ndarray]:
        """Per kind, id -> minigrid code (``_NONE`` for the none tokens, -1 for foreign ids)."""

        def table(ids: np.ndarray, none_id: int | None = None) -> np.ndarray:
            inverse = np.full(vocab.size, -1, dtype=np.int64)
            inverse[ids] = np.arange(len(ids))
            if none_id is not None:
                inverse[none_id] = _NONE
            return inverse

        return {
            TokenKind.OBJECT: table(vocab.object_ids),
            TokenKind.COLOR: table(vocab.color_ids, vocab.color_none_id),
            TokenKind.STATE: table(vocab.state_ids, vocab.state_none_id),
            TokenKind.DIRECTION: table(vocab.direction_ids),
            TokenKind.ACTION: table(vocab.action_ids),
        }


_NONE = 1_000  # sentinel code for the "none" colour/state tokens while decoding
