"""Adadelta — TF's ``tf.keras.optimizers.Adadelta`` (optimizer_v2 numerics)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor

from .._hyper import Hyper, Param, epsilon_or_default, non_negative
from ..optimizer import Coefficients, Optimizer

if TYPE_CHECKING:
    from typing import Unpack

    from .._features import BaseKeywords


class AdadeltaCoefficients(Coefficients):
    """Adadelta's step coefficients (``prepare`` sets them, the rule reads them)."""

    rho: Tensor
    one_minus_rho: Tensor
    epsilon: Tensor


class Adadelta(Optimizer):
    """Adadelta: step sizes from running averages of squared gradients and updates (TF's Adadelta).

    Update rule (docs/reference-behaviour.md Part 1 §1.10)::

        accum_grad = accum_grad * rho + g*g * (1 - rho)
        update = sqrt(accum_var + epsilon) * rsqrt(accum_grad + epsilon) * g
        accum_var = accum_var * rho + update*update * (1 - rho)
        var -= lr * update

    Sparse gradients update only their rows of ``var`` and both slots (the same lines).

    The rule is ``torch.optim.Adadelta``'s, but with TF's defaults: ``learning_rate=0.001`` (not
    1.0), ``rho=0.95`` (not 0.9) and ``epsilon=1e-7`` (not 1e-6).

    Args:
        learning_rate: float, schedule or callable. Defaults to 0.001.
        rho: decay rate of the running averages. Defaults to 0.95.
        epsilon: defaults to 1e-7 (``None`` or 0 also mean 1e-7, as in TF).
        name: defaults to ``"Adadelta"``.
        **kwargs: the base-class keywords (``clipnorm``, ``decay``, ``weight_decay``, ...).

    Example:
        >>> import kerasopt as ko
        >>> var = ko.Variable([1.0, 2.0])
        >>> opt = ko.optimizers.Adadelta(learning_rate=1.0, epsilon=1e-2)
        >>> _ = opt.minimize(lambda: (var**2).sum(), [var])
        >>> [round(x, 4) for x in var.numpy().tolist()]
        [0.5636, 1.5556]
        >>> opt.get_slot_names()
        ['accum_grad', 'accum_var']
    """

    coefficients: ClassVar[type[Coefficients]] = AdadeltaCoefficients

    supports_complex: ClassVar[bool] = True
    keras_v1_weights: ClassVar[str | None] = "without_iterations"
    learning_rate = Hyper(0.001, check=non_negative)
    rho = Hyper(0.95)
    epsilon = Param(1e-7, convert=epsilon_or_default)

    slots: ClassVar[tuple[str, ...]] = ("accum_grad", "accum_var")

    def __init__(
        self,
        learning_rate: Any = 0.001,
        rho: Any = 0.95,
        epsilon: float | None = 1e-7,
        name: str = "Adadelta",
        **kwargs: Unpack[BaseKeywords],
    ) -> None:
        super().__init__(name=name, learning_rate=learning_rate, **kwargs)
        self.rho = rho
        self.epsilon = epsilon

    def prepare(self, c: AdadeltaCoefficients, device: torch.device, dtype: torch.dtype) -> None:
        rho_t = self._hyper_t("rho", dtype, device)
        c.rho = rho_t
        c.one_minus_rho = 1 - rho_t
        c.epsilon = self._const(self.epsilon, dtype, device)

    def update(
        self, var: Any, grad: Any, accum_grad: Any, accum_var: Any, *, c: AdadeltaCoefficients
    ) -> None:
        c.average(accum_grad, c.rho, grad * grad, c.one_minus_rho)
        update = (accum_var + c.epsilon).sqrt() * (accum_grad + c.epsilon).rsqrt() * grad
        c.sub_product(var, update, c.lr_t)
        c.average(accum_var, c.rho, update * update, c.one_minus_rho)
