"""Learning-rate schedules, as ``tf.keras.optimizers.schedules``.

The schedules live in ``kerasopt._schedules`` and their ``serialize`` / ``deserialize`` in
``kerasopt._serialization`` (the optimizer base class imports both, and this package imports the
base class); this module is their public name.

Example:
    >>> import kerasopt as ko
    >>> s = ko.optimizers.schedules.ExponentialDecay(0.1, decay_steps=10, decay_rate=0.5)
    >>> round(float(s(10)), 6)
    0.05
"""

from .._schedules import (
    CosineDecay,
    CosineDecayRestarts,
    ExponentialDecay,
    InverseTimeDecay,
    LearningRateSchedule,
    PiecewiseConstantDecay,
    PolynomialDecay,
)
from .._serialization import deserialize_schedule as deserialize
from .._serialization import serialize_schedule as serialize

__all__ = [
    "CosineDecay",
    "CosineDecayRestarts",
    "ExponentialDecay",
    "InverseTimeDecay",
    "LearningRateSchedule",
    "PiecewiseConstantDecay",
    "PolynomialDecay",
    "deserialize",
    "serialize",
]
