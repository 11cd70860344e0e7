"""Serialization: the registries of the classes a config may name, and the one ``from_config``.

Keras's dict format (``{"module", "class_name", "config", "registered_name"}``) for optimizers
(``kerasopt.optimizers.serialize``) and learning-rate schedules
(``kerasopt.optimizers.schedules.serialize``). ``deserialize`` builds only a registered class or one
passed in ``custom_objects``: nothing named in a config is ever imported or evaluated, so a config
file cannot run code.

Schedules are registered here. Optimizers (the algorithms and the wrappers) are registered by
``kerasopt.optimizers``: the base class imports this module, so this module cannot import them.

``build_from_config`` is the one ``from_config`` of every optimizer and wrapper: ``lr`` is
``learning_rate``'s legacy name, a dict learning rate is a serialized schedule, and the wrappers
name the arguments that hold serialized optimizers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from . import _schedules
from ._schedules import LearningRateSchedule

_T = TypeVar("_T")

# By lower-cased class name (TF's `get("adam")`; `deserialize` takes any capitalisation), with
# whether `get(name)` may build the class with no argument (a wrapper needs an optimizer).
_OPTIMIZERS: dict[str, tuple[type[Any], bool]] = {}
_SCHEDULES: dict[str, type[LearningRateSchedule]] = {
    cls.__name__: cls
    for cls in (
        _schedules.ExponentialDecay,
        _schedules.PiecewiseConstantDecay,
        _schedules.PolynomialDecay,
        _schedules.InverseTimeDecay,
        _schedules.CosineDecay,
        _schedules.CosineDecayRestarts,
    )
}


def register_optimizers(*classes: type[Any], by_name: bool = True) -> None:
    """Lets ``deserialize`` build ``classes`` by class name (any capitalisation).

    Args:
        classes: optimizer (or wrapper) classes with ``from_config(config, custom_objects)``.
        by_name: whether ``get(name)`` may build them with no argument.
    """
    for cls in classes:
        _OPTIMIZERS[cls.__name__.lower()] = (cls, by_name)


# ---------------------------------------------------------------------------------------------
# from_config
# ---------------------------------------------------------------------------------------------


def build_from_config(
    cls: type[_T],
    config: Any,
    custom_objects: Mapping[str, Any] | None = None,
    *,
    optimizers: Sequence[str] = (),
    optimizer_dicts: Sequence[str] = (),
) -> _T:
    """``cls(**config)``, once what the config holds in serialized form is rebuilt.

    Args:
        cls: the class to build.
        config: what ``get_config()`` returned (or TF wrote).
        custom_objects: classes by class name, for the schedule and optimizers in ``config``.
        optimizers: the keys whose value, when a dict, is a serialized optimizer.
        optimizer_dicts: the keys whose value is a ``{name: serialized optimizer}`` dict.

    Returns:
        The object. ``lr`` is renamed ``learning_rate`` (and wins over it), and a dict
        ``learning_rate`` is deserialized as a schedule.

    Raises:
        TypeError: ``config`` is not a dict, or the constructor rejects its keys.
    """
    if not isinstance(config, dict):
        raise TypeError(f"`config` must be a dict; got {type(config).__name__}.")
    config = dict(config)
    if "lr" in config:
        config["learning_rate"] = config.pop("lr")
    if isinstance(config.get("learning_rate"), dict):
        config["learning_rate"] = deserialize_schedule(
            config["learning_rate"], custom_objects=custom_objects
        )
    for key in optimizers:
        if isinstance(config.get(key), dict):
            config[key] = deserialize(config[key], custom_objects)
    for key in optimizer_dicts:
        entries = config.get(key)
        if isinstance(entries, dict):
            config[key] = {
                k: deserialize(v, custom_objects) if isinstance(v, dict) else v
                for k, v in entries.items()
            }
    return cls(**config)


# ---------------------------------------------------------------------------------------------
# Optimizers
# ---------------------------------------------------------------------------------------------


def serialize(optimizer: Any) -> dict[str, Any]:
    """The Keras serialization dict of an optimizer (or of a wrapper, or an ``OptimizerMap``).

    Raises:
        TypeError: ``optimizer`` has no ``get_config``.

    Example:
        >>> import kerasopt as ko
        >>> d = ko.optimizers.serialize(ko.optimizers.SGD(0.5))
        >>> d["class_name"], d["config"]["learning_rate"]
        ('SGD', 0.5)
    """
    if not hasattr(optimizer, "get_config"):
        raise TypeError(f"serialize() expects an optimizer; got {type(optimizer).__name__}.")
    return {
        "module": "kerasopt.optimizers",
        "class_name": type(optimizer).__name__,
        "config": optimizer.get_config(),
        "registered_name": None,
    }


def deserialize(config: dict[str, Any], custom_objects: Mapping[str, Any] | None = None) -> Any:
    """Builds an optimizer from ``serialize()`` output (or TF's ``{"class_name", "config"}``).

    The class is ``custom_objects[class_name]``, else the registered optimizer of that name (any
    capitalisation); ``module`` and other keys are ignored.

    Raises:
        ValueError: unknown ``class_name``, a malformed dict, or a config the class rejects.
    """
    if not isinstance(config, dict):
        raise ValueError(f"deserialize() expects a dict; got {type(config).__name__}.")
    class_name = config.get("class_name")
    inner = config.get("config", {})
    if not isinstance(class_name, str):
        raise ValueError(f"Optimizer config needs a string 'class_name'; got {class_name!r}.")
    if not isinstance(inner, dict):
        raise ValueError(f"Optimizer config's 'config' must be a dict; got {type(inner).__name__}.")
    if custom_objects and class_name in custom_objects:
        cls = custom_objects[class_name]
    elif class_name.lower() in _OPTIMIZERS:
        cls = _OPTIMIZERS[class_name.lower()][0]
    else:
        raise ValueError(f"Unknown optimizer: {class_name!r}. Known: {sorted(_OPTIMIZERS)}.")
    try:
        return cls.from_config(inner, custom_objects=custom_objects)
    except TypeError as e:
        raise ValueError(f"Invalid config for optimizer {class_name!r}: {e}") from e


def get(identifier: Any) -> Any:
    """An optimizer from an instance (returned as is), a config dict or a name
    (``kerasopt.optimizers.get`` types it)."""
    if hasattr(identifier, "apply_gradients") and hasattr(identifier, "get_config"):
        return identifier
    if isinstance(identifier, dict):
        return deserialize(identifier)
    if isinstance(identifier, str):
        cls, by_name = _OPTIMIZERS.get(identifier.lower(), (None, False))
        if cls is not None and by_name:
            return cls()
    raise ValueError(f"Could not interpret optimizer identifier: {identifier!r}")


# ---------------------------------------------------------------------------------------------
# Schedules
# ---------------------------------------------------------------------------------------------


def serialize_schedule(schedule: LearningRateSchedule) -> dict[str, Any]:
    """Returns a JSON-serializable dict describing ``schedule``.

    Args:
        schedule: the schedule to serialize.

    Returns:
        ``{"module": "kerasopt.optimizers.schedules", "class_name": <class name>,
        "config": schedule.get_config(), "registered_name": None}`` (Keras 3's layout).

    Raises:
        TypeError: if ``schedule`` is not a ``LearningRateSchedule``.
        NotImplementedError: if the schedule does not implement ``get_config()``.

    Example:
        >>> from kerasopt.optimizers.schedules import ExponentialDecay
        >>> serialize_schedule(ExponentialDecay(0.1, 10, 0.5))["class_name"]
        'ExponentialDecay'
    """
    if not isinstance(schedule, LearningRateSchedule):
        raise TypeError(
            "`serialize` expects a LearningRateSchedule, received: "
            f"{schedule!r} of type {type(schedule).__name__}."
        )
    return {
        "module": "kerasopt.optimizers.schedules",
        "class_name": type(schedule).__name__,
        "config": schedule.get_config(),
        "registered_name": None,
    }


def deserialize_schedule(
    config: dict[str, Any],
    custom_objects: Mapping[str, Any] | None = None,
) -> LearningRateSchedule:
    """Builds a schedule from a dict made by ``serialize`` (or by TensorFlow/Keras).

    Accepts ``{"class_name": ..., "config": {...}}`` with any extra keys (``module``,
    ``registered_name``) ignored. The class is looked up by name in ``custom_objects`` first, then
    among the registered schedules; no name in the dict is ever imported.

    Args:
        config: the serialized schedule.
        custom_objects: extra ``LearningRateSchedule`` subclasses by class name.

    Returns:
        The schedule, built with ``cls.from_config(config["config"])``.

    Raises:
        TypeError: if ``config``, its ``"config"`` entry or ``custom_objects`` has the wrong type,
            or if the arguments do not fit the class.
        ValueError: if ``"class_name"`` or ``"config"`` is missing, or the class is unknown.

    Example:
        >>> from kerasopt.optimizers.schedules import CosineDecay
        >>> s = deserialize_schedule(serialize_schedule(CosineDecay(1.0, 10)))
        >>> type(s).__name__, float(s(10))
        ('CosineDecay', 0.0)
        >>> float(deserialize_schedule({"class_name": "InverseTimeDecay",
        ...                             "config": {"initial_learning_rate": 1.0, "decay_steps": 1,
        ...                                        "decay_rate": 1.0}})(1))
        0.5
    """
    if not isinstance(config, Mapping):
        raise TypeError(
            "`deserialize` expects a dict with keys 'class_name' and 'config', received: "
            f"{config!r} of type {type(config).__name__}."
        )
    for key in ("class_name", "config"):
        if key not in config:
            raise ValueError(
                f"Cannot deserialize a learning rate schedule: missing key '{key}' in {config!r}."
            )
    class_name = config["class_name"]
    if not isinstance(class_name, str):
        raise TypeError(
            f"'class_name' must be a string, received: {class_name!r} of type "
            f"{type(class_name).__name__}."
        )
    inner = config["config"]
    if not isinstance(inner, Mapping):
        raise TypeError(
            f"'config' of {class_name} must be a dict, received: {inner!r} of type "
            f"{type(inner).__name__}."
        )
    if any(not isinstance(k, str) for k in inner):
        raise TypeError(f"'config' of {class_name} must have string keys, received: {inner!r}.")

    cls = _schedule_class(class_name, custom_objects)
    try:
        return cls.from_config(dict(inner))
    except TypeError as e:
        # e.g. "got an unexpected keyword argument": say which schedule and config.
        raise TypeError(
            f"Cannot build learning rate schedule {class_name} from config {dict(inner)!r}: {e}"
        ) from e


def _schedule_class(
    class_name: str, custom_objects: Mapping[str, Any] | None
) -> type[LearningRateSchedule]:
    if custom_objects is not None:
        if not isinstance(custom_objects, Mapping):
            raise TypeError(
                f"`custom_objects` must be a dict, received: {type(custom_objects).__name__}."
            )
        if class_name in custom_objects:
            cls = custom_objects[class_name]
            if not (isinstance(cls, type) and issubclass(cls, LearningRateSchedule)):
                raise TypeError(
                    f"custom_objects[{class_name!r}] must be a LearningRateSchedule subclass, "
                    f"received: {cls!r}."
                )
            return cls
    if class_name in _SCHEDULES:
        return _SCHEDULES[class_name]
    known = sorted(_SCHEDULES) + sorted(custom_objects or {})
    raise ValueError(
        f"Unknown learning rate schedule: '{class_name}'. Known schedules: {', '.join(known)}. "
        "Pass other LearningRateSchedule subclasses in `custom_objects`."
    )
