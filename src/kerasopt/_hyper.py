"""Hyperparameter declarations: one line gives validation, config, and step-time 0-d tensors.

``Hyper`` is TF's ``_set_hyper`` hyperparameter: a number, tensor, zero-argument callable or
``LearningRateSchedule``; numbers are stored in float32 (TF keeps them in float32 variables), so
their value at step time is float32-rounded and then cast to the variable's dtype.

``Param`` is a plain constructor argument (``epsilon``, ``amsgrad``, ...): converted exactly to the
variable's dtype when used, never float32-rounded.

Both are descriptors, so ``opt.beta_1 = 0.8`` validates and takes effect at the next step, and
``get_config`` is derived from the declarations instead of being written by hand.
"""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from .optimizer import Optimizer

Check = Callable[[str, Any], None]

_UNSET: Any = object()


def _is_number(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def number_value(value: object) -> float | None:
    """The value of a number or 0-d tensor as a Python float, else None (callables, schedules)."""
    if _is_number(value):
        return float(value)  # type: ignore[arg-type]
    if isinstance(value, torch.Tensor) and value.dim() == 0:
        return float(value.detach().cpu())
    return None


# -- checks: each names the argument in its message ------------------------------------------
def non_negative(name: str, value: Any) -> None:
    v = number_value(value)
    if v is not None and (math.isnan(v) or v < 0):
        raise ValueError(f"Expected {name} >= 0, received: {value}")


def unit_interval(name: str, value: Any) -> None:
    v = number_value(value)
    if v is not None and not 0 <= v <= 1:
        raise ValueError(f"`{name}` must be between [0, 1]. Received: {name}={value}")


def positive_int_or_none(name: str, value: Any) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"`{name}` must be an integer >= 1 or None. Received: {name}={value!r}")


def is_number_or_none(name: str, value: Any) -> None:
    if value is not None and number_value(value) is None:
        raise TypeError(f"`{name}` must be a number or None. Received: {name}={value!r}")


def check_hyper_value(name: str, value: Any) -> None:
    """A hyperparameter must be a number, a 0-d tensor, or a callable (incl. schedules)."""
    if callable(value) or number_value(value) is not None:
        return
    raise ValueError(
        f"Argument `{name}` should be float, or an instance of LearningRateSchedule, or a "
        f"callable (that takes no arguments and returns a float). Received: {name}={value!r}"
    )


class Hyper:
    """A TF-style hyperparameter (float32-stored number, tensor, callable or schedule).

    Args:
        default: the default value (documentation; constructors pass the value explicitly).
        check: validation applied to numbers when the value is set.
    """

    #: False for ``_set_hyper`` names made attributes (kerasopt._legacy), not declared by a class
    is_declaration = True

    def __init__(self, default: Any = None, *, check: Check | None = None) -> None:
        self.default = default
        self.check = check
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, opt: Optimizer | None, owner: type | None = None) -> Any:
        if opt is None:
            return self
        return opt._hyper_read(self.name)

    def __set__(self, opt: Optimizer, value: Any) -> None:
        check_hyper_value(self.name, value)
        if self.check is not None:
            self.check(self.name, value)
        opt._set_hyper(self.name, value)


class Param:
    """A plain constructor argument: stored as given (after ``convert``), exact at step time.

    Args:
        default: default value.
        check: validation, called with (name, value).
        convert: normalisation applied before storing (e.g. TF's ``epsilon or 1e-7``).
        config: whether the value belongs in ``get_config()``.
    """

    def __init__(
        self,
        default: Any = None,
        *,
        check: Check | None = None,
        convert: Callable[[Any], Any] | None = None,
        config: bool = True,
    ) -> None:
        self.default = default
        self.check = check
        self.convert = convert
        self.config = config
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, opt: Optimizer | None, owner: type | None = None) -> Any:
        if opt is None:
            return self
        return opt._params.get(self.name, self.default)

    def __set__(self, opt: Optimizer, value: Any) -> None:
        if self.check is not None:
            self.check(self.name, value)
        if self.convert is not None:
            value = self.convert(value)
        opt._params[self.name] = value
        opt._on_param_change(self.name)


def epsilon_or_default(value: Any) -> float:
    """TF's ``epsilon or backend.epsilon()``: None and 0 become 1e-7 (a quirk kept on purpose)."""
    number = None if value is None else float(value)
    # Converted first: a string "0" (from a hand-written config) is 0 too, so get_config /
    # from_config round-trip.
    return number or 1e-7


def tf_cast_value(value: float) -> float:
    """The value TF's ``tf.cast(python_float, dtype)`` produces, for any float ``dtype``.

    ``tf.cast`` (and Keras 3's ``ops.cast`` on the TensorFlow backend) first turns a Python float
    into a float32 tensor, so the number is float32-rounded before it reaches a float64 (or half)
    variable's dtype. Rounding to float32 and then to a narrower type gives what TF gives.
    """
    return _float32_rounded(float(value))


@functools.lru_cache(maxsize=256)
def _float32_rounded(value: float) -> float:
    return float(torch.tensor(value, dtype=torch.float32))


def declared(cls: type) -> list[Hyper | Param]:
    """Hyper/Param declarations of a class and its bases, base-first, each name once."""
    seen: dict[str, Hyper | Param] = {}
    for klass in reversed(cls.__mro__):
        for key, value in vars(klass).items():
            if isinstance(value, Param) or (isinstance(value, Hyper) and value.is_declaration):
                seen[key] = value  # a redeclaration keeps the base's position (TF's key order)
    return list(seen.values())
