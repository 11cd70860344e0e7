"""Adadelta — Keras 3's ``keras.optimizers.Adadelta``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor

from .._hyper import Hyper, Param, non_negative
from ..optimizer import Coefficients
from ._base import Keras3Base

if TYPE_CHECKING:
    from typing import Unpack

    from .._features import BaseKeywords


class AdadeltaCoefficients(Coefficients):
    """Keras 3 Adadelta's step coefficients."""

    rho: Tensor
    one_minus_rho: Tensor
    epsilon: Tensor


class Adadelta(Keras3Base):
    """Adadelta, as Keras 3 defines it (``rho`` and ``epsilon`` are Python floats, exact).

    Update rule::

        acc_g = rho * acc_g + (1 - rho) * g*g
        delta = -(sqrt(acc_d + epsilon) * g) / sqrt(acc_g + epsilon)
        acc_d = rho * acc_d + (1 - rho) * delta*delta
        var += lr * delta

    Slots ``accumulated_grad`` and ``accumulated_delta_var`` (variable by variable). Sparse
    gradients (Keras 3 on TensorFlow): both accumulators decay over every row, only the indexed
    rows of the variable move, and ``g*g`` and ``delta*delta`` are row sums over the entries.

    Args:
        learning_rate: float, schedule or callable. Defaults to 0.001.
        rho: Defaults to 0.95.
        epsilon: Defaults to 1e-7.
        name: defaults to ``"adadelta"``.
        **kwargs: Keras 3's base keywords.

    Example:
        >>> import torch, kerasopt as ko
        >>> var = ko.Variable([1.0, 2.0])
        >>> opt = ko.keras3.Adadelta(learning_rate=1.0)
        >>> _ = opt.apply_gradients([(torch.tensor([1.0, 1.0]), var)])
        >>> opt.get_slot_names()
        ['accumulated_grad', 'accumulated_delta_var']
    """

    coefficients: ClassVar[type[Coefficients]] = AdadeltaCoefficients

    learning_rate = Hyper(0.001, check=non_negative)
    rho = Param(0.95)
    epsilon = Param(1e-7)
    slots: ClassVar[tuple[str, ...]] = ("accumulated_grad", "accumulated_delta_var")

    def __init__(
        self,
        learning_rate: Any = 0.001,
        rho: float = 0.95,
        epsilon: float = 1e-7,
        name: str | None = None,
        **kwargs: Unpack[BaseKeywords],
    ) -> None:
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.rho = rho
        self.epsilon = epsilon

    def prepare(self, c: AdadeltaCoefficients, device: torch.device, dtype: torch.dtype) -> None:
        c.rho = self._py(self.rho, dtype, device)
        c.one_minus_rho = self._py(1 - self.rho, dtype, device)
        c.epsilon = self._py(self.epsilon, dtype, device)

    def update(
        self,
        var: Any,
        grad: Any,
        accumulated_grad: Any,
        accumulated_delta_var: Any,
        *,
        c: AdadeltaCoefficients,
    ) -> None:
        c.average(accumulated_grad, c.rho, c.square(grad), c.one_minus_rho)
        rms_delta = (accumulated_delta_var + c.epsilon).sqrt()
        rms_grad = (accumulated_grad + c.epsilon).sqrt()
        delta = -((rms_delta * grad) / rms_grad)
        if c.grad_sq is None:
            delta_sq = delta * delta
        else:  # Keras squares each entry's delta before the rows add up
            ratio = rms_delta / rms_grad
            delta_sq = (ratio * ratio) * c.grad_sq
        c.average(accumulated_delta_var, c.rho, delta_sq, c.one_minus_rho)
        c.add_product(var, delta, c.lr_t)
