"""RMSprop — Keras 3's ``keras.optimizers.RMSprop``: epsilon always inside the square root."""

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


class RMSpropCoefficients(Coefficients):
    """Keras 3 RMSprop's step coefficients."""

    rho: Tensor
    one_minus_rho: Tensor
    momentum: Tensor
    epsilon: Tensor


class RMSprop(Keras3Base):
    """RMSprop, as Keras 3 defines it.

    Update rule (``rho``, ``momentum``, ``epsilon`` are Python floats, exact)::

        v = rho * v + (1 - rho) * g*g
        centered: a = rho * a + (1 - rho) * g;  D = v - a*a + epsilon
        else:     D = v + epsilon
        inc = lr * g / sqrt(D)
        momentum > 0: M = momentum * M + inc;  var -= M
        else:         var -= inc

    Legacy TF (``kerasopt.optimizers.RMSprop``) adds epsilon outside the square root when
    ``momentum == 0``. Slots: ``velocity`` for every variable, then ``momentum`` (momentum > 0),
    then ``average_gradient`` (centered). Keras 3 does not validate ``momentum``. Sparse
    gradients (Keras 3 on TensorFlow): ``v`` (and ``a``) decay over every row; without momentum
    only the indexed rows of the variable move, with it every row; ``g*g`` is the row sum of the
    squares of the entries.

    Args:
        learning_rate: float, schedule or callable. Defaults to 0.001.
        rho: Defaults to 0.9.
        momentum: Defaults to 0.0.
        epsilon: Defaults to 1e-7.
        centered: Defaults to False.
        name: defaults to ``"rm_sprop"`` (Keras's snake case of the class name).
        **kwargs: Keras 3's base keywords.

    Example:
        >>> import kerasopt as ko
        >>> var = ko.Variable(10.0)
        >>> opt = ko.keras3.RMSprop(learning_rate=0.1)
        >>> _ = opt.minimize(lambda: (var**2) / 2.0, [var])
        >>> round(float(var), 6), opt.get_slot_names()
        (9.683772, ['velocity'])
    """

    coefficients: ClassVar[type[Coefficients]] = RMSpropCoefficients

    learning_rate = Hyper(0.001, check=non_negative)
    rho = Param(0.9)
    momentum = Param(0.0)
    epsilon = Param(1e-7)
    centered = Param(False, convert=bool)

    def __init__(
        self,
        learning_rate: Any = 0.001,
        rho: float = 0.9,
        momentum: float = 0.0,
        epsilon: float = 1e-7,
        centered: bool = False,
        name: str | None = None,
        **kwargs: Unpack[BaseKeywords],
    ) -> None:
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.rho = rho
        self.momentum = momentum
        self.epsilon = epsilon
        self.centered = centered

    def slot_groups(self) -> tuple[tuple[str, ...], ...]:
        # three add_optimizer_variables calls: not interleaved
        return tuple((name,) for name in self.slot_names())

    def slot_names(self) -> tuple[str, ...]:
        return (
            ("velocity",)
            + (("momentum",) if self.momentum > 0 else ())
            + (("average_gradient",) if self.centered else ())
        )

    def prepare(self, c: RMSpropCoefficients, device: torch.device, dtype: torch.dtype) -> None:
        c.rho = self._py(self.rho, dtype, device)
        c.one_minus_rho = self._py(1 - self.rho, dtype, device)
        c.momentum = self._py(self.momentum, dtype, device)
        c.epsilon = self._py(self.epsilon, dtype, device)

    def update(
        self,
        var: Any,
        grad: Any,
        velocity: Any,
        momentum: Any = None,
        average_gradient: Any = None,
        *,
        c: RMSpropCoefficients,
    ) -> None:
        c.average(velocity, c.rho, c.square(grad), c.one_minus_rho)
        if average_gradient is not None:
            c.average(average_gradient, c.rho, grad, c.one_minus_rho)
            denominator = (velocity - average_gradient * average_gradient) + c.epsilon
        else:
            denominator = velocity + c.epsilon
        if momentum is not None:
            momentum.mul_(c.momentum).add_((grad * c.lr_t) / denominator.sqrt())
            var.sub_(momentum)
        else:
            c.sub_quotient(var, grad, c.lr_t, denominator.sqrt())
