"""The autoregressive baseline: next-token prediction over the same sequences, left to right.

What an LLM-agent researcher runs first: the same backbone with causal attention, the same
token layout (mission, then per step: cells, direction, action), the same batches, trained to
predict each token from the tokens before it::

    L = mean over scored positions i of  -log p(x_i | x_<i)

scored = every real token that has a real token before it (``loss_kinds=null``: a world model
and a policy), or the action tokens only (``loss_kinds=[action]``: agent SFT as usually done).
No mask is ever drawn: the masking callback of the config is not used by this objective.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from anyorder.data.layout import TokenKind
from anyorder.errors import ConfigError
from anyorder.models.causal import shift_to_targets
from anyorder.models.module import AnyOrderModule, Batch
from anyorder.models.objective import ObjectiveOutput, token_nll


class AutoregressiveModule(AnyOrderModule):
    """:class:`AnyOrderModule`'s training, evaluation and checkpoints, with a left-to-right objective.

    Args:
        loss_kinds: token kinds whose prediction is trained, by name (``[action]``); ``None``:
            every real token.
        *args, **kwargs: :class:`AnyOrderModule`'s; its backbone must attend causally
            (``model.backbone.causal=true``, which ``objective=autoregressive`` sets).
    """

    def __init__(self, *args: Any, loss_kinds: Sequence[str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not getattr(self.backbone, "causal", False):
            raise ConfigError("model.backbone.causal", "the autoregressive objective needs a causal backbone (true)")
        names = {kind.name.lower(): kind for kind in TokenKind if kind != TokenKind.PAD}
        unknown = sorted(set(loss_kinds or ()) - set(names))
        if unknown:
            raise ConfigError("model.loss_kinds", f"unknown token kinds {unknown}; choose among {sorted(names)}")
        kinds = [int(names[name]) for name in loss_kinds] if loss_kinds else [int(k) for k in names.values()]
        self.register_buffer("loss_kinds", torch.tensor(kinds, dtype=torch.long), persistent=False)

    def forward(self, batch: Batch, mask: torch.Tensor) -> torch.Tensor:
        """Logits moved onto the token each predicts (``out[:, i]`` scores token i from the tokens
        before it), with the positions of ``mask`` hidden from every later position."""
        inputs = batch["input_ids"].masked_fill(mask, self.hparams.mask_token_id)
        logits = self.backbone(inputs, batch["attention_mask"])
        return shift_to_targets(logits, batch["attention_mask"].bool())[0]

    def query_logits(self, batch: Batch, query: torch.Tensor) -> torch.Tensor:
        """Teacher forcing through the query: the log-probabilities at ``query`` sum to its joint
        log-likelihood given what precedes it (the chain rule, exact for this model)."""
        return self(batch, torch.zeros_like(query))

    def _objective(self, batch: Batch) -> ObjectiveOutput:
        keep = batch["attention_mask"].bool()
        logits, has_previous = shift_to_targets(self.backbone(batch["input_ids"], batch["attention_mask"]), keep)
        kind = batch["kind"]
        scored = has_previous & (kind != TokenKind.PAD) & torch.isin(kind, self.loss_kinds)
        nll = token_nll(logits, batch["input_ids"], scored)
        rows = scored.nonzero()[:, 0]
        counts = scored.sum(dim=1)
        per_sample = torch.zeros(len(scored), device=nll.device, dtype=nll.dtype).index_add_(0, rows, nll)
        per_sample = per_sample / counts.clamp(min=1)
        return ObjectiveOutput(
            loss=nll.mean(), token_nll=nll, mask=scored, sample_loss=per_sample, sample_weight=counts / counts.sum()
        )
