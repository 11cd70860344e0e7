"""Lion — Keras 3 / tf_keras ``Lion`` (EvoLved Sign Momentum)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor

from .._hyper import Hyper, Param, non_negative, number_value, tf_cast_value
from ..optimizer import Coefficients
from ._keras3 import Keras3Optimizer

if TYPE_CHECKING:
    from typing import Unpack

    from .._features import BaseKeywords


def _beta_1_in_range(name: str, value: Any) -> None:
    v = number_value(value)
    if v is not None and (v <= 0 or v > 1):
        raise ValueError(
            f"Argument `{name}` must be in the [0, 1] range. Otherwise, the optimizer "
            f"degenerates to SignSGD. Received: {name}={value}."
        )


class LionCoefficients(Coefficients):
    """Lion's step coefficients (``prepare`` sets them, the rule reads them)."""

    beta_1: Tensor
    beta_2: Tensor
    one_minus_beta_1: Tensor
    one_minus_beta_2: Tensor


class Lion(Keras3Optimizer):
    """The Lion optimizer (Chen et al., 2023): a signed, interpolated momentum step.

    Every element moves by exactly ``learning_rate`` (or not at all where the interpolation is
    0), so a suitable learning rate is typically 3–10x smaller than AdamW's and the weight decay
    (the base class's decoupled ``weight_decay``) 3–10x larger.

    Update rule (docs/reference-behaviour.md Part 2 §3.2)::

        c = β1 · m + (1 − β1) · g
        θ ← θ − η · sign(c)          (sign(0) = 0)
        m ← β2 · m + (1 − β2) · g

    ``torch.optim`` has no Lion; the default learning rate is Keras 3's 1e-3 (tf_keras: 1e-4).

    Args:
        learning_rate: float, schedule or callable. Defaults to 0.001.
        beta_1: interpolation between momentum and gradient for the step; 0 < beta_1 <= 1.
            Defaults to 0.9.
        beta_2: decay of the momentum. Defaults to 0.99.
        name: defaults to ``"Lion"``.
        **kwargs: the base-class keywords (``weight_decay``, ``clipnorm``, ...).

    Raises:
        ValueError: ``beta_1`` outside (0, 1].

    Example:
        >>> import kerasopt as ko
        >>> var = ko.Variable([1.0, -2.0, 3.0])
        >>> opt = ko.optimizers.Lion(learning_rate=0.5)
        >>> _ = opt.minimize(lambda: (var**2).sum(), [var])
        >>> var.numpy().tolist()
        [0.5, -1.5, 2.5]
        >>> [round(x, 4) for x in opt.get_slot(var, "m").numpy().tolist()]
        [0.02, -0.04, 0.06]
    """

    coefficients: ClassVar[type[Coefficients]] = LionCoefficients

    learning_rate = Hyper(0.001, check=non_negative)
    beta_1 = Param(0.9, check=_beta_1_in_range)
    beta_2 = Param(0.99)

    slots: ClassVar[tuple[str, ...]] = ("m",)
    slot_aliases: ClassVar[dict[str, str]] = {"momentum": "m"}

    def __init__(
        self,
        learning_rate: Any = 0.001,
        beta_1: float = 0.9,
        beta_2: float = 0.99,
        name: str = "Lion",
        **kwargs: Unpack[BaseKeywords],
    ) -> None:
        super().__init__(name=name, learning_rate=learning_rate, **kwargs)
        self.beta_1 = beta_1
        self.beta_2 = beta_2

    def prepare(self, c: LionCoefficients, device: torch.device, dtype: torch.dtype) -> None:
        # Keras casts beta to the variable's dtype first, then subtracts in that dtype.
        # fidelity: that cast (`tf.cast` / Keras 3's `ops.cast` on TF) turns the Python float
        # into float32 first, which shows in float64 (checked against TF 2.21).
        c.beta_1 = self._const(tf_cast_value(self.beta_1), dtype, device)
        c.beta_2 = self._const(tf_cast_value(self.beta_2), dtype, device)
        c.one_minus_beta_1 = 1.0 - c.beta_1
        c.one_minus_beta_2 = 1.0 - c.beta_2

    def update(self, var: Any, grad: Any, m: Any, *, c: LionCoefficients) -> None:
        c.sub_product(var, (m * c.beta_1 + grad * c.one_minus_beta_1).sign(), c.lr_t)
        c.average(m, c.beta_2, grad, c.one_minus_beta_2)
