"""Ftrl — Keras 3's ``keras.optimizers.Ftrl``: the legacy rule with Keras 3's coefficients."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from .._hyper import Param, tf_cast_value
from ..optimizers import ftrl as _legacy
from ._base import Keras3Base

if TYPE_CHECKING:
    from typing import Unpack

    from .._features import BaseKeywords


class Ftrl(Keras3Base, _legacy.Ftrl):
    """FTRL-proximal, as Keras 3 defines it (hyperparameters are Python floats, used exactly).

    Update rule (``p = -learning_rate_power``, ``l2' = l2 + beta / (2 lr)``)::

        g_s = g + 2 * l2_shrinkage * var
        acc_new = acc + g*g
        linear += g_s - (acc_new^p - acc^p) / lr * var
        quadratic = acc_new^p / lr + 2 * l2'
        var = (clip(linear, -l1, l1) - linear) / quadratic
        acc = acc_new

    Slots ``accumulator`` (starting at ``initial_accumulator_value``, through float32 as Keras's
    ``Constant`` initializer casts it) and ``linear``. Sparse gradients (Keras 3 on TensorFlow):
    every row is recomputed, so a row never indexed (and never moved) is set to 0 by the last
    line; ``g*g`` is the row sum of the squares of the entries.

    Args:
        learning_rate: float, schedule or callable. Defaults to 0.001.
        learning_rate_power: <= 0. Defaults to -0.5.
        initial_accumulator_value: >= 0. Defaults to 0.1.
        l1_regularization_strength: >= 0. Defaults to 0.0.
        l2_regularization_strength: >= 0. Defaults to 0.0.
        l2_shrinkage_regularization_strength: >= 0. Defaults to 0.0.
        beta: Defaults to 0.0.
        name: defaults to ``"ftrl"``.
        **kwargs: Keras 3's base keywords.

    Raises:
        ValueError: an argument outside its range.

    Example:
        >>> import torch, kerasopt as ko
        >>> var = ko.Variable([1.0, 2.0])
        >>> opt = ko.keras3.Ftrl(learning_rate=0.5)
        >>> _ = opt.apply_gradients([(torch.tensor([1.0, 1.0]), var)])
        >>> [round(x, 4) for x in var.numpy().tolist()], opt.get_slot_names()
        ([0.2218, 0.9202], ['accumulator', 'linear'])
    """

    learning_rate_power = Param(-0.5)
    initial_accumulator_value = Param(0.1)
    l1_regularization_strength = Param(0.0)
    l2_regularization_strength = Param(0.0)
    l2_shrinkage_regularization_strength = Param(0.0)
    beta = Param(0.0)

    def __init__(
        self,
        learning_rate: Any = 0.001,
        learning_rate_power: float = -0.5,
        initial_accumulator_value: float = 0.1,
        l1_regularization_strength: float = 0.0,
        l2_regularization_strength: float = 0.0,
        l2_shrinkage_regularization_strength: float = 0.0,
        beta: float = 0.0,
        name: str | None = None,
        **kwargs: Unpack[BaseKeywords],
    ) -> None:
        super().__init__(
            learning_rate=learning_rate,
            learning_rate_power=learning_rate_power,
            initial_accumulator_value=initial_accumulator_value,
            l1_regularization_strength=l1_regularization_strength,
            l2_regularization_strength=l2_regularization_strength,
            l2_shrinkage_regularization_strength=l2_shrinkage_regularization_strength,
            beta=beta,
            name=name,
            **kwargs,
        )
        for arg, sign, must in (
            ("initial_accumulator_value", 1, "positive or zero"),
            ("learning_rate_power", -1, "negative or zero"),
            ("l1_regularization_strength", 1, "positive or zero"),
            ("l2_regularization_strength", 1, "positive or zero"),
            ("l2_shrinkage_regularization_strength", 1, "positive or zero"),
        ):
            value = getattr(self, arg)
            if value * sign < 0.0:
                raise ValueError(f"`{arg}` needs to be {must}. Received: {arg}={value}.")

    def slot_initializer(self, slot_name: str) -> Any:
        # Keras's Constant initializer: ops.cast(value, dtype), through float32 on TensorFlow.
        return (
            tf_cast_value(self.initial_accumulator_value) if slot_name == "accumulator" else "zeros"
        )

    def prepare(
        self, c: _legacy.FtrlCoefficients, device: torch.device, dtype: torch.dtype
    ) -> None:
        # l2 + beta / (2.0 * lr) with Python-float l2 and beta, then 2 * that (Keras's order).
        l2_reg = self._py(self.l2_regularization_strength, dtype, device) + self._py(
            self.beta, dtype, device
        ) / (2.0 * c.lr_t)
        c.two_l2 = 2 * l2_reg
        c.l1 = self._py(self.l1_regularization_strength, dtype, device)
        c.power = self._py(-self.learning_rate_power, dtype, device)
        c.sqrt_power = False  # ops.power always
        c.two_l2_shrinkage = self._py(2 * self.l2_shrinkage_regularization_strength, dtype, device)
