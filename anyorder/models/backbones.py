"""Backbones: anything that maps ``input_ids`` (+ ``attention_mask``) to per-position logits.

The tiny ones are bidirectional transformers with random init (no download), small enough
to train in minutes on two CPU cores: :class:`PreNormEncoder` (the default) and a BERT
encoder built from a ``transformers`` config. Large
pretrained backbones (LLaDA2.0-mini, any local HF model) plug in behind the same
:class:`Backbone` interface.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_only
from torch import nn
from transformers import AutoModelForMaskedLM, BertConfig, BertForMaskedLM, PreTrainedModel

from anyorder.data.layout import VIEW_SIZE, Layout, TokenKind
from anyorder.errors import ConfigError, DataError
from anyorder.models.causal import causal_blocked

log = logging.getLogger(__name__)


class Backbone(nn.Module):
    """``forward(input_ids [B, L], attention_mask [B, L] bool) -> logits [B, L, V]``."""

    def __init__(self, model: PreTrainedModel) -> None:
        super().__init__()
        self.model = model

    @property
    def vocab_size(self) -> int:
        return int(self.model.get_input_embeddings().num_embeddings)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask.long()).logits


def check_heads(hidden_size: int, num_heads: int) -> None:
    """Attention splits the hidden size evenly over the heads: say so at construction."""
    if hidden_size % num_heads:
        raise ConfigError("hidden_size", f"{hidden_size} is not divisible by num_heads={num_heads}")


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
    check_heads(hidden_size, num_heads)
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


class LayoutEmbedding(nn.Module):
    """A position's place in the token layout as a sum of embeddings: its step, its view row and
    column, its token kind. The same cell of two steps then shares its row and column parts, so
    "the cell one row up in the previous step" (a forward move) and the rotations of a turn are
    one relation for every cell instead of 49 that absolute positions would each have to learn."""

    def __init__(self, window: int, mission_length: int | None, max_length: int, hidden_size: int) -> None:
        super().__init__()
        if mission_length is None:
            raise ConfigError("model.backbone.mission_length", "the layout embedding needs the mission length too")
        layout = Layout.build(window, mission_length)
        if layout.length != max_length:
            raise ConfigError(
                "model.backbone.window",
                f"a layout of {window} steps and {mission_length} mission tokens is {layout.length} tokens,"
                f" the data's windows are {max_length}",
            )
        cell = torch.from_numpy(layout.cell)
        # 0 stands for "not a cell" / "not a step"; rows and columns of the 7x7 view are 1..7
        self.register_buffer("step", torch.from_numpy(layout.step) + 1, persistent=False)
        self.register_buffer("row", torch.where(cell >= 0, cell // VIEW_SIZE + 1, 0), persistent=False)
        self.register_buffer("column", torch.where(cell >= 0, cell % VIEW_SIZE + 1, 0), persistent=False)
        self.register_buffer("kind", torch.from_numpy(layout.kind), persistent=False)
        self.steps = nn.Embedding(window + 1, hidden_size)
        self.rows = nn.Embedding(VIEW_SIZE + 1, hidden_size)
        self.columns = nn.Embedding(VIEW_SIZE + 1, hidden_size)
        self.kinds = nn.Embedding(len(TokenKind), hidden_size)
        for embedding in (self.steps, self.rows, self.columns, self.kinds):
            nn.init.normal_(embedding.weight, std=0.02)

    def forward(self) -> torch.Tensor:
        """``[L, hidden]``, added to every sample (left padding keeps each position's layout)."""
        return self.steps(self.step) + self.rows(self.row) + self.columns(self.column) + self.kinds(self.kind)


class PreNormEncoder(nn.Module):
    """A small bidirectional transformer with LayerNorm before each sublayer (pre-LN).

    BERT (``tiny_bidirectional``) normalises after each residual sum (post-LN),
    which trains well only with a long warm-up at high learning rates; pre-LN keeps the
    residual stream unnormalised and is stable from the first step. Same interface as
    :class:`Backbone`. With ``window`` (and ``mission_length``) it adds a :class:`LayoutEmbedding`;
    with ``causal`` each position attends to itself and earlier real positions only (the
    autoregressive baseline's backbone: the same weights shape, left-to-right attention).
    """

    def __init__(
        self,
        vocab_size: int,
        max_length: int,
        hidden_size: int = 128,
        num_layers: int = 4,
        num_heads: int = 4,
        intermediate_size: int = 512,
        dropout: float = 0.0,
        window: int | None = None,
        mission_length: int | None = None,
        causal: bool = False,
    ) -> None:
        super().__init__()
        check_heads(hidden_size, num_heads)
        self.causal = causal
        self.num_heads = num_heads
        self.tokens = nn.Embedding(vocab_size, hidden_size)
        self.positions = nn.Embedding(max_length, hidden_size)
        self.layout = LayoutEmbedding(window, mission_length, max_length, hidden_size) if window else None
        # GELU as a function, not the string "gelu", keeps eval mode off torch's inference fast path
        # for encoder layers, which ran at half the regular path's speed here (1.56 s against 0.79 s
        # per forward of 32 x 312 tokens on one CPU core): evaluation and rollouts run twice as fast
        gelu = functools.partial(F.gelu, approximate="none")
        layer = nn.TransformerEncoderLayer(
            hidden_size, num_heads, intermediate_size, dropout, activation=gelu, batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(hidden_size)
        self.head = nn.Linear(hidden_size, vocab_size)
        for embedding in (self.tokens, self.positions):
            nn.init.normal_(embedding.weight, std=0.02)

    @property
    def vocab_size(self) -> int:
        return self.tokens.num_embeddings

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self._embed(input_ids, torch.arange(input_ids.shape[1], device=input_ids.device))
        if self.causal:
            blocked = causal_blocked(attention_mask.bool()).repeat_interleave(self.num_heads, dim=0)
            hidden = self.encoder(hidden, mask=blocked)
        else:
            hidden = self.encoder(hidden, src_key_padding_mask=~attention_mask.bool())
        return self.head(self.norm(hidden))

    # -- left-to-right decoding with a key/value cache (causal only, evaluation only) ----------
    def start_decoding(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, KeyValueCache]:
        """The logits of a prefix (as :meth:`forward`) and its keys and values, to extend one
        position at a time with :meth:`decode_step`: greedy decoding then costs one forward of
        the prefix plus one single-position pass per decoded token, not one whole forward each."""
        self._check_decoding()
        keep = attention_mask.bool()
        cache = KeyValueCache([], [], keep)
        hidden = self._embed(input_ids, torch.arange(input_ids.shape[1], device=input_ids.device))
        allowed = ~causal_blocked(keep)
        for layer in self.encoder.layers:
            hidden, keys, values = self._cached_layer(layer, hidden, allowed, None, None)
            cache.keys.append(keys)
            cache.values.append(values)
        return self.head(self.norm(hidden)), cache

    def decode_step(self, token_ids: torch.Tensor, keep: torch.Tensor, cache: KeyValueCache) -> torch.Tensor:
        """Logits ``[B, V]`` at the next position (``token_ids [B]``, real where ``keep [B]``),
        attending as :meth:`forward` would: to the real positions before it and to itself."""
        self._check_decoding()
        keep = keep.bool()
        position = cache.keep.shape[1]
        hidden = self._embed(token_ids[:, None], torch.tensor([position], device=token_ids.device))
        allowed = torch.cat([cache.keep, torch.ones_like(keep[:, None])], dim=1)[:, None]  # [B, 1, T + 1]
        for index, layer in enumerate(self.encoder.layers):
            hidden, cache.keys[index], cache.values[index] = self._cached_layer(
                layer, hidden, allowed, cache.keys[index], cache.values[index]
            )
        cache.keep = torch.cat([cache.keep, keep[:, None]], dim=1)
        return self.head(self.norm(hidden))[:, 0]

    def _check_decoding(self) -> None:
        if not self.causal or self.training:
            raise RuntimeError("cached decoding is for a causal encoder in eval mode")

    def _embed(self, input_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        hidden = self.tokens(input_ids) + self.positions(positions)
        return hidden if self.layout is None else hidden + self.layout()[positions]

    def _cached_layer(
        self,
        layer: nn.TransformerEncoderLayer,
        hidden: torch.Tensor,
        allowed: torch.Tensor,
        past_keys: torch.Tensor | None,
        past_values: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One pre-LN encoder layer (its own weights, no dropout) over new positions that attend to
        cached ones; returns the hidden states and the keys and values so far, ``[B, heads, T, d]``.
        It reads the layer's public weights as built in ``__init__`` (no extra key/value biases),
        so it runs on an unsharded encoder: evaluation loads one."""
        attention = layer.self_attn
        packed = F.linear(layer.norm1(hidden), attention.in_proj_weight, attention.in_proj_bias)
        query, keys, values = (part.unflatten(-1, (self.num_heads, -1)).transpose(1, 2) for part in packed.chunk(3, -1))
        if past_keys is not None:
            keys, values = torch.cat([past_keys, keys], dim=2), torch.cat([past_values, values], dim=2)
        attended = F.scaled_dot_product_attention(query, keys, values, attn_mask=allowed[:, None])
        hidden = hidden + attention.out_proj(attended.transpose(1, 2).flatten(2))
        hidden = hidden + layer.linear2(layer.activation(layer.linear1(layer.norm2(hidden))))
        return hidden, keys, values


@dataclass
class KeyValueCache:
    """Per layer, the keys and values of the positions decoded so far, and which were real."""

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    keep: torch.Tensor  # bool [B, T]


WEIGHT_PATTERNS = ("*.safetensors", "*.safetensors.index.json", "pytorch_model*.bin")


def check_model_directory(path: str | Path) -> Path:
    """A local HF checkpoint directory, or one error saying what is missing and where."""
    directory = Path(path)
    wanted = "config.json, the weights (*.safetensors) and the tokenizer files"
    if not directory.is_dir():
        raise DataError(directory, f"model directory not found; put the checkpoint there ({wanted})")
    missing = []
    if not (directory / "config.json").is_file():
        missing.append("config.json")
    if not any(any(directory.glob(pattern)) for pattern in WEIGHT_PATTERNS):
        missing.append("weights (*.safetensors or pytorch_model*.bin)")
    if missing:
        raise DataError(directory, f"incomplete model directory: no {' and no '.join(missing)} (it must hold {wanted})")
    return directory


def check_fits(vocab_size: int | None, max_length: int | None, embedded: int, config: Any) -> None:
    """The data's vocabulary and window length must fit the pretrained model."""
    if vocab_size is not None and vocab_size > embedded:
        raise ConfigError("vocab_size", f"the vocabulary needs {vocab_size} ids but the model embeds only {embedded}")
    limit = getattr(config, "max_position_embeddings", None)
    if max_length is not None and limit is not None and max_length > limit:
        raise ConfigError("max_length", f"windows are {max_length} tokens, the model takes at most {limit}")


def llada2(
    path: str | Path,
    dtype: str = "float32",
    gradient_checkpointing: bool = False,
    lora: dict[str, Any] | None = None,
    load_on_rank_zero_only: bool = False,
    pretrained_weights: bool = True,
    causal: bool = False,
    vocab_size: int | None = None,
    max_length: int | None = None,
) -> nn.Module:
    """LLaDA2.0 through the project's own LLaDA2-MoE (:mod:`anyorder.models.llada2`), no checkpoint code.

    Full fine-tuning loads ``dtype`` (float32: the optimizer's master weights; the trainer's
    ``bf16-mixed`` computes in bf16). With ``lora.r > 0`` the base is frozen in
    ``lora.base_dtype`` (bf16) and only adapters on ``lora.targets`` train, in float32.
    With ``load_on_rank_zero_only`` (set when the FSDP strategy broadcasts rank 0's
    weights, ``strategy=fsdp``) the other ranks build the model on the meta device:
    the host holds one copy of the checkpoint per node group, not one per GPU. Without
    ``pretrained_weights`` no rank reads them: a skeleton for a fine-tuned run's own weights.
    """
    from anyorder.models.llada2 import from_pretrained
    from anyorder.models.lora import DEFAULT_TARGETS, add_lora

    directory = check_model_directory(path)
    settings = dict(lora or {})
    adapted = settings.get("r", 0) > 0
    load = pretrained_weights and (not load_on_rank_zero_only or rank_zero_only.rank == 0)
    model = from_pretrained(directory, settings.get("base_dtype", "bfloat16") if adapted else dtype, load=load)
    if not load:
        log.info(
            "rank %d builds LLaDA2 on the meta device; rank 0's weights reach it when it is sharded",
            rank_zero_only.rank,
        )
    check_fits(vocab_size, max_length, model.vocab_size, model.config)
    model.gradient_checkpointing = gradient_checkpointing
    model.causal = causal
    if adapted:
        targets = settings.get("targets") or DEFAULT_TARGETS
        count = add_lora(model, settings["r"], targets, settings.get("alpha"), settings.get("dropout", 0.0))
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        total = sum(p.numel() for p in model.parameters())
        print(f"LoRA r={settings['r']}: {count} adapters on {list(targets)}; {trainable:,} of {total:,} params train")
    return model.train()  # Lightning keeps the modes it is given; from_pretrained returns eval mode


def pretrained(
    path: str | Path,
    model_class: type = AutoModelForMaskedLM,
    trust_remote_code: bool = False,
    dtype: str = "bfloat16",
    gradient_checkpointing: bool = False,
    lora: dict[str, Any] | None = None,
    vocab_size: int | None = None,
    max_length: int | None = None,
) -> Backbone:
    """Any local HF model whose forward takes ``input_ids`` (+ ``attention_mask``) and returns logits.

    ``model_class`` picks the auto class (masked LM for LLaDA-style models, causal LM for
    others); ``trust_remote_code`` runs modeling code shipped with the checkpoint (LLaDA2.0)
    and is only ever set by the user. ``lora`` with ``r > 0`` wraps the model with peft LoRA
    adapters (all linear layers by default), freezing the base weights.
    """
    directory = check_model_directory(path)
    try:
        model = model_class.from_pretrained(
            str(directory), trust_remote_code=trust_remote_code, dtype=getattr(torch, dtype), local_files_only=True
        )
    except ValueError as error:
        hint = (
            " (set model.trust_remote_code=true for checkpoints that ship their own code)"
            if "trust_remote_code" in str(error)
            else ""
        )
        raise DataError(directory, f"cannot load the model: {str(error).splitlines()[0]}{hint}") from None
    check_fits(vocab_size, max_length, model.get_input_embeddings().num_embeddings, model.config)
    if gradient_checkpointing:
        model.gradient_checkpointing_enable()
    if lora and lora.get("r", 0) > 0:
        from peft import LoraConfig, get_peft_model

        settings = {"lora_alpha": 2 * lora["r"], "lora_dropout": 0.05, "target_modules": "all-linear", **lora}
        model = get_peft_model(model, LoraConfig(**settings))
    return Backbone(model)
