"""A tiny masked-diffusion LM shipped as checkpoint code, like LLaDA2.0's (loaded with trust_remote_code).

The tests copy this file into a checkpoint directory as both configuration and modeling code,
with an ``auto_map`` in config.json, so that loading goes through transformers' remote-code path.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import MaskedLMOutput


class TinyDiffConfig(PretrainedConfig):
    model_type = "tinydiff"

    def __init__(self, vocab_size: int = 128, hidden_size: int = 32, max_position_embeddings: int = 1024, **kwargs):
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.max_position_embeddings = max_position_embeddings
        super().__init__(**kwargs)


class TinyDiffModel(PreTrainedModel):
    config_class = TinyDiffConfig

    def __init__(self, config: TinyDiffConfig) -> None:
        super().__init__(config)
        self.embed = nn.Embedding(config.vocab_size, config.hidden_size)
        self.position = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.layer = nn.TransformerEncoderLayer(config.hidden_size, 2, 2 * config.hidden_size, batch_first=True)
        self.head = nn.Linear(config.hidden_size, config.vocab_size)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs) -> MaskedLMOutput:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        hidden = self.embed(input_ids) + self.position(positions)[None]
        padding = None if attention_mask is None else attention_mask == 0
        return MaskedLMOutput(logits=self.head(self.layer(hidden, src_key_padding_mask=padding)))
