"""Which tokens to hide (strategies), how many (rates, schedules), and the callback that applies them."""

from anyorder.masking.callback import MaskingCallback
from anyorder.masking.strategies import (
    ActionInpainting,
    AttributeMasking,
    CellMasking,
    MaskingStrategy,
    Mixture,
    NextActionMasking,
    StepMasking,
    UniformMasking,
)

__all__ = [
    "ActionInpainting",
    "AttributeMasking",
    "CellMasking",
    "MaskingCallback",
    "MaskingStrategy",
    "Mixture",
    "NextActionMasking",
    "StepMasking",
    "UniformMasking",
]
