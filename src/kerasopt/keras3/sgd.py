"""SGD — Keras 3's ``keras.optimizers.SGD``: the legacy rule, Keras 3's arguments."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from .._hyper import Param
from ..optimizers import sgd as _legacy
from ._base import Keras3Base

if TYPE_CHECKING:
    from typing import Unpack

    from .._features import BaseKeywords


def _float_momentum(name: str, value: Any) -> None:
    if not isinstance(value, float) or value < 0 or value > 1:
        raise ValueError("`momentum` must be a float between [0, 1].")


class SGD(Keras3Base, _legacy.SGD):
    """Gradient descent with optional (Nesterov) momentum, as Keras 3 defines it.

    Update rule (the same as ``kerasopt.optimizers.SGD``)::

        momentum == 0:  var -= lr * g
        else:           m = m * momentum - lr * g
                        var += m                      (nesterov: var += m * momentum - lr * g)

    ``momentum`` must be a Python float in [0, 1] (Keras 3 refuses ``0`` or a callable); the slot
    ``momentum`` exists when it is not 0. Sparse gradients: plain SGD moves the indexed rows;
    with momentum every row of ``m`` decays and every row of the variable moves (Keras 3 on
    TensorFlow densifies the gradient where it meets ``m``).

    Args:
        learning_rate: float, schedule or callable. Defaults to 0.01.
        momentum: float in [0, 1]. Defaults to 0.0.
        nesterov: use Nesterov momentum. Defaults to False.
        name: defaults to ``"sgd"``.
        **kwargs: Keras 3's base keywords (``weight_decay``, ``clipnorm``, ``use_ema``, ...).

    Raises:
        ValueError: ``momentum`` is not a float in [0, 1], or an unknown keyword.

    Example:
        >>> import torch, kerasopt as ko
        >>> var = ko.Variable([1.0, 2.0], name="w")
        >>> opt = ko.keras3.SGD(learning_rate=0.5, momentum=0.5)
        >>> _ = opt.apply_gradients([(torch.tensor([1.0, 1.0]), var)])
        >>> var.numpy().tolist(), [v.name for v in opt.variables]
        ([0.5, 1.5], ['iter', 'learning_rate', 'w/momentum'])
    """

    momentum = Param(0.0, check=_float_momentum)

    def __init__(
        self,
        learning_rate: Any = 0.01,
        momentum: float = 0.0,
        nesterov: bool = False,
        name: str | None = None,
        **kwargs: Unpack[BaseKeywords],
    ) -> None:
        super().__init__(
            learning_rate=learning_rate, momentum=momentum, nesterov=nesterov, name=name, **kwargs
        )
        self._momentum = self.momentum != 0

    def prepare(self, c: _legacy.SGDCoefficients, device: torch.device, dtype: torch.dtype) -> None:
        c.momentum = self._cast(self.momentum, dtype, device)  # ops.cast(self.momentum, dtype)
