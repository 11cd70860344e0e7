"""Ftrl — TF's ``tf.keras.optimizers.Ftrl`` (optimizer_v2 numerics)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor

from .._hyper import Hyper, Param, non_negative, number_value, tf_cast_value
from ..optimizer import Coefficients, Optimizer

if TYPE_CHECKING:
    from typing import Unpack

    from .._features import BaseKeywords


def _positive_or_zero(name: str, value: Any) -> None:
    v = number_value(value)
    if v is not None and v < 0.0:
        raise ValueError(f"`{name}` needs to be positive or zero. Received: {name}={value}.")


def _negative_or_zero(name: str, value: Any) -> None:
    v = number_value(value)
    if v is not None and v > 0.0:
        raise ValueError(f"`{name}` needs to be negative or zero. Received: {name}={value}.")


class FtrlCoefficients(Coefficients):
    """Ftrl's step coefficients (``prepare`` sets them, the rule reads them)."""

    two_l2: Tensor
    l1: Tensor
    power: Tensor
    sqrt_power: bool  # learning_rate_power == -0.5: TF's sqrt kernel (decided in Python)
    two_l2_shrinkage: Tensor


class Ftrl(Optimizer):
    """FTRL-Proximal ("Follow The Regularized Leader"), TF's Ftrl with L1, L2, shrinkage and beta.

    Update rule (docs/reference-behaviour.md Part 1 §1.10), with ``p = -learning_rate_power`` and
    ``l2' = l2 + beta / (2 * lr)``::

        g_s = g + 2 * l2_shrinkage * var
        acc_new = acc + g*g
        linear += g_s - (acc_new^p - acc^p) / lr * var
        quad = acc_new^p / lr + 2 * l2'
        var = (sign(linear) * l1 - linear) / quad   where |linear| > l1, else 0
        acc = acc_new

    ``p = 0.5`` (the default) is computed as a square root, as TF's kernel does; ``p = 0`` makes
    the sigma term vanish. The shrinkage term enters only the ``linear`` update. Sparse gradients
    update only their rows of ``var`` and both slots (the same lines). torch.optim has no FTRL.

    Args:
        learning_rate: float, schedule or callable. Defaults to 0.001.
        learning_rate_power: how the learning rate decreases during training; must be <= 0
            (0 means a fixed learning rate). Defaults to -0.5.
        initial_accumulator_value: starting value of the ``accumulator`` slot; must be >= 0.
            Defaults to 0.1.
        l1_regularization_strength: L1 strength, >= 0. Defaults to 0.0.
        l2_regularization_strength: L2 strength, >= 0. Defaults to 0.0.
        name: defaults to ``"Ftrl"``.
        l2_shrinkage_regularization_strength: L2 shrinkage (magnitude penalty on the gradient
            seen by ``linear``), >= 0. Defaults to 0.0.
        beta: the beta of the FTRL paper, added to the L2 strength as ``beta / (2 * lr)``.
            Defaults to 0.0.
        **kwargs: the base-class keywords (``clipnorm``, ``decay``, ``weight_decay``, ...).

    Raises:
        ValueError: if ``initial_accumulator_value`` or a regularization strength is negative, or
            ``learning_rate_power`` is positive.

    Example:
        >>> import kerasopt as ko
        >>> var = ko.Variable([1.0, 2.0])
        >>> opt = ko.optimizers.Ftrl(learning_rate=0.1, l1_regularization_strength=16.0)
        >>> _ = opt.minimize(lambda: (var**2).sum(), [var])
        >>> [round(x, 4) for x in var.numpy().tolist()]
        [0.0, 1.3439]
        >>> opt.get_slot_names()
        ['accumulator', 'linear']
    """

    coefficients: ClassVar[type[Coefficients]] = FtrlCoefficients

    learning_rate = Hyper(0.001, check=non_negative)
    initial_accumulator_value = Param(0.1, check=_positive_or_zero, convert=float)
    learning_rate_power = Hyper(-0.5, check=_negative_or_zero)
    l1_regularization_strength = Hyper(0.0, check=_positive_or_zero)
    l2_regularization_strength = Hyper(0.0, check=_positive_or_zero)
    beta = Hyper(0.0)
    l2_shrinkage_regularization_strength = Param(0.0, check=_positive_or_zero, convert=float)

    slots: ClassVar[tuple[str, ...]] = ("accumulator", "linear")
    interleave_slots: ClassVar[bool] = True

    def __init__(
        self,
        learning_rate: Any = 0.001,
        learning_rate_power: Any = -0.5,
        initial_accumulator_value: float = 0.1,
        l1_regularization_strength: Any = 0.0,
        l2_regularization_strength: Any = 0.0,
        name: str = "Ftrl",
        l2_shrinkage_regularization_strength: float = 0.0,
        beta: Any = 0.0,
        **kwargs: Unpack[BaseKeywords],
    ) -> None:
        super().__init__(name=name, learning_rate=learning_rate, **kwargs)
        self.initial_accumulator_value = initial_accumulator_value
        self.learning_rate_power = learning_rate_power
        self.l1_regularization_strength = l1_regularization_strength
        self.l2_regularization_strength = l2_regularization_strength
        self.l2_shrinkage_regularization_strength = l2_shrinkage_regularization_strength
        self.beta = beta

    def slot_initializer(self, slot_name: str) -> Any:
        return self.initial_accumulator_value if slot_name == "accumulator" else "zeros"

    def _is_sqrt_power(self, dtype: torch.dtype) -> bool:
        # TF's kernel compares lr_power, cast to the variable dtype, with -0.5 and then takes a
        # square root instead of pow. A number is compared on the host; a callable's value of
        # this step is read back (one host read per step, only for callables).
        value = number_value(self._hyper.sources["learning_rate_power"])
        if value is None:
            return bool(self._hyper.tensors["learning_rate_power"].to(dtype) == -0.5)
        return torch.tensor(value, dtype=torch.float32).to(dtype).item() == -0.5

    def prepare(self, c: FtrlCoefficients, device: torch.device, dtype: torch.dtype) -> None:
        l2_t = self._hyper_t("l2_regularization_strength", dtype, device)
        beta_t = self._hyper_t("beta", dtype, device)
        # TF folds beta into the L2 strength in Python; the kernel then uses 2 * l2.
        adjusted_l2 = l2_t + beta_t / (2.0 * c.lr_t)
        c.two_l2 = 2 * adjusted_l2
        c.l1 = self._hyper_t("l1_regularization_strength", dtype, device)
        c.power = -self._hyper_t("learning_rate_power", dtype, device)
        c.sqrt_power = self._is_sqrt_power(dtype)
        # fidelity: TF's `_prepare_local` does `tf.cast(l2_shrinkage, dtype)`, which goes through
        # float32 (docs/reference-behaviour.md Part 1 §1.4 calls it exact; TF 2.21 rounds it, which shows in float64).
        c.two_l2_shrinkage = 2 * self._const(
            tf_cast_value(self.l2_shrinkage_regularization_strength), dtype, device
        )

    def update(
        self, var: Any, grad: Any, accumulator: Any, linear: Any, *, c: FtrlCoefficients
    ) -> None:
        # TF runs the shrinkage kernel (ApplyFtrlV2) only when the strength is positive.
        if self.l2_shrinkage_regularization_strength > 0.0:
            grad_s = grad + c.two_l2_shrinkage * var
        else:
            grad_s = grad
        accum_new = accumulator + c.square(grad)
        if c.sqrt_power:
            accum_new_p, accum_p = accum_new.sqrt(), accumulator.sqrt()
        else:
            accum_new_p, accum_p = accum_new.pow(c.power), accumulator.pow(c.power)
        linear.add_(grad_s - (accum_new_p - accum_p) / c.lr_t * var)
        quadratic = accum_new_p / c.lr_t + c.two_l2
        pre_shrink = (linear.sign() * c.l1 - linear) / quadratic
        var.copy_(pre_shrink.where(linear.abs() > c.l1, 0.0))
        accumulator.copy_(accum_new)
