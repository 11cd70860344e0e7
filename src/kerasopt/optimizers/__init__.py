"""The optimizer family and ``get`` / ``serialize`` / ``deserialize`` (TF's names and formats)."""

from __future__ import annotations

from typing import Any

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
    "schedules",
    "serialize",
]

# Names `get` and `deserialize` accept, lower-cased. Only these classes (and `custom_objects`) can
# be built from a config: nothing named in a config is ever imported.
_REGISTRY: dict[str, type[Optimizer]] = {}


def _register(*classes: type[Optimizer]) -> None:
    for cls in classes:
        _REGISTRY[cls.__name__.lower()] = cls


_register(AdamW, Lion, Lamb, Adafactor)
_register(RMSprop, Nadam)
_register(SGD, Adam, Adagrad, Adadelta, Adamax, Ftrl)
_register(Muon)
_register(ScheduleFreeAdamW)


def serialize(optimizer: Optimizer) -> dict[str, Any]:
    """The Keras serialization dict of an optimizer.

    Example:
        >>> import kerasopt as ko
        >>> d = ko.optimizers.serialize(ko.optimizers.SGD(0.5))
        >>> d["class_name"], d["config"]["learning_rate"]
        ('SGD', 0.5)
    """
    if not isinstance(optimizer, Optimizer) and not hasattr(optimizer, "get_config"):
        raise TypeError(f"serialize() expects an optimizer; got {type(optimizer).__name__}.")
    return {
        "module": "kerasopt.optimizers",
        "class_name": type(optimizer).__name__,
        "config": optimizer.get_config(),
        "registered_name": None,
    }


def deserialize(config: dict[str, Any], custom_objects: dict[str, Any] | None = None) -> Any:
    """Builds an optimizer from ``serialize()`` output (or TF's ``{"class_name", "config"}``).

    Raises:
        ValueError: unknown ``class_name`` or a malformed dict.
    """
    if not isinstance(config, dict):
        raise ValueError(f"deserialize() expects a dict; got {type(config).__name__}.")
    class_name = config.get("class_name")
    inner = config.get("config", {})
    if not isinstance(class_name, str):
        raise ValueError(f"Optimizer config needs a string 'class_name'; got {class_name!r}.")
    if not isinstance(inner, dict):
        raise ValueError(f"Optimizer config's 'config' must be a dict; got {type(inner).__name__}.")
    cls: Any = None
    if custom_objects and class_name in custom_objects:
        cls = custom_objects[class_name]
    else:
        cls = _lookup(class_name)
    if cls is None:
        raise ValueError(f"Unknown optimizer: {class_name!r}. Known: {sorted(_REGISTRY)}.")
    try:
        return cls.from_config(inner, custom_objects=custom_objects)
    except TypeError as e:
        raise ValueError(f"Invalid config for optimizer {class_name!r}: {e}") from e


def _lookup(name: str) -> Any:
    from ..wrappers import WRAPPERS

    return _REGISTRY.get(name.lower()) or WRAPPERS.get(name)


def get(identifier: Any) -> Any:
    """An optimizer from an instance (returned as is), a config dict or a name.

    Example:
        >>> import kerasopt as ko
        >>> type(ko.optimizers.get("adam")).__name__
        'Adam'
    """
    if isinstance(identifier, Optimizer) or (
        hasattr(identifier, "apply_gradients") and hasattr(identifier, "get_config")
    ):
        return identifier
    if isinstance(identifier, dict):
        return deserialize(identifier)
    if isinstance(identifier, str):
        cls = _REGISTRY.get(identifier.lower())
        if cls is None:
            raise ValueError(f"Could not interpret optimizer identifier: {identifier!r}")
        return cls()
    raise ValueError(f"Could not interpret optimizer identifier: {identifier!r}")
