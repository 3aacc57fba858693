"""Vocabularies: which token id stands for each attribute value, direction, action and word.

The tokenizer is written against :class:`Vocabulary` only, so a structured vocabulary (one
id per value, for backbones trained from scratch) and a text vocabulary (ids of an LLM's
own tokenizer, see the scale-out issue) are interchangeable. One value is always exactly
one token, which keeps cell and attribute masking exact.

minigrid encodes a cell it cannot see as (0, 0, 0) and fills colour/state with 0 for
objects that have none, but colour 0 is also "red" and state 0 also "open". The
vocabulary therefore has explicit ``none`` colour and state tokens, so the model is never
told that an unseen cell is red.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from minigrid.core.actions import Actions
from minigrid.core.constants import COLOR_TO_IDX, OBJECT_TO_IDX, STATE_TO_IDX

from anyorder.errors import ConfigError, DataError

NONE = "none"
SPECIALS = ("[PAD]", "[MASK]", "[BOS]", "[SEP]", "[UNK]")
DIRECTION_NAMES = ("east", "south", "west", "north")  # minigrid's agent_dir 0..3
ACTION_NAMES = tuple(action.name for action in sorted(Actions, key=int))
# Every word the BabyAI grammar produces (verbs, determiners, colours, objects, locations): the
# word list of every checkpoint trained before the classic levels came (their stored configs
# name no list, so they rebuild exactly this one).
MISSION_WORDS = (
    "go", "to", "pick", "up", "open", "put", "next", "the", "a", "then", "after", "you", "and",
    ",", "on", "your", "left", "right", "in", "front", "of", "behind", "door", "key", "ball",
    "box", "object", "red", "green", "blue", "purple", "yellow", "grey",
)  # fmt: skip
# Words of the classic MiniGrid missions (DoorKey, KeyCorridor, LavaCrossing, FourRooms, Fetch, ...).
CLASSIC_WORDS = (
    "use", "goal", "get", "avoid", "lava", "square", "find", "opening", "reach", "traverse", "rooms",
    "room", "from", "unlock", "fetch", "must", "near",
)  # fmt: skip
_WORD = re.compile(r"[a-z]+|,")


def split_mission(mission: str) -> list[str]:
    """Mission words in order; commas are words of their own."""
    return _WORD.findall(mission.lower())


def join_mission(words: list[str]) -> str:
    return " ".join(words).replace(" ,", ",")


def _names(table: dict[str, int]) -> list[str]:
    return [name for name, _ in sorted(table.items(), key=lambda item: item[1])]


@dataclass(frozen=True)
class Vocabulary:
    """Token ids of every value; arrays are indexed by minigrid's own integer codes."""

    tokens: list[str]
    pad_id: int
    mask_id: int
    bos_id: int
    sep_id: int
    unk_id: int
    object_ids: np.ndarray  # [len(OBJECT_TO_IDX)]
    color_ids: np.ndarray  # [len(COLOR_TO_IDX)]
    color_none_id: int
    state_ids: np.ndarray  # [len(STATE_TO_IDX)]
    state_none_id: int
    direction_ids: np.ndarray  # [4]
    action_ids: np.ndarray  # [len(Actions)]
    word_ids: dict[str, int] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return len(self.tokens)

    @property
    def num_actions(self) -> int:
        return len(self.action_ids)

    @classmethod
    def structured(cls, words: Sequence[str] | None = None) -> Vocabulary:
        """One id per value of every field, kinds in disjoint id ranges; mission ``words`` last
        (default: the BabyAI words, as checkpoints trained before the list was configurable)."""
        words = _unique_words(MISSION_WORDS if words is None else words)
        tokens: list[str] = list(SPECIALS)

        def add(prefix: str, names: list[str] | tuple[str, ...]) -> np.ndarray:
            start = len(tokens)
            tokens.extend(f"{prefix}:{name}" for name in names)
            return np.arange(start, len(tokens), dtype=np.int64)

        object_ids = add("object", _names(OBJECT_TO_IDX))
        colors = add("color", [*_names(COLOR_TO_IDX), NONE])
        states = add("state", [*_names(STATE_TO_IDX), NONE])
        direction_ids = add("direction", DIRECTION_NAMES)
        action_ids = add("action", ACTION_NAMES)
        word_ids = add("word", words)
        return cls(
            tokens=tokens,
            pad_id=0,
            mask_id=1,
            bos_id=2,
            sep_id=3,
            unk_id=4,
            object_ids=object_ids,
            color_ids=colors[:-1],
            color_none_id=int(colors[-1]),
            state_ids=states[:-1],
            state_none_id=int(states[-1]),
            direction_ids=direction_ids,
            action_ids=action_ids,
            word_ids={word: int(i) for word, i in zip(words, word_ids, strict=True)},
        )


def _unique_words(words: Sequence[str]) -> list[str]:
    listed = [str(word) for word in words]
    repeated = sorted({word for word in listed if listed.count(word) > 1})
    if repeated:
        raise ConfigError("vocabulary.words", f"lists {', '.join(map(repr, repeated))} more than once")
    return listed


def load_text_tokenizer(path: str | Path, trust_remote_code: bool = False) -> Any:
    """The LLM's own tokenizer from a local directory (never a hub download)."""
    import warnings

    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    from anyorder.models.backbones import check_model_directory

    directory = check_model_directory(path)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # AutoTokenizer reads config.json and warns about model types it does not know
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            return AutoTokenizer.from_pretrained(
                str(directory), trust_remote_code=trust_remote_code, local_files_only=True
            )
    except (OSError, ValueError) as error:
        raise DataError(directory, f"cannot load a tokenizer from it ({str(error).splitlines()[0]})") from None
    finally:
        hf_logging.set_verbosity(verbosity)


def single_token_ids(tokenizer: Any, words: list[str] | tuple[str, ...]) -> dict[str, int]:
    """Each word's one token id (as it appears mid-sentence, after a space); several offenders are named together."""
    ids, offenders = {}, []
    unknown = tokenizer.unk_token_id
    for word in dict.fromkeys(words):
        encoded = tokenizer.encode(" " + word, add_special_tokens=False)
        if len(encoded) != 1:
            encoded = tokenizer.encode(word, add_special_tokens=False)
        if len(encoded) == 1 and (unknown is None or encoded[0] != unknown):
            ids[word] = int(encoded[0])
        else:
            offenders.append(f"{word!r} -> {'the unknown token' if len(encoded) == 1 else f'{len(encoded)} tokens'}")
    if offenders:
        raise ConfigError(
            "vocabulary",
            "the text vocabulary needs one token per word, but the model's tokenizer splits " + ", ".join(offenders),
        )
    return ids


MASK_TOKEN_NAME = "<|mask|>"  # LLaDA's mask token, which its tokenizers list among the additional specials


def mask_token_id(tokenizer: Any, path: str | Path) -> int:
    """The tokenizer's declared mask token, else ``<|mask|>`` by name; the start-up line says which."""
    if tokenizer.mask_token_id is not None:
        found, how = int(tokenizer.mask_token_id), f"the declared mask token {tokenizer.mask_token!r}"
    else:
        found = tokenizer.convert_tokens_to_ids(MASK_TOKEN_NAME)
        if found is None or found == tokenizer.unk_token_id:
            raise ConfigError(
                "vocabulary",
                f"the tokenizer in {path} declares no mask token and has no {MASK_TOKEN_NAME} token"
                " (a masked-diffusion LM needs one)",
            )
        found, how = int(found), f"{MASK_TOKEN_NAME} found by name (the tokenizer declares no mask_token)"
    print(f"text vocabulary: mask id {found} = {how}")
    return found


def text_vocabulary(
    path: str | Path, trust_remote_code: bool = False, words: Sequence[str] | None = None
) -> Vocabulary:
    """Ids of a pretrained LLM's own tokenizer: every value is a word that is exactly one token.

    The mask id is the model's own mask token (LLaDA2.0: ``<|mask|>``); padding, BOS and SEP
    are the tokenizer's pad/bos/sep tokens where it has them.
    """
    mission_words = _unique_words(MISSION_WORDS if words is None else words)
    tokenizer = load_text_tokenizer(path, trust_remote_code)
    mask_id = mask_token_id(tokenizer, path)
    objects, colors, states = _names(OBJECT_TO_IDX), _names(COLOR_TO_IDX), _names(STATE_TO_IDX)
    words = single_token_ids(
        tokenizer, [*objects, *colors, *states, NONE, *DIRECTION_NAMES, *ACTION_NAMES, *mission_words]
    )
    specials = [tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.sep_token_id, tokenizer.eos_token_id]
    fallback = next(i for i in [*specials, mask_id] if i is not None)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else fallback
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else fallback
    sep = next((i for i in (tokenizer.sep_token_id, tokenizer.eos_token_id) if i is not None), fallback)
    unk = tokenizer.unk_token_id if tokenizer.unk_token_id is not None else pad
    size = max(len(tokenizer), max(words.values()) + 1)
    tokens = [""] * size
    for token, index in tokenizer.get_vocab().items():
        if index < size:
            tokens[index] = token
    for word, index in words.items():
        tokens[index] = word  # decoding reads words back through this table
    return Vocabulary(
        tokens=tokens,
        pad_id=int(pad),
        mask_id=mask_id,
        bos_id=int(bos),
        sep_id=int(sep),
        unk_id=int(unk),
        object_ids=np.array([words[n] for n in objects], dtype=np.int64),
        color_ids=np.array([words[n] for n in colors], dtype=np.int64),
        color_none_id=words[NONE],
        state_ids=np.array([words[n] for n in states], dtype=np.int64),
        state_none_id=words[NONE],
        direction_ids=np.array([words[n] for n in DIRECTION_NAMES], dtype=np.int64),
        action_ids=np.array([words[n] for n in ACTION_NAMES], dtype=np.int64),
        word_ids={w: words[w] for w in mission_words},
    )
