"""Backbones: anything that maps ``input_ids`` (+ ``attention_mask``) to per-position logits.

The tiny default is a bidirectional transformer built from a ``transformers`` config
(random init, no download), small enough to train in minutes on two CPU cores. Large
pretrained backbones (LLaDA2.0-mini, any local HF model) plug in behind the same
:class:`Backbone` interface.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import BertConfig, BertForMaskedLM, PreTrainedModel

from anyorder.errors import ConfigError


class Backbone(nn.Module):
    """``forward(input_ids [B, L], attention_mask [B, L] bool) -> logits [B, L, V]``."""

    def __init__(self, model: PreTrainedModel) -> None:
        super().__init__()
        self.model = model

    @property
    def vocab_size(self) -> int:
        return int(self.model.config.vocab_size)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask.long()).logits


def tiny_bidirectional(
    vocab_size: int,
    max_length: int,
    hidden_size: int = 128,
    num_layers: int = 4,
    num_heads: int = 4,
    intermediate_size: int = 512,
    dropout: float = 0.0,
    attn_implementation: str = "sdpa",
) -> Backbone:
    """A small BERT-style encoder with an MLM head, randomly initialised from a config."""
    if hidden_size % num_heads:
        raise ConfigError("hidden_size", f"{hidden_size} is not divisible by num_heads={num_heads}")
    config = BertConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        intermediate_size=intermediate_size,
        max_position_embeddings=max_length,
        type_vocab_size=1,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
        attn_implementation=attn_implementation,
    )
    return Backbone(BertForMaskedLM(config))
