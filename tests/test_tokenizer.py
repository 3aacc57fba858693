"""The token layout contract: round trips, layout fields, none tokens, left padding."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from minigrid.core.constants import OBJECT_TO_IDX

from anyorder.data.episodes import read_shard
from anyorder.data.layout import AGENT_CELL, NUM_CELLS, STEP_LENGTH, Layout, TokenKind
from anyorder.data.tokenizer import TrajectoryTokenizer
from anyorder.data.vocabulary import Vocabulary
from anyorder.errors import ConfigError


@pytest.fixture
def tokenizer() -> TrajectoryTokenizer:
    return TrajectoryTokenizer(Vocabulary.structured(), window=3, mission_length=12)


def test_layout_length_and_fields() -> None:
    layout = Layout.build(window=2, mission_length=5)
    assert layout.length == 2 + 5 + 2 * STEP_LENGTH
    assert (layout.kind == TokenKind.OBJECT).sum() == 2 * NUM_CELLS
    assert (layout.kind == TokenKind.ACTION).sum() == 2
    assert set(layout.step[layout.kind == TokenKind.MISSION]) == {-1}
    # every cell of every step appears once per attribute kind
    for kind in (TokenKind.OBJECT, TokenKind.COLOR, TokenKind.STATE):
        pairs = set(zip(layout.step[layout.kind == kind], layout.cell[layout.kind == kind], strict=True))
        assert pairs == {(s, c) for s in range(2) for c in range(NUM_CELLS)}
    assert AGENT_CELL == 45


def test_round_trip_on_real_episodes(tokenizer: TrajectoryTokenizer, small_spec) -> None:
    for episode in read_shard(small_spec.shard_path("train", 0))[:10]:
        for end in range(episode.num_steps):
            start = max(0, end - tokenizer.window + 1)
            batch = tokenizer.encode_window(
                episode.mission,
                episode.observations[start : end + 1],
                episode.directions[start : end + 1],
                episode.actions[start : end + 1],
            )
            decoded = tokenizer.decode_window(batch)
            assert decoded.mission == episode.mission
            np.testing.assert_array_equal(decoded.observations, episode.observations[start : end + 1])
            np.testing.assert_array_equal(decoded.directions, episode.directions[start : end + 1])
            np.testing.assert_array_equal(decoded.actions, episode.actions[start : end + 1])
            assert decoded.num_padding_steps == tokenizer.window - (end + 1 - start)


def test_left_padding_fields(tokenizer: TrajectoryTokenizer) -> None:
    obs = np.zeros((1, 7, 7, 3), dtype=np.uint8)
    batch = tokenizer.encode_window("go to the red ball", obs, np.array([0]), np.array([2]))
    kind, step = batch["kind"][0], batch["step"][0]
    prefix = tokenizer.layout.prefix_length
    pad_steps = slice(prefix, prefix + 2 * STEP_LENGTH)
    assert (kind[pad_steps] == TokenKind.PAD).all()
    assert (step[pad_steps] == -1).all()
    assert not batch["attention_mask"][0, pad_steps].any()
    assert (step[prefix + 2 * STEP_LENGTH :] == 2).all()
    # mission padding is PAD kind too: 5 words out of 12
    assert (kind == TokenKind.MISSION).sum() == 5


def test_unseen_and_stateless_cells_get_none_tokens(tokenizer: TrajectoryTokenizer) -> None:
    vocab = tokenizer.vocabulary
    obs = np.zeros((1, 7, 7, 3), dtype=np.uint8)  # all (0, 0, 0): unseen, *not* red/open
    obs[0, 3, 6] = (OBJECT_TO_IDX["ball"], 0, 0)  # a red ball in the agent's cell: colour is real
    obs[0, 2, 2] = (OBJECT_TO_IDX["door"], 1, 0)  # an open green door: state is real
    steps = tokenizer.encode_steps(obs, np.array([0]), np.array([0]))[0]
    cells = steps[: NUM_CELLS * 3].reshape(NUM_CELLS, 3)
    unseen = cells[0]
    assert unseen[1] == vocab.color_none_id and unseen[2] == vocab.state_none_id
    ball = cells[AGENT_CELL]
    assert ball[1] == vocab.color_ids[0] and ball[2] == vocab.state_none_id
    door = cells[2 * 7 + 2]
    assert door[2] == vocab.state_ids[0]


def test_vocabulary_kinds_do_not_share_ids() -> None:
    vocab = Vocabulary.structured()
    groups = [
        vocab.object_ids,
        [*vocab.color_ids, vocab.color_none_id],
        [*vocab.state_ids, vocab.state_none_id],
        vocab.direction_ids,
        vocab.action_ids,
        list(vocab.word_ids.values()),
        [vocab.pad_id, vocab.mask_id, vocab.bos_id, vocab.sep_id, vocab.unk_id],
    ]
    flat = [int(i) for group in groups for i in group]
    assert len(flat) == len(set(flat)) == vocab.size


def test_long_mission_is_an_error_naming_the_field() -> None:
    tokenizer = TrajectoryTokenizer(Vocabulary.structured(), window=1, mission_length=3)
    with pytest.raises(ConfigError, match=r"data\.mission_length"):
        tokenizer.encode_mission("go to the red ball")


def test_window_must_be_positive() -> None:
    with pytest.raises(ConfigError, match="window"):
        TrajectoryTokenizer(Vocabulary.structured(), window=0, mission_length=4)


def test_assemble_returns_int64_tensors(tokenizer: TrajectoryTokenizer) -> None:
    batch = tokenizer.encode_window("go to a ball", np.zeros((2, 7, 7, 3), np.uint8), np.zeros(2), np.zeros(2))
    assert all(v.shape == (1, tokenizer.sequence_length) for v in batch.values())
    assert batch["input_ids"].dtype == torch.int64 and batch["attention_mask"].dtype == torch.bool
