"""The optimizer family and ``get`` / ``serialize`` / ``deserialize`` (TF's names and formats)."""

import typing as _typing

from .. import _serialization
from .._serialization import deserialize, serialize
from .._serialization import register_optimizers as _register
from ..optimizer import Optimizer
from ..wrappers.loss_scale import LossScaleOptimizer
from ..wrappers.multi import MultiOptimizer, OptimizerMap
from . import schedules
from .adadelta import Adadelta
from .adafactor import Adafactor
from .adagrad import Adagrad
from .adam import Adam
from .adamax import Adamax
from .adamw import AdamW
from .ftrl import Ftrl
from .lamb import Lamb
from .lion import Lion
from .muon import Muon
from .nadam import Nadam
from .rmsprop import RMSprop
from .schedule_free_adamw import ScheduleFreeAdamW
from .sgd import SGD

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
    "legacy",
    "schedules",
    "serialize",
]

# The only classes a config may name (besides `custom_objects`): nothing named in a config is
# ever imported. The wrappers need an optimizer to wrap, so `get(name)` does not build them.
_register(
    SGD,
    Adam,
    Adagrad,
    Adadelta,
    Adamax,
    Ftrl,
    RMSprop,
    Nadam,
    AdamW,
    Lion,
    Lamb,
    Adafactor,
    Muon,
    ScheduleFreeAdamW,
)
_register(LossScaleOptimizer, MultiOptimizer, OptimizerMap, by_name=False)


def get(identifier: _typing.Any) -> Optimizer:
    """An optimizer from an instance (returned as is), a config dict (``serialize()`` output) or
    a class name (TF's ``tf.keras.optimizers.get``).

    Raises:
        ValueError: an identifier that names no optimizer.

    Example:
        >>> import kerasopt as ko
        >>> opt = ko.optimizers.get("adam")
        >>> type(opt).__name__, float(opt.learning_rate)
        ('Adam', 0.0010000000474974513)
        >>> ko.optimizers.get(opt) is opt
        True
    """
    return _typing.cast(Optimizer, _serialization.get(identifier))


from . import legacy  # noqa: E402  (an alias of this namespace: tf.keras.optimizers.legacy)
