"""Which tokens to hide (strategies), how many (rates, schedules), and the callback that applies them."""

from anyorder.masking.callback import MaskingCallback
from anyorder.masking.strategies import (
    ActionInpainting,
    AttributeMasking,
    CellMasking,
    InverseMasking,
    MaskingStrategy,
    Mixture,
    NextActionMasking,
    NextObservationMasking,
    StepMasking,
    UniformMasking,
)

__all__ = [
    "ActionInpainting",
    "AttributeMasking",
    "CellMasking",
    "InverseMasking",
    "MaskingCallback",
    "MaskingStrategy",
    "Mixture",
    "NextActionMasking",
    "NextObservationMasking",
    "StepMasking",
    "UniformMasking",
]
