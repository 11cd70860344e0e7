"""``kerasopt.optimizers.legacy``: ``tf.keras.optimizers.legacy`` (TF 2.11+), by its own name.

The same classes as ``kerasopt.optimizers`` (optimizer_v2 numerics), so code written against
``tf.keras.optimizers.legacy.Adam`` ports by a find-and-replace of ``tf.keras.optimizers.legacy``
with ``kerasopt.optimizers.legacy``. For ``tf.keras.optimizers`` of TF >= 2.11 / Keras 3 see
``kerasopt.keras3``.

Example:
    >>> import kerasopt as ko
    >>> ko.optimizers.legacy.Adam is ko.optimizers.Adam
    True
"""

from . import (
    SGD,
    Adadelta,
    Adafactor,
    Adagrad,
    Adam,
    Adamax,
    AdamW,
    Ftrl,
    Lamb,
    Lion,
    LossScaleOptimizer,
    MultiOptimizer,
    Muon,
    Nadam,
    Optimizer,
    OptimizerMap,
    RMSprop,
    ScheduleFreeAdamW,
    deserialize,
    get,
    schedules,
    serialize,
)

__all__ = [
    "SGD",
    "Adadelta",
    "Adafactor",
    "Adagrad",
    "Adam",
    "AdamW",
    "Adamax",
    "Ftrl",
    "Lamb",
    "Lion",
    "LossScaleOptimizer",
    "MultiOptimizer",
    "Muon",
    "Nadam",
    "Optimizer",
    "OptimizerMap",
    "RMSprop",
    "ScheduleFreeAdamW",
    "deserialize",
    "get",
    "schedules",
    "serialize",
]
