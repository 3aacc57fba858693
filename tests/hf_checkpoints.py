"""Tiny Hugging Face checkpoints, built offline and saved by the tests themselves."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

from minigrid.core.constants import COLOR_TO_IDX, OBJECT_TO_IDX, STATE_TO_IDX
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import BertConfig, BertForMaskedLM, PreTrainedTokenizerFast

from anyorder.data.vocabulary import ACTION_NAMES, DIRECTION_NAMES, MISSION_WORDS, NONE

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "<|mask|>"]
WORDS = [*OBJECT_TO_IDX, *COLOR_TO_IDX, *STATE_TO_IDX, NONE, *DIRECTION_NAMES, *ACTION_NAMES, *MISSION_WORDS]


def save_tokenizer(directory: Path, drop: tuple[str, ...] = ()) -> PreTrainedTokenizerFast:
    """A word-level tokenizer (every word one token) with LLaDA's mask token, minus ``drop``."""
    words = [w for w in dict.fromkeys([*WORDS, "extra", "filler"]) if w not in drop]
    vocab = {token: i for i, token in enumerate([*SPECIALS, *words])}
    model = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    model.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=model,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="<|mask|>",
    )
    tokenizer.save_pretrained(str(directory))
    return tokenizer


def save_bert(directory: Path, drop: tuple[str, ...] = ()) -> Path:
    """A 1-layer BERT masked LM + tokenizer: the ``model=hf_local`` path."""
    tokenizer = save_tokenizer(directory, drop)
    config = BertConfig(
        vocab_size=len(tokenizer) + 3,  # padded embedding table, as real checkpoints often have
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=1024,
    )
    BertForMaskedLM(config).save_pretrained(str(directory))
    return directory


def save_remote_code_model(directory: Path) -> Path:
    """A checkpoint that ships its own modeling code (auto_map), loaded like LLaDA2.0-mini."""
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = save_tokenizer(directory)
    source = Path(__file__).parent / "assets" / "tinydiff.py"
    spec = importlib.util.spec_from_file_location("tinydiff_for_saving", source)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.TinyDiffModel(module.TinyDiffConfig(vocab_size=len(tokenizer)))
    model.save_pretrained(str(directory))
    shutil.copy(source, directory / "tinydiff.py")
    config = json.loads((directory / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "tinydiff.TinyDiffConfig", "AutoModelForCausalLM": "tinydiff.TinyDiffModel"}
    config.pop("architectures", None)
    (directory / "config.json").write_text(json.dumps(config, indent=2))
    return directory
