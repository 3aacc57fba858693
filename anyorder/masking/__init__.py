"""Which tokens to hide (strategies), how many (rates, schedules), and the callback that applies them."""

from anyorder.masking.callback import MaskingCallback
from anyorder.masking.strategies import (
    ActionMasking,
    AttributeMasking,
    CellMasking,
    MaskingStrategy,
    Mixture,
    StepMasking,
    UniformMasking,
)

__all__ = [
    "ActionMasking",
    "AttributeMasking",
    "CellMasking",
    "MaskingCallback",
    "MaskingStrategy",
    "Mixture",
    "StepMasking",
    "UniformMasking",
]
