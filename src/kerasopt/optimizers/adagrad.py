"""Adagrad — TF's ``tf.keras.optimizers.Adagrad`` (optimizer_v2 numerics)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor

from .._hyper import Hyper, Param, epsilon_or_default, non_negative, number_value
from ..optimizer import Coefficients, Optimizer

if TYPE_CHECKING:
    from typing import Unpack

    from .._features import BaseKeywords


def _non_negative_accumulator(name: str, value: Any) -> None:
    v = number_value(value)
    if v is not None and v < 0.0:
        raise ValueError(f"initial_accumulator_value must be non-negative: {value}")


class AdagradCoefficients(Coefficients):
    """Adagrad's step coefficients (``prepare`` sets them, the rule reads them)."""

    epsilon: Tensor


class Adagrad(Optimizer):
    """Adagrad: per-coordinate learning rates from the sum of squared gradients (TF's Adagrad).

    Update rule (docs/reference-behaviour.md Part 1 §1.10), ``acc`` starting at ``initial_accumulator_value``::

        acc += g * g
        var -= lr * g / (sqrt(acc) + epsilon)

    Sparse gradients update only their rows of ``var`` and ``acc`` (the same two lines).

    Unlike ``torch.optim.Adagrad`` (accumulator starting at 0, ``eps=1e-10``, its own
    ``lr_decay``), the accumulator starts at 0.1 and epsilon defaults to 1e-7.

    Args:
        learning_rate: float, schedule or callable. Defaults to 0.001.
        initial_accumulator_value: starting value of the ``accumulator`` slot; must be >= 0.
            Defaults to 0.1.
        epsilon: defaults to 1e-7 (``None`` or 0 also mean 1e-7, as in TF).
        name: defaults to ``"Adagrad"``.
        **kwargs: the base-class keywords (``clipnorm``, ``decay``, ``weight_decay``, ...).

    Raises:
        ValueError: if ``initial_accumulator_value`` is negative.

    Example:
        >>> import kerasopt as ko
        >>> var = ko.Variable([1.0, 2.0])
        >>> opt = ko.optimizers.Adagrad(learning_rate=0.1)
        >>> _ = opt.minimize(lambda: (var**2).sum(), [var])
        >>> [round(x, 4) for x in var.numpy().tolist()]
        [0.9012, 1.9003]
        >>> [round(x, 4) for x in opt.get_slot(var, "accumulator").numpy().tolist()]
        [4.1, 16.1]
    """

    coefficients: ClassVar[type[Coefficients]] = AdagradCoefficients

    supports_complex: ClassVar[bool] = True
    keras_v1_weights: ClassVar[str | None] = "without_iterations"
    learning_rate = Hyper(0.001, check=non_negative)
    initial_accumulator_value = Param(0.1, check=_non_negative_accumulator, convert=float)
    epsilon = Param(1e-7, convert=epsilon_or_default)

    slots: ClassVar[tuple[str, ...]] = ("accumulator",)

    def __init__(
        self,
        learning_rate: Any = 0.001,
        initial_accumulator_value: float = 0.1,
        epsilon: float | None = 1e-7,
        name: str = "Adagrad",
        **kwargs: Unpack[BaseKeywords],
    ) -> None:
        super().__init__(name=name, learning_rate=learning_rate, **kwargs)
        self.initial_accumulator_value = initial_accumulator_value
        self.epsilon = epsilon

    def slot_initializer(self, slot_name: str) -> Any:
        return self.initial_accumulator_value

    def prepare(self, c: AdagradCoefficients, device: torch.device, dtype: torch.dtype) -> None:
        c.epsilon = self._const(self.epsilon, dtype, device)

    def update(self, var: Any, grad: Any, accumulator: Any, *, c: AdagradCoefficients) -> None:
        accumulator.add_(grad * grad)
        c.sub_quotient(var, grad, c.lr_t, accumulator.sqrt().add_(c.epsilon))
