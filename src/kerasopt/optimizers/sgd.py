"""SGD with optional (Nesterov) momentum — TF's ``tf.keras.optimizers.SGD``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor

from .._hyper import Hyper, Param, non_negative, unit_interval
from ..optimizer import Coefficients, Optimizer

if TYPE_CHECKING:
    from typing import Unpack

    from .._features import BaseKeywords


class SGDCoefficients(Coefficients):
    """SGD's step coefficients (``prepare`` sets them, the rule reads them)."""

    momentum: Tensor


class SGD(Optimizer):
    """Gradient descent with optional momentum (TF's SGD).

    Update rule (docs/reference-behaviour.md Part 1 §1.10)::

        momentum == 0:  var -= lr * g
        otherwise:      accum = accum * momentum - lr * g
                        var += accum                       (nesterov: var += accum * momentum - lr * g)

    Unlike ``torch.optim.SGD`` (``buf = momentum * buf + g; p -= lr * buf``), the learning rate is
    folded into the velocity, so changing the learning rate mid-training changes future steps
    differently; slot ``momentum`` holds ``accum``. Sparse gradients update only their rows.

    Args:
        learning_rate: float, schedule or callable. Defaults to 0.01.
        momentum: float in [0, 1]. Defaults to 0.0.
        nesterov: whether to apply Nesterov momentum.
        name: defaults to ``"SGD"``.
        **kwargs: the base-class keywords (``clipnorm``, ``decay``, ``weight_decay``, ...).

    Example:
        >>> import kerasopt as ko
        >>> var = ko.Variable(1.0)
        >>> opt = ko.optimizers.SGD(learning_rate=0.1, momentum=0.9)
        >>> _ = opt.minimize(lambda: (var**2) / 2.0, [var])
        >>> round(float(var), 6)
        0.9
        >>> _ = opt.minimize(lambda: (var**2) / 2.0, [var])
        >>> round(float(var), 6)
        0.72
    """

    coefficients: ClassVar[type[Coefficients]] = SGDCoefficients

    supports_complex: ClassVar[bool] = True
    learning_rate = Hyper(0.01, check=non_negative)
    momentum = Hyper(0.0, check=unit_interval)
    nesterov = Param(False, convert=bool)

    def __init__(
        self,
        learning_rate: Any = 0.01,
        momentum: Any = 0.0,
        nesterov: bool = False,
        name: str = "SGD",
        **kwargs: Unpack[BaseKeywords],
    ) -> None:
        super().__init__(name=name, learning_rate=learning_rate, **kwargs)
        self.momentum = momentum
        # Structural, decided once as TF's `self._momentum`: a tensor or callable momentum, or
        # one > 0, creates the `momentum` slot (assigning the value later changes no layout).
        self._momentum = bool(
            isinstance(momentum, torch.Tensor) or callable(momentum) or float(momentum) > 0
        )
        self.nesterov = nesterov

    def slot_names(self) -> tuple[str, ...]:
        return ("momentum",) if self._momentum else ()

    def prepare(self, c: SGDCoefficients, device: torch.device, dtype: torch.dtype) -> None:
        c.momentum = self._hyper_t("momentum", dtype, device)

    def sums_duplicates(self) -> bool:
        # TF's plain SGD scatter-adds -g * lr row by row, duplicates included (no summing first).
        return bool(self.slot_names())

    def update_sparse(
        self, var: Any, indices: Any, values: Any, momentum: Any = None, *, c: SGDCoefficients
    ) -> None:
        if momentum is not None:
            super().update_sparse(var, indices, values, c=c, momentum=momentum)
        else:
            var.index_add_(0, indices, -values * c.lr_t)

    def update(self, var: Any, grad: Any, momentum: Any = None, *, c: SGDCoefficients) -> None:
        if momentum is None:  # no slot: plain gradient descent
            c.sub_product(var, grad, c.lr_t)
            return
        accum = momentum
        # accum * momentum - lr * g, in that order; the product is formed in place in accum.
        c.sub_product(accum.mul_(c.momentum), grad, c.lr_t)
        if self.nesterov:
            ahead = accum * c.momentum
            c.sub_product(ahead, grad, c.lr_t)
            var.add_(ahead)
        else:
            var.add_(accum)
