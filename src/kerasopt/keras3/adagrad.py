"""Adagrad — Keras 3's ``keras.optimizers.Adagrad``: epsilon inside the square root."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor

from .._hyper import Hyper, Param, non_negative, tf_cast_value
from ..optimizer import Coefficients
from ._base import Keras3Base

if TYPE_CHECKING:
    from typing import Unpack

    from .._features import BaseKeywords


class AdagradCoefficients(Coefficients):
    """Keras 3 Adagrad's step coefficients."""

    epsilon: Tensor


class Adagrad(Keras3Base):
    """Adagrad, as Keras 3 defines it.

    Update rule (``acc`` starting at ``initial_accumulator_value``)::

        acc += g*g
        var -= lr * g / sqrt(acc + epsilon)

    Legacy TF (``kerasopt.optimizers.Adagrad``) adds epsilon outside the square root. Keras 3
    does not check that ``initial_accumulator_value`` is non-negative; the accumulator starts at
    it as Keras's ``Constant`` initializer casts it (through float32). Sparse gradients (Keras 3
    on TensorFlow): only the indexed rows move, ``g*g`` being the row sum of the squares of the
    entries.

    Args:
        learning_rate: float, schedule or callable. Defaults to 0.001.
        initial_accumulator_value: Defaults to 0.1.
        epsilon: Defaults to 1e-7.
        name: defaults to ``"adagrad"``.
        **kwargs: Keras 3's base keywords.

    Example:
        >>> import kerasopt as ko
        >>> var = ko.Variable([1.0, 2.0])
        >>> opt = ko.keras3.Adagrad(learning_rate=0.1)
        >>> _ = opt.minimize(lambda: (var**2).sum(), [var])
        >>> [round(x, 4) for x in var.numpy().tolist()]
        [0.9012, 1.9003]
    """

    coefficients: ClassVar[type[Coefficients]] = AdagradCoefficients

    supports_complex: ClassVar[bool] = False
    learning_rate = Hyper(0.001, check=non_negative)
    initial_accumulator_value = Param(0.1)
    epsilon = Param(1e-7)
    slots: ClassVar[tuple[str, ...]] = ("accumulator",)

    def __init__(
        self,
        learning_rate: Any = 0.001,
        initial_accumulator_value: float = 0.1,
        epsilon: float = 1e-7,
        name: str | None = None,
        **kwargs: Unpack[BaseKeywords],
    ) -> None:
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.initial_accumulator_value = initial_accumulator_value
        self.epsilon = epsilon

    def slot_initializer(self, slot_name: str) -> Any:
        return tf_cast_value(self.initial_accumulator_value)

    def prepare(self, c: AdagradCoefficients, device: torch.device, dtype: torch.dtype) -> None:
        c.epsilon = self._py(self.epsilon, dtype, device)

    def update(self, var: Any, grad: Any, accumulator: Any, *, c: AdagradCoefficients) -> None:
        accumulator.add_(c.square(grad))
        c.sub_quotient(var, grad, c.lr_t, (accumulator + c.epsilon).sqrt())
